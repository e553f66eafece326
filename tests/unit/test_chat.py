"""Chat evaluation: prompt-suite validation, history truncation with the real SmolLM2 tokenizer, the generation loop
against transformers' generate(), the built-in suite with the real model, golden and latency regressions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from chat_fixtures import smollm2_model, smollm2_tokenizer  # noqa: F401  (pytest fixtures)

from neuronforge.chat import (
    DEFAULT_SUITE,
    ConversationResult,
    Expectation,
    Generation,
    GenerationOptions,
    PromptError,
    PromptSuiteError,
    PromptTooLongError,
    StaticShapeError,
    SuiteResult,
    TurnResult,
    budget_for,
    build_prompt,
    check_expectations,
    compare_to_golden,
    generate,
    generate_batch,
    golden_from,
    latency_regressions,
    leaked_template_tokens,
    load_prompt_suite,
    run_conversation,
    run_suite,
    strip_template_tokens,
    template_applied,
)

SEQUENCE_LENGTH = 2048


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


# ------------------------------------------------------------------------------------------------ prompt suite


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


# -------------------------------------------------------------------------------------------------- checks


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


# --------------------------------------------------------------------------------- truncation (real tokenizer)


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


# --------------------------------------------------------------------------------------- generation (real model)


def france_ids(tokenizer) -> list[int]:
    return build_prompt(tokenizer, [user("What is the capital of France?")], 2000).input_ids


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "max_new_tokens"), [("What is the capital of France?", 12), ("Tell me a story.", 6)]
)
def test_greedy_generate_matches_transformers_generate(smollm2_model, smollm2_tokenizer, question, max_new_tokens):  # noqa: F811
    import torch

    ids = build_prompt(smollm2_tokenizer, [user(question)], 2000).input_ids
    ours = generate(
        smollm2_model, smollm2_tokenizer, ids, max_new_tokens=max_new_tokens, sequence_length=SEQUENCE_LENGTH
    )
    with torch.inference_mode():
        reference = smollm2_model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    assert ours.token_ids == reference[0, len(ids) :].tolist()
    assert ours.prompt_tokens == len(ids) and ours.output_tokens == len(ours.token_ids)
    assert ours.ttft_s > 0 and ours.total_s >= ours.ttft_s and ours.tokens_per_s > 0
    if ours.stopped_at_eos:
        assert ours.token_ids[-1] == smollm2_tokenizer.eos_token_id
        assert "<|im_end|>" not in ours.raw_text
        assert "paris" in ours.text.lower()
    else:
        assert ours.output_tokens == max_new_tokens


@pytest.mark.slow
def test_right_padded_batch_equals_single_prompts(smollm2_model, smollm2_tokenizer):  # noqa: F811
    tok = smollm2_tokenizer
    long_ids = france_ids(tok)
    short_ids = build_prompt(tok, [user("Hi")], 2000).input_ids
    assert len(short_ids) < len(long_ids)  # really padded
    batch = generate_batch(
        smollm2_model, tok, [long_ids, short_ids], max_new_tokens=5, sequence_length=SEQUENCE_LENGTH, batch_size=2
    )
    for ids, got in zip([long_ids, short_ids], batch, strict=True):
        alone = generate(smollm2_model, tok, ids, max_new_tokens=5, sequence_length=SEQUENCE_LENGTH)
        assert got.token_ids == alone.token_ids


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(smollm2_model, smollm2_tokenizer):  # noqa: F811
    ids = france_ids(smollm2_tokenizer)
    options = {"do_sample": True, "temperature": 0.9, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}
    runs = [
        generate(
            smollm2_model, smollm2_tokenizer, ids, max_new_tokens=4, sequence_length=SEQUENCE_LENGTH, seed=7, **options
        )
        for _ in range(2)
    ]
    assert runs[0].token_ids == runs[1].token_ids


def test_static_limits_are_enforced_before_running(smollm2_tokenizer):  # noqa: F811
    ids = france_ids(smollm2_tokenizer)
    model = object()  # never called: the limits are checked first
    with pytest.raises(StaticShapeError, match=rf"prompt_tokens \({len(ids)}\) \+ max_new_tokens \(20\)"):
        generate(model, smollm2_tokenizer, ids, max_new_tokens=20, sequence_length=len(ids) + 19)
    with pytest.raises(StaticShapeError, match="do not fit batch_size=1"):
        generate_batch(model, smollm2_tokenizer, [ids, ids], max_new_tokens=4, sequence_length=SEQUENCE_LENGTH)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(
            model,
            smollm2_tokenizer,
            ids,
            max_new_tokens=4,
            sequence_length=SEQUENCE_LENGTH,
            do_sample=True,
            temperature=0,
        )


def test_conversation_too_long_for_the_static_shape_is_a_failure_not_a_crash(smollm2_tokenizer):  # noqa: F811
    conversation = load_prompt_suite(DEFAULT_SUITE)[0]
    result = run_conversation(object(), smollm2_tokenizer, conversation, sequence_length=40)
    assert not result.passed
    assert "only 16 fit" in result.failures[0] and result.turns[0].generation is None


# ------------------------------------------------------------------------------------ the built-in suite, real


@pytest.fixture(scope="module")
def suite_result(smollm2_model, smollm2_tokenizer):  # noqa: F811
    return run_suite(
        smollm2_model, smollm2_tokenizer, load_prompt_suite(DEFAULT_SUITE), sequence_length=SEQUENCE_LENGTH
    )


@pytest.mark.slow
def test_memory_conversation_passes_greedily(suite_result):
    memory = next(c for c in suite_result.conversations if c.id == "memory_colour_and_fruit")
    assert memory.passed, memory.failures
    answer = memory.turns[-1].reply.lower()
    assert "blue" in answer and "strawberr" in answer


@pytest.mark.slow
def test_builtin_suite_passes(suite_result):
    failing = {c.id: c.failures for c in suite_result.conversations if not c.passed}
    assert not failing, suite_result.summary_markdown()
    report = suite_result.to_json()
    json.dumps(report)  # metadata must be serialisable
    assert report["n_passed"] == report["n_conversations"] == len(load_prompt_suite(DEFAULT_SUITE))
    assert report["latency"]["tokens_per_s"] > 0
    table = suite_result.summary_markdown()
    assert (
        "| conversation | turns | prompt tokens | output tokens | TTFT ms | ITL ms | tok/s | passed | failures |"
        in table
    )
    assert all(c.id in table for c in suite_result.conversations)


@pytest.mark.slow
def test_golden_outputs_detect_a_changed_reply(suite_result):
    golden = golden_from(suite_result)
    assert compare_to_golden(suite_result, json.loads(json.dumps(golden))) == []
    assert golden["conversations"]["memory_colour_and_fruit"].keys() == {"2"}  # fixed turns are not golden
    golden["conversations"]["capital_of_france"]["0"] = "The capital of France is Lyon."
    differences = compare_to_golden(suite_result, golden)
    assert len(differences) == 1 and differences[0].startswith("capital_of_france turn 0: differs at char 25")


# ------------------------------------------------------------------------------- golden + latency, synthetic


def fake_generation(text: str, *, tokens: int = 10, total_s: float = 1.0, ttft_s: float = 0.2) -> Generation:
    return Generation(
        text,
        list(range(tokens)),
        30,
        tokens,
        True,
        ttft_s,
        (total_s - ttft_s) / (tokens - 1),
        tokens / total_s,
        total_s,
    )


def fake_suite(replies: dict[str, list[str]], **gen) -> SuiteResult:
    conversations = [
        ConversationResult(cid, [TurnResult(i, "q", fake_generation(r, **gen), 30) for i, r in enumerate(rs)])
        for cid, rs in replies.items()
    ]
    return SuiteResult(conversations, SEQUENCE_LENGTH)


def test_golden_comparison_reports_missing_new_and_changed_conversations():
    golden = golden_from(fake_suite({"a": ["one", "two"], "b": ["x"]}))
    assert compare_to_golden(fake_suite({"a": ["one", "two"], "b": ["x"]}), golden) == []
    differences = compare_to_golden(fake_suite({"a": ["one", "TWO"], "c": ["y"]}), golden)
    assert differences == [
        "a turn 1: differs at char 0: expected 'two', got 'TWO'",
        "b: in the golden file but not in this run",
        "c: not in the golden file (new conversation: regenerate the golden file)",
    ]
    sampled = SuiteResult(
        fake_suite({"a": ["one", "two"], "b": ["x"]}).conversations, SEQUENCE_LENGTH, GenerationOptions(do_sample=True)
    )
    assert compare_to_golden(sampled, golden)[0].startswith("decoding options differ")
    assert "regenerate" in compare_to_golden(sampled, {"version": 0})[0]


def test_latency_regressions():
    before = fake_suite({"a": ["x"]}, tokens=11, total_s=1.0, ttft_s=0.2).to_json()
    same = fake_suite({"a": ["x"]}, tokens=11, total_s=1.2, ttft_s=0.25).to_json()
    assert latency_regressions(same, before) == []
    slow = fake_suite({"a": ["x"]}, tokens=11, total_s=3.0, ttft_s=0.5).to_json()
    problems = latency_regressions(slow, before)
    assert [p.split()[0] for p in problems] == ["tokens_per_s", "ttft_ms", "itl_ms"]
    assert "dropped 67%" in problems[0] and "rose 150%" in problems[1]
    assert latency_regressions(slow["latency"], before["latency"], tolerance=3.0) == []
    assert latency_regressions(slow, {}) == []  # first run: nothing to compare with
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        latency_regressions(slow, before, tolerance=0)
