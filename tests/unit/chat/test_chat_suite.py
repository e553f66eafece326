"""The prompt suite: the built-in suite, validation errors that name the file, the conversation and the field, the
defaults cascade, and expectation matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuronforge.chat import DEFAULT_SUITE, Expectation, PromptSuiteError, check_expectations, load_prompt_suite


def test_builtin_suite_loads_with_the_memory_conversation():
    suite = {c.id: c for c in load_prompt_suite(DEFAULT_SUITE)}
    memory = suite["memory_colour_and_fruit"]
    assert [t.user for t in memory.turns] == [
        "My favourite colour is blue.",
        "My favourite fruit is strawberry.",
        "What are my favourite colour and fruit?",
    ]
    last = memory.turns[-1]
    assert last.generated and last.expect.must_contain == (("blue",), ("strawberr",))
    assert suite["simple_arithmetic"].turns[0].expect.must_contain == (("4", "four"),)
    assert suite["capital_of_france"].turns[0].expect.stop_at_eos  # from defaults
    assert suite["capital_of_france"].turns[0].max_new_tokens == 24


def write_suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


GOOD_TURN = "    turns:\n      - user: hi\n"


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("conversations: []\n", ["'conversations' must be a non-empty list"]),
        ("- just a list\n", ["top level", "mapping"]),
        ("conversations: [\n", ["not valid YAML"]),
        ("conversations:\n  - turns: [{user: hi}]\n", ["conversation #0", "'id'"]),
        ("conversations:\n  - id: Bad-Id\n" + GOOD_TURN, ["'id' must match"]),
        ("conversations:\n  - id: a\n" + GOOD_TURN + "  - id: a\n" + GOOD_TURN, ["conversation 'a'", "duplicate id"]),
        (
            "conversations:\n  - id: a\n    colour: red\n" + GOOD_TURN,
            ["conversation 'a'", "unknown field(s) ['colour']"],
        ),
        ("conversations:\n  - id: a\n    turns: []\n", ["conversation 'a'", "'turns'"]),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: {must_contain: 3}\n",
            ["conversation 'a' turns[0]", "expect.must_contain"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: {must_contian: [x]}\n",
            ["conversation 'a' turns[0] expect", "must_contian"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        max_new_tokens: 0\n",
            ["conversation 'a' turns[0]", "'max_new_tokens' must be a positive integer"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: {stop_at_eos: maybe}\n",
            ["conversation 'a' turns[0]", "expect.stop_at_eos"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - assistant: hello\n",
            ["turns[0]", "must follow a 'user' turn"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n      - assistant: hello\n",
            ["conversation 'a'", "ends with a fixed assistant reply"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: {must_contain: [x]}\n"
            "      - assistant: hello\n      - user: bye\n",
            ["turns[1]", "cannot carry 'expect'"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - {user: hi, assistant: hello}\n",
            ["turns[0]", "exactly one of 'user' or 'assistant'"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: '  '\n",
            ["turns[0]", "'user' must be a non-empty string"],
        ),
        ("version: 2\nconversations:\n  - id: a\n" + GOOD_TURN, ["unsupported version 2"]),
    ],
)
def test_suite_validation_errors_name_file_conversation_and_field(tmp_path, body, fragments):
    path = write_suite(tmp_path, body)
    with pytest.raises(PromptSuiteError) as info:
        load_prompt_suite(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_suite_missing_file(tmp_path):
    with pytest.raises(PromptSuiteError, match="not found"):
        load_prompt_suite(tmp_path / "missing.yaml")


def test_suite_defaults_cascade_and_fixed_turns(tmp_path):
    path = write_suite(
        tmp_path,
        "defaults: {max_new_tokens: 10, stop_at_eos: true, system: Be brief.}\n"
        "conversations:\n"
        "  - id: a\n    max_new_tokens: 20\n    stop_at_eos: false\n    turns:\n"
        "      - user: one\n      - assistant: fixed\n"
        "      - user: two\n      - user: three\n        expect: {must_contain: [x], max_new_tokens: 5}\n"
        "  - id: b\n    system: Be kind.\n    turns:\n      - user: hi\n        expect: {must_not_contain: bad}\n",
    )
    a, b = load_prompt_suite(path)
    assert [(t.user, t.assistant, t.max_new_tokens) for t in a.turns] == [
        ("one", "fixed", 20),
        ("two", None, 20),
        ("three", None, 5),
    ]
    assert a.turns[2].expect == Expectation((("x",),), (), stop_at_eos=False)
    assert a.system == "Be brief." and a.generated_turns == 2
    assert b.system == "Be kind." and b.turns[0].max_new_tokens == 10
    assert b.turns[0].expect == Expectation((), ("bad",), stop_at_eos=True)


# ------------------------------------------------------------------------------------------------------------- checks


def test_check_expectations_all_of_groups_any_of_options_case_insensitive():
    expectation = Expectation(must_contain=(("blue",), ("strawberr", "fraise")), must_not_contain=("red",))
    assert check_expectations("Blue and STRAWBERRIES", expectation) == []
    assert check_expectations("blue and fraises", expectation) == []
    assert check_expectations("blue only", expectation) == ["missing one of 'strawberr', 'fraise'"]
    assert check_expectations("Red, blue, strawberry", expectation) == ["contains forbidden 'red'"]
    stop = Expectation(stop_at_eos=True)
    assert check_expectations("x", stop, stopped_at_eos=False) == [
        "did not stop at EOS within max_new_tokens (cut off)"
    ]
    assert check_expectations("x", stop, stopped_at_eos=True) == []
    assert check_expectations("x", stop) == []  # unknown: not judged


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        # a misspelt key is named even though it also leaves a required field missing
        ("conversation:\n  - id: a\n" + GOOD_TURN, ["top level", "unknown field(s) ['conversation']"]),
        ("conversations:\n  - {turns: [{user: hi}], colour: red}\n", ["conversation #0", "'id' must match"]),
        ("conversations:\n  - just text\n", ["conversation #0", "must be a mapping with 'id' and 'turns'"]),
        ("defaults: [1]\nconversations:\n  - id: a\n" + GOOD_TURN, ["defaults", "must be a mapping"]),
        (
            "defaults: {max_new_tokens: null}\nconversations:\n  - id: a\n" + GOOD_TURN,
            ["defaults", "field 'max_new_tokens' must be a positive integer, got None"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: {must_contain: [[x, 3]]}\n",
            ["conversation 'a' turns[0]", "field 'expect.must_contain' must be a non-empty string, got 3"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: {must_not_contain: []}\n",
            ["turns[0]", "field 'expect.must_not_contain' must be a string or a non-empty list of strings, got []"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n        expect: [paris]\n",
            ["conversation 'a' turns[0]", "field 'expect' must be a mapping, got list"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n      - {assistant: hello, max_new_tokens: 3}\n"
            "      - user: bye\n",
            ["conversation 'a' turns[1]", "cannot carry 'expect'/'max_new_tokens'"],
        ),
        (
            "conversations:\n  - id: a\n    turns:\n      - user: hi\n  - id: a\n    turns: []\n",
            ["conversation 'a'", "duplicate id"],  # found on reaching the second conversation, before its turns
        ),
    ],
)
def test_suite_errors_are_worded_for_the_file_not_for_pydantic(tmp_path, body, fragments):
    path = write_suite(tmp_path, body)
    with pytest.raises(PromptSuiteError) as info:
        load_prompt_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    assert "validation error" not in message.lower() and "pydantic" not in message
