"""Stage records: keyed by what produced them, one reader for runs, checks, sensors and the CLI."""

from __future__ import annotations

import json

import pytest

from neuronforge.records import RecordMissingError, RecordStore, asset_name, partition_name, split_partition


def test_records_are_keyed_and_current_follows_the_last_write(tmp_path):
    store = RecordStore(tmp_path)
    first = store.write("corpus_embeddings", "minilm", "aaa111", {"dir": "/x", "chunks": 3})
    second = store.write("corpus_embeddings", "minilm", "bbb222", {"dir": "/y", "chunks": 5})
    # Both stay readable by key: a check of the first run still finds its own output.
    assert store.read("corpus_embeddings", "minilm", "aaa111").data == {"dir": "/x", "chunks": 3}
    assert store.read("corpus_embeddings", "minilm", "bbb222")["chunks"] == 5
    assert store.current("corpus_embeddings", "minilm").key == second.key
    assert first.path != second.path and first.path.is_file()
    assert json.loads(first.path.read_text())["key"] == "aaa111"


def test_missing_records_name_the_asset_to_materialize(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(RecordMissingError, match=r"materialize minilm/corpus_embeddings first"):
        store.current("corpus_embeddings", "minilm")
    with pytest.raises(RecordMissingError, match=r"materialize retrieval_eval again"):
        store.read("retrieval_eval", "default", "k1")
    assert store.current_or_none("corpus", "default") is None
    assert asset_name("corpus", "default") == "corpus"


def test_names_lists_outputs_with_a_current_record(tmp_path):
    store = RecordStore(tmp_path)
    assert store.names("export") == []
    store.write("export", "b_model", "k1", {})
    store.write("export", "a_model", "k2", {})
    store.write("export", "c_model", "k3", {}, current=False)
    assert store.names("export") == ["a_model", "b_model"]


@pytest.mark.parametrize("key", ["", "../escape", "a/b", "current", "x" * 200, ".hidden"])
def test_keys_cannot_escape_or_shadow_the_pointer(tmp_path, key):
    with pytest.raises(ValueError, match="invalid record key"):
        RecordStore(tmp_path).write("export", "m", key, {})


def test_stage_and_name_parts_are_validated(tmp_path):
    with pytest.raises(ValueError, match="invalid record stage/name part"):
        RecordStore(tmp_path).write("../x", "m", "k", {})
    with pytest.raises(ValueError, match="invalid record stage/name part"):
        RecordStore(tmp_path).write("export", "m/../../x", "k", {})


def test_an_unreadable_record_is_a_clear_error(tmp_path):
    store = RecordStore(tmp_path)
    record = store.write("corpus", "default", "fp1", {"path": "/c"})
    record.path.write_text("{torn")
    with pytest.raises(RecordMissingError, match="unreadable.*materialize corpus again"):
        store.current("corpus", "default")


def test_each_partition_has_its_own_records_and_current(tmp_path):
    store = RecordStore(tmp_path)
    for index in range(2):
        name = partition_name("m", f"{index}-of-2")
        store.write("corpus_embeddings", name, f"k{index}", {"partition": index})
    # Two partitions written one after the other: neither pointer moved the other's.
    assert [store.current("corpus_embeddings", f"m/{i}-of-2").key for i in range(2)] == ["k0", "k1"]
    assert store.names("corpus_embeddings") == ["m/0-of-2", "m/1-of-2"]
    record = store.current("corpus_embeddings", "m/1-of-2")
    assert record.partition == "1-of-2" and split_partition(record.name) == ("m", "1-of-2")
    assert split_partition("m") == ("m", None) and store.write("export", "m", "k", {}).partition is None
    assert asset_name("corpus_embeddings", "m/1-of-2") == "m/corpus_embeddings"
    with pytest.raises(RecordMissingError, match="materialize m/corpus_embeddings first"):
        store.current("corpus_embeddings", "m/0-of-4")
    with pytest.raises(ValueError, match="partition keys look like '1-of-4'"):
        partition_name("m", "../x")
