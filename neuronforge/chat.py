"""Chat evaluation: prompt suites, history truncation, a measured generation loop, checks and regression diffs.

Everything here is plain Python + torch + a transformers tokenizer, so it runs against the CPU torch model and
mirrors the limits of a Neuron export: a static `sequence_length` (prompt + new tokens must fit), a static
`batch_size`, and right padding only (optimum-neuron raises on left padding).

A prompt suite (`evals/chat_prompts.yaml`) is a list of conversations; the evaluator generates every assistant
reply in turn and feeds it back as history, so multi-turn memory is tested the way a chat UI would use the model.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuronforge.artifacts import write_json_atomic
from neuronforge.paths import REPO_ROOT
from neuronforge.shapes import StaticShapeError

DEFAULT_SUITE = REPO_ROOT / "evals" / "chat_prompts.yaml"
DEFAULT_MAX_NEW_TOKENS = 48

# ChatML markers (SmolLM2 and most small instruct models). Seen in a reply they mean the template leaked: the model
# started a new turn itself or generation did not stop at the end-of-turn token.
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")  # usable as a metadata key and a file name


class ChatError(ValueError):
    """Base class for chat-evaluation errors; messages say what is wrong and how to fix it."""


class PromptSuiteError(ChatError):
    """The prompt-suite YAML is invalid; the message names the file, the conversation and the field."""


class PromptError(ChatError):
    """The messages passed to `build_prompt` are malformed (empty, bad role, misplaced system message...)."""


class PromptTooLongError(PromptError):
    """Even the newest message alone does not fit the token budget."""


# --------------------------------------------------------------------------------------------------- prompt suite


@dataclass(frozen=True)
class Expectation:
    """What a generated reply must satisfy.

    `must_contain` is all-of over groups, any-of inside a group: `[["paris"], ["france", "french"]]` needs "paris" and
    one of "france"/"french". `must_not_contain` fails on any listed string. Matching is case-insensitive substring.
    `stop_at_eos` demands the reply end with the end-of-turn token within `max_new_tokens` (not cut off).
    """

    must_contain: tuple[tuple[str, ...], ...] = ()
    must_not_contain: tuple[str, ...] = ()
    stop_at_eos: bool = False


@dataclass(frozen=True)
class Turn:
    """One user message and the assistant's answer: fixed (`assistant` given) or generated (then checked)."""

    user: str
    assistant: str | None = None
    expect: Expectation | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    @property
    def generated(self) -> bool:
        return self.assistant is None


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[Turn, ...]
    system: str | None = None
    description: str = ""

    @property
    def generated_turns(self) -> int:
        return sum(t.generated for t in self.turns)


_SUITE_KEYS = {"version", "defaults", "conversations"}
_DEFAULT_KEYS = {"max_new_tokens", "stop_at_eos", "system"}
_CONVERSATION_KEYS = {"id", "description", "system", "max_new_tokens", "stop_at_eos", "turns"}
_TURN_KEYS = {"user", "assistant", "expect", "max_new_tokens"}
_EXPECT_KEYS = {"must_contain", "must_not_contain", "stop_at_eos", "max_new_tokens"}


def _fail(path: Path, where: str, message: str) -> PromptSuiteError:
    return PromptSuiteError(f"{path}: {where}: {message}")


