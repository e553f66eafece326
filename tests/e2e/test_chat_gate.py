"""A chat model that fails its expectations is not published; a changed reply is caught by the golden check."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from pipeline_helpers import checks, materialize, metadata, pipeline_resources

from pipelines.definitions import build_definitions

pytestmark = pytest.mark.slow
MODEL = "smollm2_135m_instruct"

SUITE = """
version: 1
conversations:
  - id: capital_of_france
    turns:
      - user: What is the capital of France?
        max_new_tokens: 12
        expect:
          must_contain: [{answer}]
"""


def eval_config(tmp_path, answer: str, golden: str | None = None) -> dict:
    suite = tmp_path / f"suite-{answer}.yaml"
    suite.write_text(SUITE.format(answer=answer))
    config = {"suite": str(suite), **({"golden": golden} if golden else {})}
    return {"ops": {f"{MODEL}__chat_smoke_eval": {"config": config}}}


@pytest.fixture(scope="module")
def defs(tmp_path_factory, hub):
    root = tmp_path_factory.mktemp("home")
    return build_definitions(resources=pipeline_resources(root, hub.url))


def test_failing_expectation_blocks_publish(defs, tmp_path):
    result = materialize(defs, dg.AssetSelection.groups(MODEL), eval_config(tmp_path, "london"))
    outcomes = checks(result)
    assert outcomes[f"{MODEL}/chat_smoke_eval:expectations_met"] is False
    assert outcomes[f"{MODEL}/chat_smoke_eval:template_applied"] is True
    published = {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert f"{MODEL}/chat_smoke_eval" in published
    assert f"{MODEL}/publish" not in published  # the blocking check stopped it


def test_passing_model_is_published_and_golden_regression_is_detected(defs, tmp_path):
    result = materialize(defs, dg.AssetSelection.groups(MODEL), eval_config(tmp_path, "paris"))
    assert checks(result)[f"{MODEL}/chat_smoke_eval:expectations_met"] is True
    assert metadata(result, f"{MODEL}/publish")["repo_id"].endswith("-torch-bs1-sl1024")

    # A golden file whose reply differs from today's greedy output → the WARN check fails and names the turn.
    golden = tmp_path / "golden.json"
    golden.write_text(
        json.dumps(
            {
                "version": 1,
                "options": None,
                "sequence_length": 1024,
                "conversations": {"capital_of_france": {"0": "The capital of France is Lyon."}},
            }
        )
    )
    again = materialize(
        defs, dg.AssetSelection.assets([MODEL, "chat_smoke_eval"]), eval_config(tmp_path, "paris", str(golden))
    )
    evaluations = {e.check_name: e for e in again.get_asset_check_evaluations()}
    mismatch = evaluations["matches_golden_outputs"]
    assert mismatch.passed is False and mismatch.severity == dg.AssetCheckSeverity.WARN
    assert "capital_of_france turn 0" in json.dumps(mismatch.metadata["differences"].value)


def test_sampling_run_config_reaches_the_generation_options(defs, tmp_path):
    """The Launchpad's decoding fields (declared once, on GenerationOptions) drive the evaluation's generation."""
    config = eval_config(tmp_path, "paris")
    config["ops"][f"{MODEL}__chat_smoke_eval"]["config"].update({"do_sample": True, "seed": 3})
    result = materialize(defs, dg.AssetSelection.assets([MODEL, "chat_smoke_eval"]), config)
    report = json.loads(Path(metadata(result, f"{MODEL}/chat_smoke_eval")["record"]).read_text())["data"]
    assert report["options"]["do_sample"] is True and report["options"]["seed"] == 3
    assert report["golden"].get("skipped") is True  # sampled replies are not compared with golden ones
    # ...so that check could not run: it says so rather than passing.
    assert checks(result)[f"{MODEL}/chat_smoke_eval:matches_golden_outputs"] is False
