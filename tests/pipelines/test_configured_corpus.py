"""A user's corpus configured once (corpus.yaml or NEURONFORGE_CORPUS) is what every entry point uses: the default job
(`make run`), the UI launchpad's default config, the nightly schedule's runs and corpus_sensor (issue #14 item 3).

Before, the corpus was fixed in pipelines/definitions.py (`CorpusResource()`, the built-in corpus): each of these
silently switched back to the stdlib corpus.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from tiny_registry import TINY_DENSE, write_registry

from neuronforge.registry import Registry
from pipelines.definitions import build_definitions, default_resources
from resources.storage import StorageResource

MINI_BEIR = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "mini_beir"
MODELS_YAML = TINY_DENSE
CORPUS = dg.AssetKey("corpus")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return write_registry(tmp_path, MODELS_YAML)


@pytest.fixture
def user_corpus(tmp_path: Path) -> Path:
    source = tmp_path / "my_corpus"
    shutil.copytree(MINI_BEIR, source)
    return source


@pytest.fixture(params=["source", "file"])
def configured(request, tmp_path: Path, user_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NEURONFORGE_CORPUS naming the source itself, or a corpus .yaml file (relative source, resolved beside it)."""
    if request.param == "source":
        monkeypatch.setenv("NEURONFORGE_CORPUS", str(user_corpus))
    else:
        config = tmp_path / "my_corpus.yaml"
        config.write_text(yaml.safe_dump({"source": "my_corpus", "bad_input": "fail", "rrf_k": 20}))
        monkeypatch.setenv("NEURONFORGE_CORPUS", str(config))
    monkeypatch.setenv("NEURONFORGE_HOME", str(tmp_path / "home"))
    return user_corpus


def corpus_path_of(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == CORPUS]
    return str(event.materialization.metadata["path"].value)


def test_the_default_job_reads_the_configured_corpus(configured: Path, registry: Registry, tmp_path: Path) -> None:
    defs = build_definitions(registry, resources={"storage": StorageResource(root=str(tmp_path / "home"))})
    job = defs.resolve_job_def("default_pipeline")  # what `make run` executes
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=[CORPUS])
    assert result.success
    assert corpus_path_of(result) == str(configured)


def test_the_launchpad_default_is_the_configured_corpus(configured: Path, registry: Registry) -> None:
    # What the UI's launchpad scaffolds: dagster_graphql's rootDefaultYaml (schema/run_config.py ~105) renders the
    # job snapshot's root config type with default_values_yaml_from_type_snap.
    from dagster._core.snap import JobSnap
    from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

    snap = JobSnap.from_job_def(build_definitions(registry).resolve_job_def("default_pipeline"))
    (mode,) = snap.mode_def_snaps
    root = snap.config_schema_snapshot.get_config_snap(mode.root_config_key)
    defaults = yaml.safe_load(default_values_yaml_from_type_snap(snap.config_schema_snapshot, root))
    assert defaults["resources"]["corpus"]["config"]["source"] == str(configured)


def test_the_nightly_schedule_runs_on_the_configured_corpus(
    configured: Path, registry: Registry, tmp_path: Path
) -> None:
    storage = StorageResource(root=str(tmp_path / "home"))
    defs = build_definitions(registry, resources={"storage": storage})
    schedule = defs.resolve_schedule_def("nightly_corpus_refresh")
    context = dg.build_schedule_context(
        instance=dg.DagsterInstance.ephemeral(),
        scheduled_execution_time=dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC),
        resources={"storage": storage},
    )
    (request,) = schedule.evaluate_tick(context).run_requests or []
    # The daemon launches the request on the schedule's job with the definitions' resources.
    job = defs.resolve_job_def(schedule.job_name)
    result = job.execute_in_process(
        run_config=request.run_config,
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=list(request.asset_selection or []),
    )
    assert result.success
    assert corpus_path_of(result) == str(configured)


def test_corpus_sensor_watches_the_configured_corpus(configured: Path, registry: Registry, tmp_path: Path) -> None:
    storage = StorageResource(root=str(tmp_path / "home"))
    defs = build_definitions(registry, resources={"storage": storage})
    sensor = defs.resolve_sensor_def("corpus_sensor")
    # The daemon hands a sensor the definitions' resources (no corpus override here): nothing built yet, so every file
    # is new.
    resources = defs.get_repository_def().get_top_level_resources()
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs, resources=resources)
    data = sensor.evaluate_tick(context)
    (request,) = data.run_requests or []
    assert request.asset_selection == [CORPUS]
    assert str(configured) in (data.cursor or "")


def test_the_settings_of_a_corpus_file_reach_the_resource(
    tmp_path: Path, user_corpus: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "my_corpus.yaml"
    config.write_text(yaml.safe_dump({"source": "my_corpus", "bad_input": "fail", "rrf_k": 20}))
    monkeypatch.setenv("NEURONFORGE_CORPUS", str(config))
    corpus = default_resources()["corpus"]
    assert (corpus.source, corpus.bad_input, corpus.rrf_k) == (str(user_corpus), "fail", 20)


def test_without_configuration_the_builtin_corpus_is_used(registry: Registry, monkeypatch) -> None:
    monkeypatch.delenv("NEURONFORGE_CORPUS", raising=False)
    corpus = default_resources()["corpus"]
    assert corpus.source is None  # the repository's corpus.yaml says `source: builtin`
