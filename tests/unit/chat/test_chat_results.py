"""Playing conversations and the built-in suite with the real model: memory across turns, the report, golden
replies of a real run, and a static shape too small for the conversation."""

from __future__ import annotations

import json

import pytest
from chat_fixtures import smollm2_generator, smollm2_tokenizer  # noqa: F401  (pytest fixtures)

from neuronforge.chat import (
    DEFAULT_SUITE,
    Generator,
    compare_to_golden,
    golden_from,
    load_prompt_suite,
    run_conversation,
    run_suite,
)


class NeverRuns(Generator):
    def token_loop(self, prompts, *, max_new_tokens, options, eos_ids):
        raise AssertionError("a turn that cannot fit must not reach the model")


def test_conversation_too_long_for_the_static_shape_is_a_failure_not_a_crash(smollm2_tokenizer):  # noqa: F811
    conversation = load_prompt_suite(DEFAULT_SUITE)[0]
    generator = NeverRuns(smollm2_tokenizer, batch_size=1, sequence_length=40, eos_ids={2})
    result = run_conversation(generator, conversation)
    assert not result.passed
    assert "only 16 fit" in result.failures[0] and result.turns[0].generation is None


# ------------------------------------------------------------------------------------------- the built-in suite, real


@pytest.fixture(scope="module")
def suite_result(smollm2_generator):  # noqa: F811
    return run_suite(smollm2_generator, load_prompt_suite(DEFAULT_SUITE))


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
