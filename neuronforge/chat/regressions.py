"""Regression tracking across runs: golden replies (exact text under deterministic decoding) and latency against the
previous evaluation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neuronforge.artifacts import write_json_atomic
from neuronforge.chat.errors import ChatError
from neuronforge.chat.results import SuiteResult

GOLDEN_VERSION = 1


def golden_from(result: SuiteResult) -> dict[str, Any]:
    """The generated reply of every turn, keyed by conversation id and turn index, plus the decoding options.

    Only meaningful for deterministic decoding (greedy, or sampling with a fixed seed) on the same dtype/backend.
    """
    return {
        "version": GOLDEN_VERSION,
        "options": result.options.model_dump(),
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
    if golden.get("options") not in (None, result.options.model_dump()):
        differences.append(
            f"decoding options differ from the golden run: {golden['options']} vs {result.options.model_dump()}"
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
