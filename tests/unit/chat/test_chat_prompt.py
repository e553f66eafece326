"""Prompt building: the token budget, history truncation with the real SmolLM2 tokenizer, template checks."""

from __future__ import annotations

import re

import pytest
from chat_fixtures import smollm2_tokenizer  # noqa: F401  (pytest fixtures)

from neuronforge.chat import (
    PromptError,
    PromptTooLongError,
    StaticShapeError,
    budget_for,
    build_prompt,
    leaked_template_tokens,
    strip_template_tokens,
    template_applied,
)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


HISTORY = [
    user("My name is Ada."),
    assistant("Nice to meet you, Ada."),
    user("I live in London."),
    assistant("London is a great city."),
    user("I like tea."),
    assistant("Tea is lovely."),
    user("What is my name?"),
]


def token_count(tokenizer, messages, system=None) -> int:
    full = ([{"role": "system", "content": system}] if system else []) + list(messages)
    return len(tokenizer.apply_chat_template(full, add_generation_prompt=True))


def roles_in(text: str) -> list[str]:
    return re.findall(r"<\|im_start\|>(\w+)\n", text)


def test_leaked_template_tokens():
    assert leaked_template_tokens("Paris.") == []
    leaked = "Paris.<|im_end|>\n<|im_start|>user\nmore"
    assert leaked_template_tokens(leaked) == ["<|im_start|>", "<|im_end|>"]
    assert leaked_template_tokens("end<|endoftext|>") == ["<|endoftext|>"]
    assert strip_template_tokens(leaked) == "Paris.\nuser\nmore"


def test_budget_for():
    assert budget_for(2048, 48) == 2000
    assert budget_for(49, 48) == 1
    with pytest.raises(StaticShapeError, match="leaves no room for a prompt in sequence_length=48"):
        budget_for(48, 48)
    with pytest.raises(StaticShapeError, match="must both be positive"):
        budget_for(2048, 0)


# ---------------------------------------------------------------------------------------- truncation (real tokenizer)


def test_prompt_fits_entirely(smollm2_tokenizer):  # noqa: F811
    full = smollm2_tokenizer.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    built = build_prompt(smollm2_tokenizer, HISTORY, 2000)
    assert built.text == full
    assert built.input_ids == smollm2_tokenizer.apply_chat_template(HISTORY, add_generation_prompt=True)
    assert built.dropped_turns == 0 and built.prompt_tokens == len(built.input_ids)
    assert template_applied(built.text, smollm2_tokenizer)
    assert not template_applied("What is my name?", smollm2_tokenizer)
    assert not template_applied(built.text.removesuffix("<|im_start|>assistant\n"), smollm2_tokenizer)


def test_budget_exactly_equal_fits_and_one_less_drops_the_oldest_pair(smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    full = token_count(tok, HISTORY)
    assert build_prompt(tok, HISTORY, full).dropped_turns == 0
    one_less = build_prompt(tok, HISTORY, full - 1)
    assert one_less.dropped_turns == 1 and one_less.dropped_messages == 2
    assert one_less.input_ids == tok.apply_chat_template(HISTORY[2:], add_generation_prompt=True)
    assert "Ada" not in one_less.text
    # exactly the size without the oldest pair still keeps the other two pairs
    assert build_prompt(tok, HISTORY, token_count(tok, HISTORY[2:])).dropped_turns == 1
    assert build_prompt(tok, HISTORY, token_count(tok, HISTORY[2:]) - 1).dropped_turns == 2


def test_truncation_never_orphans_an_assistant_turn(smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    newest_only = token_count(tok, HISTORY[-1:])
    for budget in range(newest_only, token_count(tok, HISTORY) + 1):
        built = build_prompt(tok, HISTORY, budget)
        roles = roles_in(built.text)
        assert roles[0] == "system" and roles[1] == "user" and roles[-1] == "assistant"
        assert built.prompt_tokens <= budget
        assert roles.count("user") == 4 - built.dropped_turns


def test_system_message_is_kept_and_replaces_the_default(smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    system = "You are terse."
    budget = token_count(tok, HISTORY[-1:], system=system)
    built = build_prompt(tok, HISTORY, budget, system=system)
    assert built.dropped_turns == 3
    assert built.text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    assert "SmolLM" not in built.text
    # a leading system message in the list is the same thing
    same = build_prompt(tok, [{"role": "system", "content": system}, *HISTORY], budget)
    assert same.input_ids == built.input_ids
    with pytest.raises(PromptError, match="pass only one"):
        build_prompt(tok, [{"role": "system", "content": system}, *HISTORY], budget, system=system)


def test_newest_message_alone_too_long(smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    needed = token_count(tok, HISTORY[-1:])
    assert build_prompt(tok, HISTORY, needed).dropped_turns == 3
    with pytest.raises(PromptTooLongError, match=f"needs {needed} prompt tokens .* only {needed - 1} fit"):
        build_prompt(tok, HISTORY, needed - 1)
    with pytest.raises(PromptTooLongError, match="longer sequence_length"):
        build_prompt(tok, [user("word " * 3000)], 2000)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "No messages"),
        ([{"role": "system", "content": "x"}], "Only a system message"),
        ([user("hi"), assistant("hello")], "last message is from the assistant"),
        ([user("hi"), {"role": "system", "content": "x"}, user("hi")], "only the first message"),
        ([{"role": "bot", "content": "x"}], "role 'bot'"),
        ([{"role": "user"}], "must be a dict with 'role' and 'content'"),
        ([{"role": "user", "content": 3}], "content must be a string"),
    ],
)
def test_malformed_messages(smollm2_tokenizer, messages, match):  # noqa: F811
    with pytest.raises(PromptError, match=match):
        build_prompt(smollm2_tokenizer, messages, 2000)


def test_odd_structures_two_users_in_a_row_and_leading_assistant(smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    two_users = [user("First question?"), user("Second question?")]
    assert build_prompt(tok, two_users, 2000).dropped_turns == 0
    built = build_prompt(tok, two_users, token_count(tok, two_users[1:]))
    assert built.dropped_turns == 1 and "First question?" not in built.text and "Second question?" in built.text

    leading = [assistant("Hello! How can I help?"), user("Hi."), assistant("Hi!"), user("Bye.")]
    assert build_prompt(tok, leading, 2000).dropped_turns == 0
    dropped_greeting = build_prompt(tok, leading, token_count(tok, leading[1:]))
    assert dropped_greeting.dropped_turns == 1 and roles_in(dropped_greeting.text)[1] == "user"