def _check_keys(path: Path, where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(path, where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _positive_int(path: Path, where: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(path, where, f"field '{name}' must be a positive integer, got {value!r}")
    return value


def _bool(path: Path, where: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, where, f"field '{name}' must be true or false, got {value!r}")
    return value


def _text(path: Path, where: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, f"field '{name}' must be a non-empty string, got {value!r}")
    return value


def _string_list(path: Path, where: str, name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _fail(path, where, f"field '{name}' must be a string or a non-empty list of strings, got {value!r}")
    return [_text(path, where, name, item) for item in value]


def _parse_expect(path: Path, where: str, raw: Any, stop_default: bool) -> tuple[Expectation, int | None]:
    if not isinstance(raw, dict):
        raise _fail(path, where, f"field 'expect' must be a mapping, got {type(raw).__name__}")
    _check_keys(path, f"{where} expect", raw, _EXPECT_KEYS)
    groups: list[tuple[str, ...]] = []
    if "must_contain" in raw:
        items = raw["must_contain"]
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items:
            raise _fail(
                path,
                where,
                f"field 'expect.must_contain' must be a non-empty list (of strings or lists), got {items!r}",
            )
        # a nested list is an any-of group; a plain string is a group of one
        groups = [tuple(_string_list(path, where, "expect.must_contain", item)) for item in items]
    must_not = (
        _string_list(path, where, "expect.must_not_contain", raw["must_not_contain"])
        if "must_not_contain" in raw
        else []
    )
    stop = _bool(path, where, "expect.stop_at_eos", raw["stop_at_eos"]) if "stop_at_eos" in raw else stop_default
    max_new = (
        _positive_int(path, where, "expect.max_new_tokens", raw["max_new_tokens"]) if "max_new_tokens" in raw else None
    )
    return Expectation(tuple(groups), tuple(must_not), stop), max_new


def load_prompt_suite(path: Path | str = DEFAULT_SUITE) -> list[Conversation]:
    """Read and validate a prompt-suite YAML file (schema in evals/chat_prompts.yaml's header)."""
    path = Path(path)
    if not path.is_file():
        raise PromptSuiteError(f"{path}: prompt suite not found; pass the path of a chat_prompts.yaml file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PromptSuiteError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise _fail(path, "top level", "expected a mapping with a 'conversations' list")
    _check_keys(path, "top level", data, _SUITE_KEYS)
    if data.get("version", 1) != 1:
        raise _fail(path, "top level", f"unsupported version {data['version']!r}; this code reads version 1")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise _fail(path, "defaults", "must be a mapping")
    _check_keys(path, "defaults", defaults, _DEFAULT_KEYS)
    default_max = _positive_int(
        path, "defaults", "max_new_tokens", defaults.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    )
    default_stop = _bool(path, "defaults", "stop_at_eos", defaults.get("stop_at_eos", False))
    default_system = (
        _text(path, "defaults", "system", defaults["system"]) if defaults.get("system") is not None else None
    )

    raw_conversations = data.get("conversations")
    if not isinstance(raw_conversations, list) or not raw_conversations:
        raise _fail(path, "top level", "field 'conversations' must be a non-empty list")

    conversations: list[Conversation] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_conversations):
        where = f"conversation #{index}"
        if not isinstance(raw, dict):
            raise _fail(path, where, "must be a mapping with 'id' and 'turns'")
        conv_id = raw.get("id")
        if not isinstance(conv_id, str) or not ID_PATTERN.match(conv_id):
            raise _fail(
                path, where, f"field 'id' must match {ID_PATTERN.pattern} (lowercase, digits, _), got {conv_id!r}"
            )
        where = f"conversation '{conv_id}'"
        if conv_id in seen:
            raise _fail(path, where, "duplicate id; every conversation needs its own id (it keys golden outputs)")
        seen.add(conv_id)
        _check_keys(path, where, raw, _CONVERSATION_KEYS)
        conv_max = _positive_int(path, where, "max_new_tokens", raw.get("max_new_tokens", default_max))
        conv_stop = _bool(path, where, "stop_at_eos", raw.get("stop_at_eos", default_stop))
        system = _text(path, where, "system", raw["system"]) if raw.get("system") is not None else default_system
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise _fail(path, where, "field 'description' must be a string")

        raw_turns = raw.get("turns")
        if not isinstance(raw_turns, list) or not raw_turns:
            raise _fail(path, where, "field 'turns' must be a non-empty list of {user: ...} / {assistant: ...} items")
        turns: list[Turn] = []
        pending: dict[str, Any] | None = None  # the user turn waiting to learn whether its reply is fixed
        for t_index, item in enumerate(raw_turns):
            t_where = f"{where} turns[{t_index}]"
            if not isinstance(item, dict):
                raise _fail(path, t_where, "must be a mapping with 'user' or 'assistant'")
            _check_keys(path, t_where, item, _TURN_KEYS)
            if ("user" in item) == ("assistant" in item):
                raise _fail(path, t_where, "needs exactly one of 'user' or 'assistant' (one message per item)")
            if "assistant" in item:
                if pending is None:
                    raise _fail(
                        path, t_where, "a fixed 'assistant' reply must follow a 'user' turn (two in a row, or first)"
                    )
                if pending["expect"] is not None or set(item) - {"assistant"}:
                    raise _fail(
                        path,
                        t_where,
                        "a fixed assistant reply is not generated, so it cannot carry 'expect'/'max_new_tokens' "
                        "(nor can the user turn before it); move them to a turn whose reply is generated",
                    )
                fixed = _text(path, t_where, "assistant", item["assistant"])
                turns.append(Turn(pending["user"], fixed, max_new_tokens=pending["max_new_tokens"]))
                pending = None
                continue
            if pending is not None:
                turns.append(Turn(**pending))
            max_new = conv_max
            if "max_new_tokens" in item:
                max_new = _positive_int(path, t_where, "max_new_tokens", item["max_new_tokens"])
            expect = None
            if "expect" in item:
                expect, expect_max = _parse_expect(path, t_where, item["expect"], conv_stop)
                max_new = expect_max or max_new
            pending = {
                "user": _text(path, t_where, "user", item["user"]),
                "expect": expect,
                "max_new_tokens": max_new,
            }
        if pending is None:
            raise _fail(path, where, "ends with a fixed assistant reply: nothing to generate; end with a 'user' turn")
        turns.append(Turn(**pending))
        conversations.append(Conversation(conv_id, tuple(turns), system, description))
    return conversations


# ---------------------------------------------------------------------------------------------- prompt building


@dataclass(frozen=True)
class PromptBuild:
    input_ids: list[int]
    text: str
    dropped_turns: int  # oldest user turns (with their assistant replies) left out to fit the budget
    prompt_tokens: int
    dropped_messages: int = 0


def budget_for(sequence_length: int, max_new_tokens: int) -> int:
    """Tokens left for the prompt: a static-shape model holds prompt + new tokens in `sequence_length` positions."""
    if sequence_length < 1 or max_new_tokens < 1:
        raise StaticShapeError(
            f"sequence_length ({sequence_length}) and max_new_tokens ({max_new_tokens}) must both be positive."
        )
    budget = sequence_length - max_new_tokens
    if budget <= 0:
        raise StaticShapeError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in sequence_length={sequence_length}; "
            "lower max_new_tokens or export the model with a longer sequence_length."
        )
    return budget


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # apply_chat_template tokenizes exactly like this: the template already contains every special token.
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text, list(ids)


def _group_turns(messages: Sequence[Mapping[str, str]]) -> list[list[dict[str, str]]]:
    """Split the history into droppable units: each user message with the assistant replies that follow it.

    Dropping whole units never leaves an assistant reply without the question it answers. Two user messages in a row
    become two units (the first simply had no reply); assistant messages before any user message form a unit of
    their own, the first to go.
    """
    groups: list[list[dict[str, str]]] = []
    for message in messages:
        if message["role"] == "user" or not groups:
            groups.append([dict(message)])
        else:
            groups[-1].append(dict(message))
    return groups


def _validate_messages(messages: Sequence[Mapping[str, Any]], system: str | None) -> tuple[list[dict], str | None]:
    if not messages:
        raise PromptError("No messages to build a prompt from; pass at least one {'role': 'user', 'content': ...}.")
    clean: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PromptError(f"Message #{i} must be a dict with 'role' and 'content', got {message!r}.")
        role, content = message["role"], message["content"]
        if role not in ("system", "user", "assistant"):
            raise PromptError(f"Message #{i} has role {role!r}; use 'system', 'user' or 'assistant'.")
        if not isinstance(content, str):
            raise PromptError(f"Message #{i} content must be a string, got {type(content).__name__}.")
        if role == "system":
            if i != 0:
                raise PromptError(f"Message #{i} is a system message; only the first message may be one.")
            if system is not None:
                raise PromptError("Both system= and a leading system message were given; pass only one.")
            system = content
            continue
        clean.append({"role": role, "content": content})
    if not clean:
        raise PromptError("Only a system message was given; add the user's message to answer.")
    if clean[-1]["role"] != "user":
        raise PromptError(
            f"The last message is from the {clean[-1]['role']}; a generation prompt needs the user's message last."
        )
    return clean, system


def build_prompt(
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    budget_tokens: int,
    *,
    system: str | None = None,
) -> PromptBuild:
    """Render `messages` with the tokenizer's chat template, dropping the oldest turns until it fits `budget_tokens`.

    The system message (from `system=` or a leading system message) is always kept; without one, SmolLM2's template
    inserts its default system prompt, which is counted too. Raises PromptTooLongError when the newest user turn
    alone (with the system and generation prompts) exceeds the budget.
    """
    if budget_tokens < 1:
        raise PromptTooLongError(f"budget_tokens={budget_tokens}: no room for a prompt (see budget_for).")
    history, system = _validate_messages(messages, system)
    head = [{"role": "system", "content": system}] if system is not None else []
    groups = _group_turns(history)

    # Oldest-first scan: the first start index that fits keeps the most history. Histories are a few dozen turns
    # at most, so re-rendering is cheaper than being clever about BPE merges across turn boundaries.
    for start in range(len(groups)):
        kept = [m for group in groups[start:] for m in group]
        text, ids = _render(tokenizer, head + kept)
        if len(ids) <= budget_tokens:
            dropped_messages = sum(len(g) for g in groups[:start])
            return PromptBuild(ids, text, start, len(ids), dropped_messages)
    raise PromptTooLongError(
        f"The newest message needs {len(ids)} prompt tokens (including the system prompt and chat markup) but only "
        f"{budget_tokens} fit (sequence_length - max_new_tokens). Shorten the message or the system prompt, lower "
        "max_new_tokens, or export the model with a longer sequence_length."
    )


def template_applied(prompt_text: str, tokenizer: Any) -> bool:
    """True when `prompt_text` was rendered by the tokenizer's chat template and ends with its generation prompt.

    A raw prompt without the template makes an instruct model ramble; this catches a backend that skipped it.
    """
    if not getattr(tokenizer, "chat_template", None):
        return False
    probe = [{"role": "user", "content": "\x00probe\x00"}]
    with_prompt = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    generation_prompt = with_prompt[len(without) :]
    markers = [t for t in tokenizer.all_special_tokens if t in with_prompt]
    return bool(markers) and all(t in prompt_text for t in markers) and prompt_text.endswith(generation_prompt)


def leaked_template_tokens(output_text: str) -> list[str]:
    """Chat-template tokens found in a reply decoded with skip_special_tokens=False (the stopping EOS excluded)."""
    return [token for token in TEMPLATE_TOKENS if token in output_text]


def strip_template_tokens(output_text: str) -> str:
    for token in TEMPLATE_TOKENS:
        output_text = output_text.replace(token, "")
    return output_text.strip()


# ---------------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings shared by every turn of a suite (max_new_tokens comes from each turn)."""

    batch_size: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int = 0


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


def _validate_sampling(temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float) -> None:
    if not temperature > 0:
        raise ChatError(f"temperature must be > 0, got {temperature}; use do_sample=False for greedy decoding.")
    if top_k is not None and top_k < 1:
        raise ChatError(f"top_k must be >= 1 or None, got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ChatError(f"top_p must be in (0, 1] or None, got {top_p}.")
    if not repetition_penalty > 0:
        raise ChatError(f"repetition_penalty must be > 0 (1.0 = off), got {repetition_penalty}.")


def _next_tokens(
    logits: Any,
    seen: list[list[int]],
    *,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    generator: Any,
) -> list[int]:
    import torch

    scores = logits.float()
    if repetition_penalty != 1.0:
        # Same rule as transformers' RepetitionPenaltyLogitsProcessor, over prompt + generated tokens.
        for row, tokens in enumerate(seen):
            index = torch.tensor(sorted(set(tokens)), dtype=torch.long, device=scores.device)
            picked = scores[row, index]
            scores[row, index] = torch.where(picked < 0, picked * repetition_penalty, picked / repetition_penalty)
    if not do_sample:
        return scores.argmax(dim=-1).tolist()
    scores = scores / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already cover top_p; the most likely one always stays
        drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, -math.inf)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).tolist()


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sequence_length: int,
    batch_size: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    seed: int = 0,
) -> list[Generation]:
    """Generate for up to `batch_size` prompts at once with an explicit KV-cache loop, timing every token.

    Prompts of different lengths are right-padded (Neuron rejects left padding): each row reads its first logits at
    its own last real position, and position ids + attention mask make the pad slots invisible afterwards.
    """
    import torch

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
    _validate_sampling(temperature, top_k, top_p, repetition_penalty)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    device = getattr(model, "device", torch.device("cpu"))
    generator = torch.Generator(device="cpu").manual_seed(seed) if do_sample else None

    rows = len(prompts)
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
            chosen = _next_tokens(
                logits,
                seen,
                do_sample=do_sample,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                repetition_penalty=repetition_penalty,
                generator=generator,
            )
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

    results = []
    for row in range(rows):
        tokens, times = new_tokens[row], token_times[row]
        stopped = bool(tokens) and tokens[-1] in eos_ids
        body = tokens[:-1] if stopped else tokens
        raw = tokenizer.decode(body, skip_special_tokens=False)
        text = tokenizer.decode(body, skip_special_tokens=True).strip()
        total = times[-1] - started
        ttft = times[0] - started
        itl = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        results.append(
            Generation(
                text=text,
                token_ids=tokens,
                prompt_tokens=lengths[row],
                output_tokens=len(tokens),
                stopped_at_eos=stopped,
                ttft_s=ttft,
                inter_token_latency_s=itl,
                tokens_per_s=len(tokens) / total if total > 0 else 0.0,
                total_s=total,
                raw_text=raw,
            )
        )
    return results


def generate(
    model: Any,
    tokenizer: Any,
    input_ids: Sequence[int],
    *,
    max_new_tokens: int,
    sequence_length: int,
    batch_size: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    seed: int = 0,
) -> Generation:
    """Generate a reply to one prompt (token ids from build_prompt); greedy by default, so deterministic.

    Stops at any EOS id or after `max_new_tokens`. A single prompt needs no padding whatever `batch_size` the model
    was exported with; use generate_batch for several prompts.
    """
    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)  # accept a 1-D tensor too
    if ids and not isinstance(ids[0], int):
        raise ChatError("generate() takes one prompt (a flat list of token ids); use generate_batch() for several.")
    return generate_batch(
        model,
        tokenizer,
        [ids],
        max_new_tokens=max_new_tokens,
        sequence_length=sequence_length,
        batch_size=batch_size,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )[0]


