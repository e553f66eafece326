"""corpus.yaml / NEURONFORGE_CORPUS: where the corpus configuration comes from, and errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neuronforge.corpus.config import (
    DEFAULT_CORPUS_FILE,
    DEFAULT_RRF_K,
    CorpusConfig,
    CorpusConfigError,
    corpus_config_path,
    load_corpus_config,
)


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_repository_corpus_yaml_is_valid_and_means_the_builtin_corpus():
    config = load_corpus_config(environ={})
    assert config.source is None and config.origin == str(DEFAULT_CORPUS_FILE)
    assert config.rrf_k == DEFAULT_RRF_K
    # The file documents every setting the resource has, with the library defaults.
    raw = yaml.safe_load(DEFAULT_CORPUS_FILE.read_text())
    assert set(raw) == set(CorpusConfig().resource_fields())
    assert {k: v for k, v in config.resource_fields().items() if k != "source"} == {
        k: v for k, v in CorpusConfig().resource_fields().items() if k != "source"
    }


def test_relative_sources_resolve_beside_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    config = load_corpus_config(write(tmp_path / "c.yaml", {"source": "data", "shard_chunks": 64}), environ={})
    assert config.source == str(tmp_path / "data") and config.shard_chunks == 64


def test_neuronforge_corpus_names_a_source_or_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs.jsonl").write_text('{"_id": "a", "text": "x"}\n')
    from_source = load_corpus_config(environ={"NEURONFORGE_CORPUS": "docs.jsonl"})
    assert from_source.source == str(tmp_path / "docs.jsonl") and "NEURONFORGE_CORPUS" in from_source.origin
    assert load_corpus_config(environ={"NEURONFORGE_CORPUS": "builtin"}).source is None
    file = write(tmp_path / "mine.yml", {"source": "docs.jsonl", "ndcg_floor": 0.5})
    assert corpus_config_path({"NEURONFORGE_CORPUS": str(file)}) == file
    from_file = load_corpus_config(environ={"NEURONFORGE_CORPUS": str(file)})
    assert (from_file.source, from_file.ndcg_floor) == (str(tmp_path / "docs.jsonl"), 0.5)
    with pytest.raises(CorpusConfigError, match=r"missing.yaml \(NEURONFORGE_CORPUS=.*not found"):
        load_corpus_config(environ={"NEURONFORGE_CORPUS": str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sourse": "x"}, r"field 'sourse': is not a known setting"),
        ({"bad_input": "ignore"}, r"field 'bad_input': unknown value 'ignore'; use one of skip, fail"),
        ({"shard_chunks": 0}, r"field 'shard_chunks': must be an integer >= 1"),
        ({"partitions": 0}, r"field 'partitions': must be an integer >= 1"),
        ({"partitions": 5000}, r"field 'partitions': must be an integer <= 1024"),
        ({"rrf_k": "sixty"}, r"field 'rrf_k': must be an integer >= 0"),
        ({"ndcg_floor": 1.5}, r"field 'ndcg_floor': must be between 0.0 and 1.0"),
        ({"rrf_weights": [1, 2]}, r"field 'rrf_weights': must map"),
        ({"rrf_weights": {"dense": "high"}}, r"field 'rrf_weights.dense': must be a number"),
        ({"source": 5}, r"field 'source': must be a path"),
        (["a", "list"], r"must be a mapping of settings"),
    ],
)
def test_invalid_settings_name_file_and_field(tmp_path, data, message):
    path = write(tmp_path / "corpus.yaml", data)
    with pytest.raises(CorpusConfigError, match=message) as err:
        load_corpus_config(path, environ={})
    assert str(path) in str(err.value)


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "corpus.yaml"
    path.write_text("source: [unclosed\n")
    with pytest.raises(CorpusConfigError, match="is not valid YAML"):
        load_corpus_config(path, environ={})
