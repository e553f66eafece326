"""`make run` (pipelines/launch.py) records its run with the code location, as a run launched from the UI is: the
job page and the Overview timeline find runs by the `.dagster/repository` tag that only such a run carries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.launch import code_location_origin

REPO = Path(__file__).resolve().parents[2]

TINY_DEFS = """
import dagster as dg

@dg.asset
def tiny() -> None:
    pass

@dg.asset(deps=[tiny])
def failing() -> None:
    raise RuntimeError("this asset fails on purpose")

defs = dg.Definitions(
    assets=[tiny, failing],
    jobs=[dg.define_asset_job("tiny_job", selection=[tiny]), dg.define_asset_job("failing_job")],
)
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "tiny_defs.py").write_text(TINY_DEFS)
    path = tmp_path / "workspace.yaml"
    path.write_text(
        "load_from:\n  - python_module:\n      module_name: tiny_defs\n      working_directory: .\n"
        "      location_name: neuronforge\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-local.yaml", home / "dagster.yaml")
    return path


def launch(workspace: Path, job: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGSTER_HOME": str(workspace.parent / "dagster_home")}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.launch", job, "--workspace", str(workspace), "--tag", "purpose=test"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_repository_workspace_names_its_location_neuronforge() -> None:
    origin = code_location_origin(REPO / "workspace.yaml")
    assert origin.location_name == "neuronforge"
    assert origin.loadable_target_origin.module_name == "pipelines.definitions"


def test_a_launched_run_carries_its_code_location(workspace: Path) -> None:
    done = launch(workspace, "tiny_job")
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.instance_for_test(temp_dir=str(workspace.parent / "dagster_home")) as instance:
        # Exactly the filter the job page uses (dagster_graphql GraphenePipeline.resolve_runs).
        runs = instance.get_runs(
            dg.RunsFilter(job_name="tiny_job", tags={".dagster/repository": "__repository__@neuronforge"})
        )
        assert len(runs) == 1
        run = runs[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.remote_job_origin is not None and run.remote_job_origin.location_name == "neuronforge"
        assert run.tags["purpose"] == "test" and run.tags["neuronforge/launched_by"] == "make run"


def test_a_failed_run_fails_the_command(workspace: Path) -> None:
    done = launch(workspace, "failing_job")
    assert done.returncode == 1
    assert "failed; open it in the UI" in done.stderr


def test_an_unknown_job_is_refused_with_the_known_ones(workspace: Path) -> None:
    done = launch(workspace, "nope")
    assert done.returncode != 0
    assert "no job 'nope' in code location 'neuronforge'; jobs: failing_job, tiny_job" in done.stderr


def test_an_invalid_models_yaml_stops_the_command_with_the_error(workspace: Path, tmp_path: Path) -> None:
    broken = tmp_path / "models.yaml"
    broken.write_text("models:\n  - name: x\n    kind: rerank\n")
    env = {**os.environ, "DAGSTER_HOME": str(workspace.parent / "dagster_home"), "NEURONFORGE_MODELS": str(broken)}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.launch", "tiny_job", "--workspace", str(workspace)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert f"{broken}: model 'x', field" in done.stderr and "Fix models.yaml" in done.stderr
