"""Resumable, incremental corpus encoding: a killed run resumes; a new file encodes only its own shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from neuronforge.corpus import BadInputPolicy, CorpusError, iter_documents
from neuronforge.shards import (
    SHARD_LIST,
    dense_matrix,
    dense_table,
    encode_shards,
    plan_corpus_shards,
    plan_shards,
    read_shards,
    sparse_matrix,
    sparse_table,
)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def write_corpus(folder, files: dict[str, int]) -> None:
    folder.mkdir(exist_ok=True)
    for name, docs in files.items():
        (folder / name).write_text(
            "\n".join(
                json.dumps({"_id": f"{name}-{i}", "title": name, "text": f"document {i} of {name}. " * 20})
                for i in range(docs)
            )
        )


class CountingEncoder:
    """Stands in for the model: deterministic vectors, and a count of what was encoded."""

    def __init__(self, fail_after: int | None = None):
        self.chunks = 0
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, chunks):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed mid-run")
        self.calls += 1
        self.chunks += len(chunks)
        vectors = np.array([[len(c.text), c.chunk_index, hash(c.id) % 97] for c in chunks], dtype=np.float32)
        return dense_table(chunks, vectors)


def run(folder, out, tokenizer, encoder, key="k1"):
    shards = plan_shards(iter_documents(folder), tokenizer, 64, 8, shard_chunks=10)
    return encode_shards(shards, out, key, encoder)


def test_killed_run_resumes_without_re_encoding(tmp_path, tokenizer):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"a.jsonl": 12})
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out, tokenizer, CountingEncoder(fail_after=2))
    finished = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert len(finished) == 2 and not (out / SHARD_LIST).exists()

    encoder = CountingEncoder()
    result = run(corpus, out, tokenizer, encoder)
    assert result.reused == 2 and encoder.calls == len(result.shards) - 2
    assert result.documents == 12 and result.chunks == read_shards(out).num_rows
    ids = read_shards(out, ["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids))


def test_new_file_encodes_only_its_shards_and_new_key_re_encodes_all(tmp_path, tokenizer):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(corpus, {"a.jsonl": 6, "c.jsonl": 6})
    first = run(corpus, out, tokenizer, CountingEncoder())
    write_corpus(corpus, {"b.jsonl": 3})  # sorts between a and c: must not disturb c's shards
    encoder = CountingEncoder()
    second = run(corpus, out, tokenizer, encoder)
    assert second.reused == len(first.shards)
    assert encoder.chunks == second.chunks - first.chunks > 0

    (corpus / "c.jsonl").unlink()
    third = run(corpus, out, tokenizer, CountingEncoder())
    assert third.removed_stale > 0 and len(list(out.glob("shard-*.parquet"))) == len(third.shards)

    encoder = CountingEncoder()
    run(corpus, out, tokenizer, encoder, key="k2")  # a new export: nothing can be reused
    assert encoder.chunks == third.chunks


def test_tables_round_trip(tmp_path, tokenizer):
    import scipy.sparse as sp

    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"a.jsonl": 2})
    chunks = next(plan_shards(iter_documents(corpus), tokenizer, 64, 0, 100)).chunks
    vectors = np.random.default_rng(0).random((len(chunks), 5), dtype=np.float32)
    np.testing.assert_array_equal(dense_matrix(dense_table(chunks, vectors)), vectors)
    matrix = sp.random(len(chunks), 50, density=0.2, format="csr", dtype=np.float32, random_state=1)
    back = sparse_matrix(sparse_table(chunks, matrix), 50)
    assert (back != matrix).nnz == 0
    back.sort_indices()  # writable: scipy's in-place methods work on what the reader returns


def test_plan_corpus_shards_streams_the_source_with_its_policy(tmp_path, tokenizer):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"a.jsonl": 12, "b.jsonl": 3})
    planned = list(plan_corpus_shards(corpus, None, tokenizer, 64, 8, 10))
    expected = list(plan_shards(iter_documents(corpus), tokenizer, 64, 8, shard_chunks=10))
    assert planned == expected and {s.source for s in planned} == {"a.jsonl", "b.jsonl"}

    with open(corpus / "b.jsonl", "a") as fh:
        fh.write('\n{"_id": "broken", ')
    skipped = list(plan_corpus_shards(corpus, BadInputPolicy(mode="skip"), tokenizer, 64, 8, 10))
    assert skipped == expected
    with pytest.raises(CorpusError, match="malformed_json"):
        list(plan_corpus_shards(corpus, BadInputPolicy(mode="fail"), tokenizer, 64, 8, 10))


def test_damaged_shards_are_detected_logged_and_re_encoded(tmp_path, tokenizer, caplog):
    """A truncated shard used to be reused forever and give a raw ArrowInvalid on every read (#15)."""
    import logging

    from neuronforge.shards import ShardDamagedError, file_sha256

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(corpus, {"a.jsonl": 12, "b.jsonl": 6})
    first = run(corpus, out, tokenizer, CountingEncoder())
    listed = json.loads((out / SHARD_LIST).read_text())["files"]
    assert set(listed) == set(first.shards)
    for name in first.shards:  # the list records each shard's sha256 and row count
        assert listed[name]["sha256"] == file_sha256(out / name)
        assert listed[name]["rows"] == read_shards(out, names=[name]).num_rows
    truncated, flipped = out / first.shards[0], out / first.shards[1]
    truncated.write_bytes(truncated.read_bytes()[:-40])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte off: only the sha256 can tell
    flipped.write_bytes(bytes(data))

    with pytest.raises(ShardDamagedError, match=rf"{truncated.name} is damaged or missing.*Materialize"):
        read_shards(out, ["chunk_id"], first.shards)
    with pytest.raises(ShardDamagedError, match=rf"{flipped.name} is damaged: sha256"):
        read_shards(out, ["chunk_id"], [flipped.name], files=listed)

    encoder = CountingEncoder()
    with caplog.at_level(logging.WARNING):
        second = encode_shards(
            plan_shards(iter_documents(corpus), tokenizer, 64, 8, shard_chunks=10),
            out,
            "k1",
            encoder,
            logging.getLogger("shards"),
        )
    assert (second.repaired, second.reused, encoder.calls) == (2, len(first.shards) - 2, 2)
    assert f"shard {truncated.name} is damaged (sha256" in caplog.text
    assert f"shard {flipped.name} is damaged (sha256" in caplog.text
    assert json.loads((out / SHARD_LIST).read_text())["files"] == listed  # the same bytes again
    assert read_shards(out, ["chunk_id"], second.shards, files=listed).num_rows == second.chunks

    # Without a shard list naming it (a run killed before writing one), a shard is judged by its footer and rows.
    (out / SHARD_LIST).unlink()
    truncated.write_bytes(truncated.read_bytes()[:-40])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = encode_shards(
            plan_shards(iter_documents(corpus), tokenizer, 64, 8, shard_chunks=10),
            out,
            "k1",
            CountingEncoder(),
            logging.getLogger("shards"),
        )
    assert (third.repaired, third.reused) == (1, len(first.shards) - 1)
    assert f"shard {truncated.name} is damaged (unreadable (ArrowInvalid" in caplog.text


def test_a_partition_plans_exactly_its_documents_and_an_edit_elsewhere_keeps_its_shards(tmp_path, tokenizer):
    from neuronforge.partitions import Partition

    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"a.jsonl": 30, "b.jsonl": 12})

    def planned(partition):
        return list(plan_corpus_shards(corpus, None, tokenizer, 64, 8, 10, partition=partition))

    whole = [c for shard in planned(None) for c in shard.chunks]
    parts = [planned(Partition(i, 3)) for i in range(3)]
    for i, shards in enumerate(parts):
        assert all(Partition(i, 3).contains(c.doc_id) for s in shards for c in s.chunks)
    # Together the partitions hold every chunk once, each partition in corpus order.
    assert sorted(c.id for p in parts for s in p for c in s.chunks) == sorted(c.id for c in whole)
    # A document added to a.jsonl changes only its own partition's shards.
    with (corpus / "a.jsonl").open("a") as fh:
        fh.write("\n" + json.dumps({"_id": "a.jsonl-new", "title": "a", "text": "a new document. " * 20}))
    moved = next(i for i in range(3) if Partition(i, 3).contains("a.jsonl-new"))
    for i, before in enumerate(parts):
        after = planned(Partition(i, 3))
        same = [s.name("k") for s in after] == [s.name("k") for s in before]
        assert same == (i != moved)
