"""A broken models.yaml never takes the code location down: each load is a fresh process, as a code-location reload
is, and the definitions it loads keep every asset, check and sensor while the error is shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from tiny_registry import TINY_ENCODERS

from assets.source_models import matches_models_yaml
from neuronforge.registry import RegistryError, load_registry
from neuronforge.registry_snapshot import load_registry_or_last_valid, snapshot_path
from pipelines.definitions import build_definitions
from resources.backends import BackendResource
from resources.storage import StorageResource

REPO = Path(__file__).resolve().parents[2]
MODELS_YAML = TINY_ENCODERS
BROKEN = MODELS_YAML.replace("kind: sparse", "kind: sparce")

# What a code server reports after loading the location: asset keys, check keys, sensors, schedules, jobs.
LOAD = """
import json
from pipelines.definitions import defs
repo = defs.get_repository_def()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()),
    "checks": sorted(k.to_user_string() for k in repo.asset_graph.asset_check_keys),
    "sensors": sorted(s.name for s in repo.sensor_defs),
    "schedules": sorted(s.name for s in repo.schedule_defs),
    "jobs": sorted(repo.job_names),
}))
"""


def load_location(models: Path, home: Path) -> tuple[dict, str]:
    env = {**os.environ, "NEURONFORGE_MODELS": str(models), "NEURONFORGE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", LOAD], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the code location failed to load:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_YAML)
    return path


def test_an_invalid_models_yaml_keeps_every_asset_and_sensor_loaded(models: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    before, _ = load_location(models, home)
    assert "tiny_sparse/sparse_index" in before["assets"] and "models_yaml_sensor" in before["sensors"]

    models.write_text(BROKEN)
    after, log = load_location(models, home)
    assert after == before
    # The load says what is wrong (file, model, field) and what it serves instead.
    assert f"{models}: model 'tiny_sparse', field 'kind': unknown value 'sparce'" in log
    assert "loads the last valid version" in log

    models.write_text(
        MODELS_YAML.replace("sequence_length: 32\n  - name: tiny_sparse", "sequence_length: 48\n  - name: tiny_sparse")
    )
    fixed, _ = load_location(models, home)
    assert fixed == before  # valid again: the file itself is loaded (and becomes the last valid version)
    assert load_registry_or_last_valid(models, root=home).registry.get("tiny_dense").sequence_length == 48


def test_a_first_load_of_a_broken_file_still_loads_the_location(models: Path, tmp_path: Path) -> None:
    models.write_text(BROKEN)
    loaded, log = load_location(models, tmp_path / "fresh-home")
    assert loaded["assets"] == ["corpus"]  # no valid version yet: no model groups, but the location is up
    assert "models_yaml_sensor" in loaded["sensors"]
    assert "field 'kind'" in log and "no models" in log


def test_the_last_valid_copy_is_only_what_validated(models: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert load_registry_or_last_valid(models, root=home).error is None
    copy = snapshot_path(models, home)
    assert copy.read_text() == MODELS_YAML

    models.write_text(BROKEN)
    loaded = load_registry_or_last_valid(models, root=home)
    assert loaded.snapshot == copy and copy.read_text() == MODELS_YAML  # the broken bytes never replace it
    assert loaded.registry.path == models  # sensors and checks re-read the real file, not the copy
    assert loaded.registry.names == ["tiny_dense", "tiny_sparse"]
    with pytest.raises(RegistryError, match="field 'kind'"):
        load_registry(models)
    assert "field 'kind'" in (loaded.error or "")


def test_models_yaml_sensor_names_file_model_and_field_while_the_file_is_broken(models: Path, tmp_path: Path) -> None:
    loaded = load_registry_or_last_valid(models, root=tmp_path / "home")
    defs = build_definitions(loaded.registry)
    models.write_text(BROKEN)
    sensor = defs.resolve_sensor_def("models_yaml_sensor")
    resources = {"storage": StorageResource(root=str(tmp_path / "home")), "backends": BackendResource()}
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs, resources=resources)
    skip = sensor.evaluate_tick(context).skip_message or ""
    assert f"{models}: model 'tiny_sparse', field 'kind': unknown value 'sparce'" in skip
    assert "keeps its last valid version (tiny_dense, tiny_sparse)" in skip


def test_matches_models_yaml_fails_with_the_error_while_the_file_is_broken(models: Path) -> None:
    spec = load_registry(models, check_builtin_limits=False).get("tiny_dense")
    assert matches_models_yaml(spec, models).passed

    models.write_text(
        MODELS_YAML.replace(
            "batch_size: 4\n    sequence_length: 32\n  - name: tiny_sparse",
            "batch_size: 8\n    sequence_length: 32\n  - name: tiny_sparse",
        )
    )
    edited = matches_models_yaml(spec, models)
    assert not edited.passed and edited.severity == dg.AssetCheckSeverity.WARN
    assert "changes batch_size" in (edited.description or "") and "Reload the code location" in edited.description

    models.write_text(BROKEN)
    broken = matches_models_yaml(spec, models)
    assert not broken.passed and broken.severity == dg.AssetCheckSeverity.WARN
    assert "model 'tiny_sparse', field 'kind'" in (broken.description or "")