# -------------------------------------------------------------------------------------------------------- checks


def check_expectations(text: str, expectation: Expectation, *, stopped_at_eos: bool | None = None) -> list[str]:
    """Failures of `text` against `expectation` (empty when it passes). Pass `stopped_at_eos` to check stop_at_eos."""
    failures = []
    lowered = text.lower()
    for group in expectation.must_contain:
        if not any(option.lower() in lowered for option in group):
            wanted = f"'{group[0]}'" if len(group) == 1 else "one of " + ", ".join(f"'{o}'" for o in group)
            failures.append(f"missing {wanted}")
    for banned in expectation.must_not_contain:
        if banned.lower() in lowered:
            failures.append(f"contains forbidden '{banned}'")
    if expectation.stop_at_eos and stopped_at_eos is False:
        failures.append("did not stop at EOS within max_new_tokens (cut off)")
    return failures


@dataclass
class TurnResult:
    index: int
    user: str
    generation: Generation | None  # None for fixed assistant turns and turns that could not run
    prompt_tokens: int = 0
    dropped_turns: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def reply(self) -> str | None:
        return self.generation.text if self.generation else None

    def to_dict(self) -> dict[str, Any]:
        g = self.generation
        return {
            "index": self.index,
            "user": self.user,
            "reply": self.reply,
            "prompt_tokens": self.prompt_tokens,
            "dropped_turns": self.dropped_turns,
            "output_tokens": g.output_tokens if g else 0,
            "stopped_at_eos": g.stopped_at_eos if g else None,
            "ttft_ms": round(g.ttft_s * 1000, 2) if g else None,
            "itl_ms": round(g.inter_token_latency_s * 1000, 2) if g else None,
            "tokens_per_s": round(g.tokens_per_s, 2) if g else None,
            "failures": list(self.failures),
        }


