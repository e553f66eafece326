"""Generation within a static shape: decoding options, the `Generator` interface every backend implements, EOS ids,
and turning a timed token trace into `Generation`s.

The backend that loads a causal LM owns its token loop (`Backend.load_generator`): the torch backend runs a
transformers model with a host-side KV cache and sampler (neuronforge/backends/torch_generation.py), the Neuron
backend drives optimum-neuron's decoder, which keeps its KV cache and samples on the device
(neuronforge/backends/neuron_generation.py). What they share lives here: the limits of a static-shape export — a
static `sequence_length` (prompt + new tokens must fit), a static `batch_size`, right padding only (optimum-neuron
raises on left padding) — checked before any model call, one untimed warm-up, and TTFT / inter-token latency per call.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from neuronforge.chat.errors import ChatError
from neuronforge.shapes import StaticShapeError


class GenerationOptions(BaseModel):
    """Decoding settings shared by every turn of a suite (max_new_tokens comes from each turn).

    Also the run config of the chat_smoke_eval asset (its Dagster config extends this model), so the descriptions
    below are what the Launchpad shows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(
        default=1,
        description="Prompts per generate call; the suite sends one at a time. The artifact's compiled batch size is "
        "the limit.",
    )
    do_sample: bool = Field(
        default=False, description="Sample instead of greedy decoding (greedy keeps golden replies comparable)."
    )
    temperature: float = Field(default=1.0, description="Softmax temperature when sampling (> 0).")
    top_k: int | None = Field(default=None, description="Sample among the k most likely tokens only (None: all).")
    top_p: float | None = Field(
        default=None, description="Sample among the most likely tokens covering this probability (None: all)."
    )
    repetition_penalty: float = Field(
        default=1.0, description="Penalty on tokens already in the prompt or reply, as transformers' (1.0: off)."
    )
    seed: int = Field(default=0, description="Seed of the sampling generator: a seeded sampled run repeats itself.")

    @classmethod
    def of(cls, settings: Any) -> GenerationOptions:
        """The generation options within a larger settings object (a config class that extends this model)."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


@dataclass(frozen=True)
class Generation:
    text: str  # special tokens stripped, whitespace trimmed
    token_ids: list[int]  # new tokens only, including the stopping EOS if one was produced
    prompt_tokens: int
    output_tokens: int
    stopped_at_eos: bool
    ttft_s: float  # prefill + first token
    inter_token_latency_s: float  # mean gap between later tokens (0 when only one token)
    tokens_per_s: float  # output_tokens / total_s, prefill included: what a user waiting for the reply sees
    total_s: float
    raw_text: str = ""  # decoded with special tokens, without the stopping EOS: where template leaks show

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eos_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Every id that ends a reply: the tokenizer's eos plus the artifact's generation config's (an int or a list).

    The generation config is the artifact's generation_config.json, not the one a loader derives from config.json
    (optimum-neuron's NxDGenerationMixin builds its own from config.json, generation_utils.py:70, and misses the chat
    model's end-of-turn token).
    """
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if not ids:
        raise ChatError("The tokenizer and generation config define no EOS token; generation could never stop early.")
    return ids


def validate_options(options: GenerationOptions) -> None:
    """Refuse decoding settings no backend could honour."""
    if not options.temperature > 0:
        raise ChatError(f"temperature must be > 0, got {options.temperature}; use do_sample=False for greedy decoding.")
    if options.top_k is not None and options.top_k < 1:
        raise ChatError(f"top_k must be >= 1 or None, got {options.top_k}.")
    if options.top_p is not None and not 0 < options.top_p <= 1:
        raise ChatError(f"top_p must be in (0, 1] or None, got {options.top_p}.")
    if not options.repetition_penalty > 0:
        raise ChatError(f"repetition_penalty must be > 0 (1.0 = off), got {options.repetition_penalty}.")


def check_request(prompts: Sequence[Sequence[int]], max_new_tokens: int, sequence_length: int, batch_size: int) -> None:
    """Refuse what the static shapes cannot hold before any model call (Neuron would reject it too)."""
    if not prompts:
        raise ChatError("No prompts to generate for.")
    if batch_size < 1 or len(prompts) > batch_size:
        raise StaticShapeError(
            f"{len(prompts)} prompts do not fit batch_size={batch_size} (the exported static batch size); "
            "split the requests or export with a larger batch_size."
        )
    if max_new_tokens < 1:
        raise ChatError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1:
        raise ChatError("An empty prompt cannot be generated from; build it with build_prompt().")
    longest = max(lengths)
    if longest + max_new_tokens > sequence_length:
        raise StaticShapeError(
            f"prompt_tokens ({longest}) + max_new_tokens ({max_new_tokens}) = {longest + max_new_tokens} exceeds "
            f"sequence_length={sequence_length}, the static length the model was exported with (Neuron rejects it "
            f"too). Truncate the history with build_prompt(budget_for({sequence_length}, {max_new_tokens})), lower "
            "max_new_tokens, or export with a longer sequence_length."
        )


