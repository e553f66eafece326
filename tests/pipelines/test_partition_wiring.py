"""The corpus stages as Dagster partitioned assets: the partitions corpus.yaml configures, single-run backfills by
default (so `make run` is one run), a multi-run policy for fleets, and run tags that cover every partition."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from tiny_registry import TINY_ENCODERS, write_registry

from pipelines.definitions import build_definitions
from pipelines.jobs import with_all_partitions
from resources.corpus import CorpusResource

MODELS_YAML = TINY_ENCODERS
STAGES = [dg.AssetKey(["tiny_dense", "corpus_embeddings"]), dg.AssetKey(["tiny_sparse", "sparse_index"])]


@pytest.fixture
def registry(tmp_path: Path):
    return write_registry(tmp_path, MODELS_YAML)


def test_the_corpus_stages_are_partitioned_as_configured(registry) -> None:
    graph = build_definitions(registry, resources={"corpus": CorpusResource(partitions=3)}).resolve_asset_graph()
    for key in STAGES:
        node = graph.get(key)
        assert node.partitions_def.get_partition_keys() == ["0-of-3", "1-of-3", "2-of-3"]
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    # Everything else stays unpartitioned: retrieval_eval reads every partition of what it depends on.
    others = graph.get_all_asset_keys() - set(STAGES)
    assert all(graph.get(k).partitions_def is None for k in others)


def test_a_fleet_backfills_one_partition_per_run(registry) -> None:
    defs = build_definitions(registry, corpus_backfill=dg.BackfillPolicy.multi_run(1))
    assert all(defs.resolve_asset_graph().get(k).backfill_policy == dg.BackfillPolicy.multi_run(1) for k in STAGES)


def test_make_run_covers_every_partition_in_one_run(registry) -> None:
    job = build_definitions(registry).resolve_job_def("default_pipeline")
    assert with_all_partitions(job, {"x": "1"}) == {
        "x": "1",
        "dagster/asset_partition_range_start": "0-of-4",
        "dagster/asset_partition_range_end": "3-of-4",
    }
    # A partition chosen on purpose is kept.
    assert with_all_partitions(job, {"dagster/partition": "2-of-4"}) == {"dagster/partition": "2-of-4"}


PARTED_DEFS = """
import dagster as dg

parts = dg.StaticPartitionsDefinition(["0-of-3", "1-of-3", "2-of-3"])

@dg.asset
def whole() -> None:
    pass

@dg.asset(deps=[whole], partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
def parted(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"partitions {context.partition_keys}")

defs = dg.Definitions(assets=[whole, parted], jobs=[dg.define_asset_job("mixed_job")])
"""


def test_the_launcher_runs_a_partitioned_job_as_one_run_of_every_partition(tmp_path: Path) -> None:
    """`make run`'s launcher (pipelines/launch.py) on a job like default_pipeline: unpartitioned and single-run
    partitioned assets together, no partition given."""
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "parted_defs.py").write_text(PARTED_DEFS)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: parted_defs\n      working_directory: .\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(repo / "deploy" / "dagster-local.yaml", home / "dagster.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.launch", "mixed_job", "--workspace", str(workspace)],
        cwd=repo,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        (run,) = instance.get_runs()
        events = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        made = sorted(
            (
                e.event_log_entry.asset_materialization.asset_key.to_user_string(),
                e.event_log_entry.asset_materialization.partition or "",
            )
            for e in events
        )
    assert made == [("parted", "0-of-3"), ("parted", "1-of-3"), ("parted", "2-of-3"), ("whole", "")]
