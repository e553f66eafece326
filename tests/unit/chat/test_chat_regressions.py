"""Golden replies and latency regressions on synthetic results."""

from __future__ import annotations

import pytest

from neuronforge.chat import (
    ConversationResult,
    Generation,
    GenerationOptions,
    SuiteResult,
    TurnResult,
    compare_to_golden,
    golden_from,
    latency_regressions,
)

SEQUENCE_LENGTH = 2048


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
