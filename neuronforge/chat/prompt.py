"""Prompt building within a static shape: the chat template, history truncation to a token budget, template checks.

A Neuron export holds prompt + new tokens in a static `sequence_length`, so the prompt gets what `max_new_tokens`
leaves (`budget_for`) and the oldest turns go first when the history does not fit (`build_prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neuronforge.chat.errors import PromptError, PromptTooLongError
from neuronforge.shapes import StaticShapeError

# ChatML markers (SmolLM2 and most small instruct models). Seen in a reply they mean the template leaked: the model
# started a new turn itself or generation did not stop at the end-of-turn token.
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


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
