"""The whole default pipeline on a real PostgreSQL instance, as a fleet runs it.

`python -m pipelines.launch` (what `make run` runs) with DAGSTER_HOME holding deploy/dagster-postgres.yaml unchanged:
credentials, host and port from DAGSTER_PG_*, TLS required. The run goes through the `neuronforge` code location and
the default multiprocess executor, so every step is its own process with its own connection to Postgres (as every pod
has on EKS). Then the run, its events, its asset materializations and check results, and the `neuron` pool's slots are
read back from Postgres — through Dagster and with plain SQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest

pytestmark = [pytest.mark.fleet, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg_run(postgres, hub, tmp_path_factory):
    dagster_home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", dagster_home / "dagster.yaml")
    home = tmp_path_factory.mktemp("neuronforge_home")
    # Model conversions are cached in the test session's data directory (tests/conftest.py): share that, nothing else.
    shared_cache = Path(os.environ["NEURONFORGE_HOME"]) / "cache"
    shared_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(shared_cache, target_is_directory=True)
    env = {
        **os.environ,
        **postgres.env(),
        "DAGSTER_HOME": str(dagster_home),
        "NEURONFORGE_HOME": str(home),
        "NEURONFORGE_HUB_ENDPOINT": hub.url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.launch", "default_pipeline", "--tag", "neuronforge/test=postgres"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, f"make run on Postgres failed ({done.returncode}):\n{done.stderr[-6000:]}"
    with mock.patch.dict(os.environ, postgres.env()):
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            yield instance, dagster_home


def test_storage_is_postgres_not_sqlite(pg_run):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance, dagster_home = pg_run
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    # Nothing fell back to sqlite files under DAGSTER_HOME.
    assert not [p.name for p in dagster_home.rglob("*.db")]


def test_the_whole_pipeline_ran_and_is_recorded_in_postgres(pg_run):
    from pipelines.definitions import defs

    instance, _ = pg_run
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"neuronforge/test": "postgres"}))
    assert len(runs) == 1
    run = runs[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "default_pipeline"
    assert run.tags["neuronforge/launched_by"] == "make run"

    graph = defs.resolve_asset_graph()
    materialized = {
        r.event_log_entry.dagster_event.asset_key
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    }
    assert materialized == set(graph.get_all_asset_keys())
    evaluations = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    ]
    assert {e.asset_check_key for e in evaluations} == set(graph.asset_check_keys)
    # Blocking checks gate publish and the corpus stages: every one of them passed, or those would not have run.
    blocking = {key for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    assert blocking and all(e.passed for e in evaluations if e.asset_check_key in blocking)
    # The latest materialization of each asset is this run's, read back through Postgres.
    for key in graph.get_all_asset_keys():
        assert instance.get_latest_materialization_event(key).run_id == run.run_id


def test_runs_events_and_pool_slots_live_in_postgres(pg_run, postgres):
    instance, _ = pg_run
    (run,) = instance.get_runs(filters=dg.RunsFilter(tags={"neuronforge/test": "postgres"}))
    started = list(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START))
    # One process per step (the multiprocess executor), each with its own connection writing its events to Postgres.
    assert len({entry.dagster_event.pid for entry in started}) == len(started) > 10
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT status, pipeline_name FROM runs WHERE run_id = %s", (run.run_id,))
        assert cur.fetchall() == [("SUCCESS", "default_pipeline")]
        cur.execute(
            "SELECT DISTINCT step_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'STEP_SUCCESS'",
            (run.run_id,),
        )
        assert {row[0] for row in cur.fetchall()} == {entry.step_key for entry in started}
        # The `neuron` pool's slots are rows in Postgres, shared by every process of the deployment: the limit of
        # dagster-postgres.yaml (default_limit: 2), set up when the first model step claimed a slot; all free again.
        cur.execute(
            'SELECT "limit", using_default_limit FROM concurrency_limits WHERE concurrency_key = %s', ("neuron",)
        )
        assert cur.fetchall() == [(2, True)]
        cur.execute(
            "SELECT count(*), count(run_id) FROM concurrency_slots WHERE concurrency_key = %s AND NOT deleted",
            ("neuron",),
        )
        assert cur.fetchone() == (2, 0)
        cur.execute("SELECT count(*) FROM pending_steps WHERE concurrency_key = %s", ("neuron",))
        assert cur.fetchone() == (0,)
    info = instance.event_log_storage.get_concurrency_info("neuron")
    assert (info.slot_count, info.active_slot_count, info.pending_step_count) == (2, 0, 0)