@dataclass
class ConversationResult:
    id: str
    turns: list[TurnResult]

    @property
    def generations(self) -> list[Generation]:
        return [t.generation for t in self.turns if t.generation is not None]

    @property
    def failures(self) -> list[str]:
        return [f"turn {t.index}: {f}" for t in self.turns for f in t.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def prompt_tokens(self) -> int:
        """Summed over generated turns: each turn re-reads the whole kept history (no cache across turns)."""
        return sum(g.prompt_tokens for g in self.generations)

    @property
    def output_tokens(self) -> int:
        return sum(g.output_tokens for g in self.generations)

    @property
    def total_s(self) -> float:
        return sum(g.total_s for g in self.generations)

    def latency(self) -> dict[str, float]:
        return _latency(self.generations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "passed": self.passed,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            **self.latency(),
            "turns": [t.to_dict() for t in self.turns],
        }


def _latency(generations: Sequence[Generation]) -> dict[str, float]:
    """Suite-level rates: tokens/s over all generation time, TTFT mean per reply, ITL mean per decoded token gap."""
    if not generations:
        return {"tokens_per_s": 0.0, "ttft_ms": 0.0, "itl_ms": 0.0}
    total_s = sum(g.total_s for g in generations)
    tokens = sum(g.output_tokens for g in generations)
    gaps = sum(max(g.output_tokens - 1, 0) for g in generations)
    decode_s = sum(g.inter_token_latency_s * max(g.output_tokens - 1, 0) for g in generations)
    return {
        "tokens_per_s": round(tokens / total_s, 3) if total_s > 0 else 0.0,
        "ttft_ms": round(1000 * sum(g.ttft_s for g in generations) / len(generations), 3),
        "itl_ms": round(1000 * decode_s / gaps, 3) if gaps else 0.0,
    }


def run_conversation(
    model: Any,
    tokenizer: Any,
    conversation: Conversation,
    *,
    sequence_length: int,
    gen_options: GenerationOptions | None = None,
) -> ConversationResult:
    """Play `conversation`: generate each non-fixed assistant reply, feed it back as history, check it.

    Every generated reply is also checked for a rendered chat template and for leaked template tokens. A turn whose
    prompt cannot fit the budget is recorded as a failure and ends the conversation (later turns depend on it).
    """
    options = gen_options or GenerationOptions()
    history: list[dict[str, str]] = []
    results: list[TurnResult] = []
    for index, turn in enumerate(conversation.turns):
        history.append({"role": "user", "content": turn.user})
        if not turn.generated:
            history.append({"role": "assistant", "content": turn.assistant or ""})
            results.append(TurnResult(index, turn.user, None))
            continue
        try:
            budget = budget_for(sequence_length, turn.max_new_tokens)
            prompt = build_prompt(tokenizer, history, budget, system=conversation.system)
        except (ChatError, StaticShapeError) as exc:
            results.append(TurnResult(index, turn.user, None, failures=[str(exc)]))
            break
        generation = generate(
            model,
            tokenizer,
            prompt.input_ids,
            max_new_tokens=turn.max_new_tokens,
            sequence_length=sequence_length,
            **asdict(options),
        )
        failures = []
        if not template_applied(prompt.text, tokenizer):
            failures.append("prompt was not rendered with the chat template")
        leaked = leaked_template_tokens(generation.raw_text)
        if leaked:
            failures.append(f"template tokens leaked into the reply: {leaked}")
        if turn.expect is not None:
            failures += check_expectations(generation.text, turn.expect, stopped_at_eos=generation.stopped_at_eos)
        results.append(TurnResult(index, turn.user, generation, prompt.prompt_tokens, prompt.dropped_turns, failures))
        history.append({"role": "assistant", "content": generation.text})
    return ConversationResult(conversation.id, results)


@dataclass
class SuiteResult:
    conversations: list[ConversationResult]
    sequence_length: int
    options: GenerationOptions = field(default_factory=GenerationOptions)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.conversations)

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.conversations)

    def latency(self) -> dict[str, float]:
        return _latency([g for c in self.conversations for g in c.generations])

    def summary_markdown(self) -> str:
        lines = [
            "| conversation | turns | prompt tokens | output tokens | TTFT ms | ITL ms | tok/s | passed | failures |",
            "|---|---:|---:|---:|---:|---:|---:|:---:|---|",
        ]
        for c in self.conversations:
            lat = c.latency()
            failures = "; ".join(c.failures).replace("|", "\\|").replace("\n", " ") or "—"
            lines.append(
                f"| {c.id} | {len(c.turns)} | {c.prompt_tokens} | {c.output_tokens} | {lat['ttft_ms']:.0f} | "
                f"{lat['itl_ms']:.0f} | {lat['tokens_per_s']:.1f} | {'✅' if c.passed else '❌'} | {failures} |"
            )
        lat = self.latency()
        lines.append(
            f"\n**{self.n_passed}/{len(self.conversations)} passed** · {lat['tokens_per_s']:.1f} tok/s · "
            f"TTFT {lat['ttft_ms']:.0f} ms · ITL {lat['itl_ms']:.0f} ms · sequence_length {self.sequence_length}"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (metadata, the stored last run for latency_regressions)."""
        return {
            "passed": self.passed,
            "n_conversations": len(self.conversations),
            "n_passed": self.n_passed,
            "sequence_length": self.sequence_length,
            "options": asdict(self.options),
            "latency": self.latency(),
            "conversations": [c.to_dict() for c in self.conversations],
        }


def run_suite(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    sequence_length: int,
    gen_options: GenerationOptions | None = None,
) -> SuiteResult:
    options = gen_options or GenerationOptions()
    results = [
        run_conversation(model, tokenizer, c, sequence_length=sequence_length, gen_options=options)
        for c in conversations
    ]
    return SuiteResult(results, sequence_length, options)


# ------------------------------------------------------------------------------------------- regression tracking

GOLDEN_VERSION = 1


def golden_from(result: SuiteResult) -> dict[str, Any]:
    """The generated reply of every turn, keyed by conversation id and turn index, plus the decoding options.

    Only meaningful for deterministic decoding (greedy, or sampling with a fixed seed) on the same dtype/backend.
    """
    return {
        "version": GOLDEN_VERSION,
        "options": asdict(result.options),
        "sequence_length": result.sequence_length,
        "conversations": {
            c.id: {str(t.index): t.reply for t in c.turns if t.generation is not None} for c in result.conversations
        },
    }


def _first_difference(expected: str, actual: str) -> str:
    n = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), min(len(expected), len(actual))
    )
    return (
        f"differs at char {n}: expected {expected[max(0, n - 20) : n + 40]!r}, got {actual[max(0, n - 20) : n + 40]!r}"
    )


def compare_to_golden(result: SuiteResult, golden: Mapping[str, Any]) -> list[str]:
    """Differences between this run's replies and a stored golden file (empty when identical)."""
    if golden.get("version") != GOLDEN_VERSION or not isinstance(golden.get("conversations"), Mapping):
        return [f"golden file has version {golden.get('version')!r} (expected {GOLDEN_VERSION}); regenerate it"]
    differences = []
    if golden.get("options") not in (None, asdict(result.options)):
        differences.append(
            f"decoding options differ from the golden run: {golden['options']} vs {asdict(result.options)}"
        )
    current = golden_from(result)["conversations"]
    expected_all: Mapping[str, Mapping[str, str]] = golden["conversations"]
    for conv_id, expected_turns in expected_all.items():
        if conv_id not in current:
            differences.append(f"{conv_id}: in the golden file but not in this run")
            continue
        for turn, expected in expected_turns.items():
            actual = current[conv_id].get(turn)
            if actual is None:
                differences.append(f"{conv_id} turn {turn}: no reply in this run")
            elif actual != expected:
                differences.append(f"{conv_id} turn {turn}: {_first_difference(expected, actual)}")
    for conv_id in current:
        if conv_id not in expected_all:
            differences.append(f"{conv_id}: not in the golden file (new conversation: regenerate the golden file)")
    return differences


def save_golden(path: Path, result: SuiteResult) -> dict[str, Any]:
    golden = golden_from(result)
    write_json_atomic(Path(path), golden)
    return golden


def load_golden(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# Higher is better for tokens/s, lower is better for the latencies.
_LATENCY_METRICS = {"tokens_per_s": "higher", "ttft_ms": "lower", "itl_ms": "lower"}


def latency_regressions(current: Mapping[str, Any], previous: Mapping[str, Any], tolerance: float = 0.5) -> list[str]:
    """Latency metrics that got worse than `previous` by more than `tolerance` (0.5 = 50%).

    Accepts `SuiteResult.latency()` dicts or whole `SuiteResult.to_json()` dicts. Metrics missing or zero in either
    run are skipped: a first run has nothing to regress from.
    """
    if not tolerance > 0:
        raise ChatError(f"tolerance must be > 0 (0.5 = 50%), got {tolerance}.")
    current = current.get("latency", current)
    previous = previous.get("latency", previous)
    problems = []
    for name, better in _LATENCY_METRICS.items():
        now, before = current.get(name), previous.get(name)
        if not now or not before:
            continue
        change = (now - before) / before
        if better == "higher" and change < -tolerance:
            problems.append(f"{name} dropped {-change:.0%}: {before:.2f} → {now:.2f} (tolerance {tolerance:.0%})")
        elif better == "lower" and change > tolerance:
            problems.append(f"{name} rose {change:.0%}: {before:.2f} → {now:.2f} (tolerance {tolerance:.0%})")
    return problems
