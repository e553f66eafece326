"""A model sourced from a Hub (the loopback server) at a pinned revision goes through source_model and export."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from huggingface_hub import HfApi
from pipeline_helpers import checks, materialize, metadata, pipeline_resources

from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions

pytestmark = pytest.mark.slow

REGISTRY = """
models:
  - name: remote_minilm
    kind: dense
    source: hub:acme/minilm
    revision: {revision}
    batch_size: 4
    sequence_length: 64
"""


def test_hub_model_at_pinned_revision(tmp_path, hub, minilm_dir, monkeypatch):
    api = HfApi(endpoint=hub.url)
    api.create_repo("acme/minilm")
    first = api.upload_folder(repo_id="acme/minilm", folder_path=minilm_dir).oid
    # A pickled weights file appears upstream: source_model must not download it (safetensors only).
    second = api.upload_file(
        repo_id="acme/minilm", path_or_fileobj=b"not a pickle", path_in_repo="pytorch_model.bin"
    ).oid
    monkeypatch.setenv("HF_ENDPOINT", hub.url)

    registry_file = tmp_path / "models.yaml"
    registry_file.write_text(REGISTRY.format(revision=first))
    defs = build_definitions(load_registry(registry_file), resources=pipeline_resources(tmp_path / "home", hub.url))
    selection = dg.AssetSelection.assets(["remote_minilm", "source_model"], ["remote_minilm", "export"])
    result = materialize(defs, selection)
    assert result.success
    source = metadata(result, "remote_minilm/source_model")
    assert source["revision"] == first != second  # pinned: the later upstream commit is not used
    assert checks(result)["remote_minilm/export:matches_reference"] is True

    registry_file.write_text(REGISTRY.format(revision="main"))
    defs = build_definitions(load_registry(registry_file), resources=pipeline_resources(tmp_path / "home", hub.url))
    result = materialize(defs, dg.AssetSelection.assets(["remote_minilm", "source_model"]))
    assert metadata(result, "remote_minilm/source_model")["revision"] == second
    downloaded = {p.name for p in Path(metadata(result, "remote_minilm/source_model")["path"]).iterdir()}
    assert "model.safetensors" in downloaded and "pytorch_model.bin" not in downloaded


def test_unknown_revision_is_a_clear_error(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    HfApi(endpoint=hub.url).create_repo("acme/empty", exist_ok=True)
    registry_file = tmp_path / "models.yaml"
    registry_file.write_text(REGISTRY.replace("acme/minilm", "acme/empty").format(revision="no-such-branch"))
    defs = build_definitions(load_registry(registry_file), resources=pipeline_resources(tmp_path / "home", hub.url))
    result = materialize(defs, dg.AssetSelection.assets(["remote_minilm", "source_model"]))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert "revision 'no-such-branch' does not exist" in message and "models.yaml" in message
