"""Generation within a static shape: decoding options, EOS ids, sampling, and a measured token loop.

Plain torch + a transformers tokenizer, so it runs against the CPU torch model and mirrors the limits of a Neuron
export: a static `sequence_length` (prompt + new tokens must fit), a static `batch_size`, and right padding only
(optimum-neuron raises on left padding).

Three units, each replaceable on its own: `Sampler` picks the next token of every row from its logits; `token_loop`
runs the model (prefill, then one KV-cached step per token) and notes when every token arrived; `generate_batch`
checks the request against the static shapes and turns the loop's trace into `Generation`s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
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
        default=1, description="Static batch size of the export; the suite sends one prompt at a time."
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


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a reply: the tokenizer's eos plus the generation config's (an int or a list)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if not ids:
        raise ChatError("The tokenizer and generation config define no EOS token; generation could never stop early.")
    return ids


# ------------------------------------------------------------------------------------------------------ sampling


def _validate_sampling(options: GenerationOptions) -> None:
    if not options.temperature > 0:
        raise ChatError(f"temperature must be > 0, got {options.temperature}; use do_sample=False for greedy decoding.")
    if options.top_k is not None and options.top_k < 1:
        raise ChatError(f"top_k must be >= 1 or None, got {options.top_k}.")
    if options.top_p is not None and not 0 < options.top_p <= 1:
        raise ChatError(f"top_p must be in (0, 1] or None, got {options.top_p}.")
    if not options.repetition_penalty > 0:
        raise ChatError(f"repetition_penalty must be > 0 (1.0 = off), got {options.repetition_penalty}.")


class Sampler:
    """Picks every row's next token from its last logits: greedy, or seeded sampling with temperature / top-k /
    top-p; the repetition penalty applies to both."""

    def __init__(self, options: GenerationOptions) -> None:
        import torch

        _validate_sampling(options)
        self.options = options
        self.generator = torch.Generator(device="cpu").manual_seed(options.seed) if options.do_sample else None

    def __call__(self, logits: Any, seen: list[list[int]]) -> list[int]:
        """logits: [rows, vocab]; seen: each row's prompt + generated tokens so far."""
        import torch

        options = self.options
        scores = logits.float()
        if options.repetition_penalty != 1.0:
            # Same rule as transformers' RepetitionPenaltyLogitsProcessor, over prompt + generated tokens.
            for row, tokens in enumerate(seen):
                index = torch.tensor(sorted(set(tokens)), dtype=torch.long, device=scores.device)
                picked = scores[row, index]
                penalty = options.repetition_penalty
                scores[row, index] = torch.where(picked < 0, picked * penalty, picked / penalty)
        if not options.do_sample:
            return scores.argmax(dim=-1).tolist()
        scores = scores / options.temperature
        if options.top_k is not None and options.top_k < scores.shape[-1]:
            kth = torch.topk(scores, options.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if options.top_p is not None and options.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            # drop a token when the tokens before it already cover top_p; the most likely one always stays
            drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) >= options.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, -math.inf)
        probs = scores.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).tolist()


# ---------------------------------------------------------------------------------------------- the token loop


@dataclass(frozen=True)
class TokenTrace:
    """What the token loop produced for each row: new token ids (the stopping EOS included) and when each arrived."""

    started: float  # perf_counter() just before the prefill
    tokens: list[list[int]]
    times: list[list[float]]


def token_loop(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    next_tokens: Callable[[Any, list[list[int]]], list[int]],
) -> TokenTrace:
    """Prefill, then one KV-cached decode step per token until every row has produced an EOS or max_new_tokens.

    Prompts of different lengths are right-padded (Neuron rejects left padding): each row reads its first logits at
    its own last real position, and position ids + attention mask make the pad slots invisible afterwards.
    The caller has checked the prompts against the static shapes.
    """
    import torch

    device = getattr(model, "device", torch.device("cpu"))
    rows = len(prompts)
    lengths = [len(p) for p in prompts]
    longest = max(lengths)
    padded = any(n != longest for n in lengths)
    input_ids = torch.full((rows, longest), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, : len(prompt)] = 1
    # Only the logits at each row's last real token are needed: skip a [rows, longest, vocab] tensor.
    last = torch.tensor(lengths) - 1
    keep = torch.unique(last)
    pick = torch.searchsorted(keep, last)

    seen = [list(p) for p in prompts]
    new_tokens: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows
    token_times: list[list[float]] = [[] for _ in range(rows)]

    started = time.perf_counter()
    with torch.inference_mode():
        if padded:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                logits_to_keep=keep.to(device),
            )
        else:
            # Same call as transformers' generate() without padding, so greedy output matches it token for token.
            out = model(input_ids=input_ids.to(device), use_cache=True, logits_to_keep=1)
            pick = torch.zeros(rows, dtype=torch.long)
        past = out.past_key_values
        logits = out.logits[torch.arange(rows), pick.to(out.logits.device)]
        for step in range(max_new_tokens):
            chosen = next_tokens(logits, seen)
            now = time.perf_counter()
            for row, token in enumerate(chosen):
                if finished[row]:
                    continue
                new_tokens[row].append(token)
                seen[row].append(token)
                token_times[row].append(now)
                finished[row] = token in eos_ids
            if all(finished) or step == max_new_tokens - 1:
                break
            # Finished rows keep decoding a pad token (static batch shape); their outputs are ignored.
            feed = torch.tensor([[pad_id if finished[r] else chosen[r]] for r in range(rows)], dtype=torch.long)
            if padded:
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=torch.long)], dim=1)
                positions = (torch.tensor(lengths) + step).unsqueeze(1)
                out = model(
                    input_ids=feed.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    past_key_values=past,
                    use_cache=True,
                )
            else:
                out = model(input_ids=feed.to(device), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1]
    return TokenTrace(started, new_tokens, token_times)


# -------------------------------------------------------------------------------------------- generate entries


def _check_request(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, sequence_length: int, batch_size: int
) -> None:
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


def _generation(tokenizer: Any, trace: TokenTrace, row: int, prompt_tokens: int, eos_ids: set[int]) -> Generation:
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


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sequence_length: int,
    options: GenerationOptions | None = None,
) -> list[Generation]:
    """Generate for up to `options.batch_size` prompts at once with an explicit KV-cache loop, timing every token.

    Greedy by default, so deterministic. Each prompt is a list of token ids from build_prompt.
    """
    options = options or GenerationOptions()
    _check_request(prompts, max_new_tokens, sequence_length, options.batch_size)
    sampler = Sampler(options)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    trace = token_loop(
        model, prompts, max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id, next_tokens=sampler
    )
    return [_generation(tokenizer, trace, row, len(prompt), eos_ids) for row, prompt in enumerate(prompts)]


def generate(
    model: Any,
    tokenizer: Any,
    input_ids: Sequence[int],
    *,
    max_new_tokens: int,
    sequence_length: int,
    options: GenerationOptions | None = None,
) -> Generation:
    """Generate a reply to one prompt (token ids from build_prompt); greedy by default, so deterministic.

    Stops at any EOS id or after `max_new_tokens`. A single prompt needs no padding whatever `batch_size` the model
    was exported with; use generate_batch for several prompts.
    """
    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)  # accept a 1-D tensor too
    if ids and not isinstance(ids[0], int):
        raise ChatError("generate() takes one prompt (a flat list of token ids); use generate_batch() for several.")
    return generate_batch(
        model, tokenizer, [ids], max_new_tokens=max_new_tokens, sequence_length=sequence_length, options=options
    )[0]
