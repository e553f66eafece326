"""The Neuron card snippets and the published layout of a Neuron chat repo, without exporting anything (the snippets
themselves run against the loopback Hub in test_neuron_repos.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from neuronforge.artifacts import MANIFEST, json_bytes, write_manifest
from neuronforge.backends.neuron_repo import NEURON_CONFIG, hub_files, hub_loadable_layout
from neuronforge.neuron_card import neuron_usage_snippet


@pytest.mark.parametrize("kind", ["dense", "sparse", "chat"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_snippets_are_python_that_names_a_private_hub_only(kind, batch_size):
    manifest = {"kind": kind, "shapes": {"batch_size": batch_size, "sequence_length": 64}, "files": {}}
    private = neuron_usage_snippet(manifest, repo_id="o/r", tag="ck-1", endpoint="http://127.0.0.1:8090/")
    public = neuron_usage_snippet(manifest, repo_id="o/r", tag="ck-1", endpoint="https://huggingface.co")
    assert private.startswith('import os\n\nos.environ["HF_ENDPOINT"] = "http://127.0.0.1:8090"')
    assert "HF_ENDPOINT" not in public
    for snippet in (private, public):
        compile(snippet, f"<{kind} card>", "exec")
        texts = [line for line in snippet.splitlines() if line.startswith("texts = ")]
        if texts:  # an encoder example never sends more rows than the compiled batch
            assert texts[0].count('"') // 2 <= batch_size


def test_a_neuron_chat_repo_names_itself_as_its_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"graphs")
    (tmp_path / NEURON_CONFIG).write_text(json.dumps({"checkpoint_id": None, "tp_degree": 2}))
    (tmp_path / "checkpoint" / "weights").mkdir(parents=True)
    (tmp_path / "checkpoint" / "weights" / "tp0_sharded_checkpoint.safetensors").write_bytes(b"w0")
    hub_loadable_layout(tmp_path)
    assert (tmp_path / "weights" / "tp0_sharded_checkpoint.safetensors").read_bytes() == b"w0"
    assert not (tmp_path / "checkpoint").exists()
    manifest = write_manifest(tmp_path, {"kind": "chat", "backend": "neuron", "compile_key": "k"})

    files = hub_files(tmp_path, manifest, repo_id="org/repo", revision="ck-k")
    config = json.loads(files[NEURON_CONFIG])
    assert (config["checkpoint_id"], config["checkpoint_revision"], config["tp_degree"]) == ("org/repo", "ck-k", 2)
    published = json.loads(files[MANIFEST])
    assert published["files"][NEURON_CONFIG] == hashlib.sha256(files[NEURON_CONFIG]).hexdigest()
    assert {k: v for k, v in published["files"].items() if k != NEURON_CONFIG} == {
        k: v for k, v in manifest["files"].items() if k != NEURON_CONFIG
    }
    assert files == hub_files(tmp_path, manifest, repo_id="org/repo", revision="ck-k")  # deterministic bytes
    assert files[MANIFEST] == json_bytes(published)
    for other in ({**manifest, "kind": "dense"}, {**manifest, "backend": "torch"}):
        assert hub_files(tmp_path, other, repo_id="org/repo", revision="ck-k") == {}


def test_an_export_without_rank_checkpoints_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="no checkpoint/weights/ rank checkpoints"):
        hub_loadable_layout(tmp_path)