@dataclass(frozen=True)
class TokenTrace:
    """What a token loop produced for each row: new token ids (the stopping EOS included) and when each arrived."""

    started: float  # perf_counter() just before the prefill
    tokens: list[list[int]]
    times: list[list[float]]


class TokenRecorder:
    """Collects a token loop's output row by row: finished rows (EOS seen) take no more tokens."""

    def __init__(self, rows: int, eos_ids: set[int], started: float) -> None:
        self.eos_ids = eos_ids
        self.started = started
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.times: list[list[float]] = [[] for _ in range(rows)]
        self.finished = [False] * rows

    def add(self, chosen: Sequence[int], now: float) -> None:
        for row, token in enumerate(chosen):
            if self.finished[row]:
                continue
            self.tokens[row].append(int(token))
            self.times[row].append(now)
            self.finished[row] = int(token) in self.eos_ids

    @property
    def done(self) -> bool:
        return all(self.finished)

    def trace(self) -> TokenTrace:
        return TokenTrace(self.started, self.tokens, self.times)


def generation_from_trace(
    tokenizer: Any, trace: TokenTrace, row: int, prompt_tokens: int, eos_ids: set[int]
) -> Generation:
    tokens, times = trace.tokens[row], trace.times[row]
    stopped = bool(tokens) and tokens[-1] in eos_ids
    body = tokens[:-1] if stopped else tokens
    total = times[-1] - trace.started
    return Generation(
        text=tokenizer.decode(body, skip_special_tokens=True).strip(),
        token_ids=tokens,
        prompt_tokens=prompt_tokens,
        output_tokens=len(tokens),
        stopped_at_eos=stopped,
        ttft_s=times[0] - trace.started,
        inter_token_latency_s=(times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0,
        tokens_per_s=len(tokens) / total if total > 0 else 0.0,
        total_s=total,
        raw_text=tokenizer.decode(body, skip_special_tokens=False),
    )


class Generator(ABC):
    """A causal LM loaded by its backend, generating within the static shapes it was exported with.

    `generate` checks the request and the options, runs the backend's token loop and reports every reply with its
    timings; `warm_up` makes one untimed call first (a Neuron model loads its graphs onto the cores on first use).
    """

    def __init__(self, tokenizer: Any, *, batch_size: int, sequence_length: int, eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.sequence_length = sequence_length
        self.eos_ids = set(eos_ids)
        self.warm_up_s: float | None = None

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else min(self.eos_ids)

    def check_options(self, options: GenerationOptions) -> None:
        """Refuse options this backend cannot honour (a clear error, never a silently different decoding)."""
        validate_options(options)

    @abstractmethod
    def token_loop(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, options: GenerationOptions, eos_ids: set[int]
    ) -> TokenTrace:
        """Prefill, then one step per token until every row produced an id in `eos_ids` or max_new_tokens.

        The prompts are already checked against the static shapes; rows of different lengths are right-padded.
        """

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, options: GenerationOptions | None = None
    ) -> list[Generation]:
        """One `Generation` per prompt (token ids from build_prompt); greedy by default, so deterministic."""
        options = options or GenerationOptions()
        if any(not isinstance(p, Sequence) and not hasattr(p, "tolist") for p in prompts):
            raise ChatError("generate() takes a list of prompts, each a flat list of token ids.")
        prompts = [p.tolist() if hasattr(p, "tolist") else list(p) for p in prompts]  # accept 1-D tensors too
        check_request(prompts, max_new_tokens, self.sequence_length, self.batch_size)
        self.check_options(options)
        trace = self.token_loop(prompts, max_new_tokens=max_new_tokens, options=options, eos_ids=self.eos_ids)
        return [
            generation_from_trace(self.tokenizer, trace, row, len(prompt), self.eos_ids)
            for row, prompt in enumerate(prompts)
        ]

    def warm_up(self) -> float:
        """One untimed prefill + decode step (EOS ignored, so both graphs run); returns and keeps its seconds."""
        ids = self.tokenizer.encode("Hello, how are you?", add_special_tokens=False)[:4]
        ids = (ids + [self.pad_id] * 2)[: max(2, len(ids))]
        started = time.perf_counter()
        self.token_loop([ids], max_new_tokens=2, options=GenerationOptions(), eos_ids=set())
        self.warm_up_s = time.perf_counter() - started
        return self.warm_up_s
