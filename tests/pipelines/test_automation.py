"""Declarative automation: downstream stages follow a new export only once its blocking checks have passed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from tiny_registry import TINY_DENSE, write_registry

from neuronforge.partitions import DEFAULT_PARTITIONS, partition_keys
from neuronforge.registry import Registry
from pipelines.definitions import build_definitions

MODELS_YAML = TINY_DENSE
EMBEDDINGS = dg.AssetKey(["tiny_dense", "corpus_embeddings"])
PUBLISH = dg.AssetKey(["tiny_dense", "publish"])
EXPORT = dg.AssetKey(["tiny_dense", "export"])
PARTITIONS = partition_keys(DEFAULT_PARTITIONS)  # corpus_embeddings: one partition per hash bucket of the doc id


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return write_registry(tmp_path, MODELS_YAML)


def materialized(instance: dg.DagsterInstance, *keys: dg.AssetKey, version: str = "v1") -> None:
    # Every materialization a run makes carries a data version (ours name their content); runless reports do too.
    for asset_key in keys:
        for partition in PARTITIONS if asset_key == EMBEDDINGS else [None]:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=asset_key, partition=partition, tags={"dagster/data_version": version}
                )
            )


def test_the_running_automation_sensor_covers_every_asset(registry: Registry) -> None:
    repo = build_definitions(registry).get_repository_def()
    sensor = next(s for s in repo.sensor_defs if s.name == "default_automation_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.asset_selection.resolve(repo.asset_graph) == repo.asset_graph.get_all_asset_keys()
    # Ours replaces Dagster's implicit (stopped) default sensor.
    assert "default_automation_condition_sensor" not in {s.name for s in repo.sensor_defs}


def test_downstream_stages_follow_an_export_once_its_blocking_check_passes(registry: Registry) -> None:
    defs = build_definitions(registry)
    instance = dg.DagsterInstance.ephemeral()

    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0  # nothing upstream exists yet

    materialized(instance, dg.AssetKey("corpus"), dg.AssetKey(["tiny_dense", "source_model"]), EXPORT)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    # The export exists but its parity check has not passed: nothing may consume or publish it yet.
    assert result.get_num_requested(EMBEDDINGS) == 0
    assert result.get_num_requested(PUBLISH) == 0

    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=EXPORT, check_name="matches_reference", passed=True)
    )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(EMBEDDINGS) == len(PARTITIONS)  # every partition
    assert result.get_num_requested(EXPORT) == 0  # exports are launched by people and sensors, never eagerly
    # retrieval_eval waits for the embeddings it reads; publish waits for retrieval_eval (its figures go on the card).
    assert result.get_num_requested(dg.AssetKey("retrieval_eval")) == 0
    assert result.get_num_requested(PUBLISH) == 0

    materialized(instance, EMBEDDINGS, dg.AssetKey("retrieval_eval"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(PUBLISH) == 1


def test_a_failed_blocking_check_keeps_the_artifact_from_downstream_stages(registry: Registry) -> None:
    defs = build_definitions(registry)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    materialized(instance, dg.AssetKey("corpus"), dg.AssetKey(["tiny_dense", "source_model"]), EXPORT)
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=EXPORT, check_name="matches_reference", passed=False)
    )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0


def test_a_no_op_rematerialization_triggers_nothing_downstream(registry: Registry) -> None:
    """Same data version (same content) upstream → no downstream run; a new data version → one. Plain eager() would
    re-run embeddings (and then retrieval_eval) after any new materialization of the corpus."""
    defs = build_definitions(registry)
    instance = dg.DagsterInstance.ephemeral()
    corpus = dg.AssetKey("corpus")
    retrieval = dg.AssetKey("retrieval_eval")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    materialized(instance, corpus, dg.AssetKey(["tiny_dense", "source_model"]), EXPORT)
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=EXPORT, check_name="matches_reference", passed=True)
    )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(EMBEDDINGS) == len(PARTITIONS)  # first build, every partition
    materialized(instance, EMBEDDINGS, PUBLISH, retrieval)  # ... which the requested run then made
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0

    materialized(instance, corpus)  # the corpus re-read, unchanged: same fingerprint, same data version
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0

    materialized(instance, corpus, version="v2")  # a file changed
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(EMBEDDINGS) == len(PARTITIONS)
    assert result.get_num_requested(PUBLISH) == 0
