"""Corpus partitions: hash buckets of the document id (stable, balanced, decided by the id alone), and search across
partitions equal to search over the whole corpus, ties included."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from neuronforge.partitions import (
    Partition,
    PartitionError,
    bucket_of,
    bucket_sizes,
    partition_keys,
    rows_by_id,
    top_k_by_id,
)
from neuronforge.retrieval import RowGroups, dense_search
from neuronforge.sparse_index import SegmentedIndex, SparseIndex, brute_force_scores


def test_bucket_is_the_documented_hash_and_ignores_the_interpreters_hash_seed():
    ids = ["d0", "os.path.join", "naïve résumé", "x" * 300, ""]
    for doc_id in ids:
        digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
        assert bucket_of(doc_id, 7) == int.from_bytes(digest, "big") % 7
    code = f"from neuronforge.partitions import bucket_of; print([bucket_of(i, 7) for i in {ids!r}])"
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        seen.add(out.stdout.strip())
    assert seen == {str([bucket_of(i, 7) for i in ids])}


def test_buckets_are_balanced_and_stable_when_documents_come_and_go():
    ids = [f"doc-{i}" for i in range(20_000)]
    sizes = bucket_sizes(ids, 4)
    assert sum(sizes) == len(ids)
    assert all(abs(size - 5_000) < 250 for size in sizes), sizes  # a uniform hash: within 5% of an equal share
    before = {i: bucket_of(i, 4) for i in ids}
    # New documents, others removed, texts edited: no remaining document changes bucket (the id alone decides).
    after = ids[::3] + [f"new-{i}" for i in range(5_000)]
    assert all(bucket_of(i, 4) == before[i] for i in after if i in before)


def test_partition_keys_name_bucket_and_count():
    assert partition_keys(4) == ["0-of-4", "1-of-4", "2-of-4", "3-of-4"]
    assert partition_keys(1) == ["0-of-1"]
    part = Partition.parse("2-of-4")
    assert (part.index, part.count, part.key) == (2, 4, "2-of-4")
    docs = [f"d{i}" for i in range(200)]
    chosen = [list(Partition(i, 4).select(docs, id_of=str)) for i in range(4)]
    assert sorted(d for part in chosen for d in part) == sorted(docs)  # every document in exactly one partition
    assert all(part == [d for d in docs if d in part] for part in chosen)  # corpus order kept
    assert list(Partition(0, 1).select(docs, id_of=str)) == docs


@pytest.mark.parametrize("key", ["4-of-4", "p1", "1of4", "-1-of-4", "0-of-0", "0-of-5000", 3])
def test_bad_partition_keys_are_refused_with_the_expected_form(key):
    with pytest.raises(PartitionError, match="of|partition"):
        Partition.parse(key)


@pytest.mark.parametrize("count", [0, -1, True, 2.0, 5000])
def test_bad_counts_are_refused(count):
    with pytest.raises(PartitionError, match="partition count"):
        partition_keys(count)


# ------------------------------------------------------------------------------------------------ search across


def _corpus(seed: int, docs: int, vocab: int):
    """Chunks of `docs` documents (1-3 chunks each) with weights from {0.5, 1, 2}: many documents score exactly
    alike, so the tie rule decides which make the top k. Ids are not in sorted order in the corpus."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(docs)
    ids, chunk = [], []
    for d in order:
        for c in range(int(rng.integers(1, 4))):
            ids.append(f"doc{d:05d}")
            chunk.append(c)
    rows, per_row = len(ids), 4
    cols = rng.integers(0, vocab, size=(rows, per_row))
    data = rng.choice(np.array([0.5, 1.0, 2.0], dtype=np.float32), size=(rows, per_row))
    matrix = sp.csr_matrix((data.ravel(), cols.ravel(), np.arange(0, rows * per_row + 1, per_row)), (rows, vocab))
    queries = [
        (rng.choice(vocab, size=n, replace=False), rng.choice(np.array([1.0, 2.0]), size=n))
        for n in rng.integers(1, 4, size=80)
    ]
    return matrix, ids, np.asarray(chunk), queries


def _by_score_then_id(matrix, ids, query, k):
    """Independent of every index: scipy scores, per-document max, all documents sorted by (-score, id)."""
    groups = RowGroups.from_row_ids(ids)
    scores = groups.doc_scores(brute_force_scores(matrix, query))
    hits = sorted(((groups.doc_ids[i], float(s)) for i, s in enumerate(scores) if s > 0), key=lambda h: (-h[1], h[0]))
    return hits[:k]


def _partitioned(matrix, ids, count):
    parts = []
    for index in range(count):
        rows = [r for r, doc in enumerate(ids) if bucket_of(doc, count) == index]
        parts.append((matrix[rows], [ids[r] for r in rows], rows))
    return parts


def test_sparse_search_across_partitions_equals_one_index_over_the_corpus_ties_included():
    vocab = 60  # few terms: most queries tie many documents at the k-th score
    matrix, ids, _, queries = _corpus(3, 1_500, vocab)
    whole = SegmentedIndex([SparseIndex.build(matrix, ids, vocab)])
    segments = SegmentedIndex([SparseIndex.build(m, i, vocab) for m, i, _ in _partitioned(matrix, ids, 4)])
    longest_tie = 0
    for query in queries:
        for k in (1, 5, 10, 100, 5_000):
            want = _by_score_then_id(matrix, ids, query, k)
            assert top_k_by_id(segments, query, k) == want
            assert top_k_by_id(whole, query, k) == want
            assert top_k_by_id(segments, query, k, threads=3) == want
        scores = [s for _, s in _by_score_then_id(matrix, ids, query, 10_000)]
        if len(scores) > 10:
            longest_tie = max(longest_tie, scores.count(scores[9]))
    assert longest_tie > 20  # the corpus really has ties at the cut that reach far past k


def test_dense_search_across_partitions_equals_the_whole_corpus_ties_included():
    rng = np.random.default_rng(5)
    _, ids, chunk, _ = _corpus(4, 800, 10)
    # Few distinct vectors (each row one of 12): every query ties many documents.
    palette = rng.normal(size=(12, 16)).astype(np.float32)
    matrix = palette[rng.integers(0, 12, size=len(ids))]
    queries = rng.normal(size=(30, 16)).astype(np.float32)

    def search(rows_ids, rows_chunk, rows_matrix, k):
        order = rows_by_id(rows_ids, rows_chunk)
        return dense_search(rows_matrix[order], [rows_ids[i] for i in order], queries, k)

    whole = search(ids, chunk, matrix, 50)
    pieces = _partitioned(sp.csr_matrix(matrix), ids, 4)
    concatenated_rows = [r for _, _, rows in pieces for r in rows]
    parted = search([ids[r] for r in concatenated_rows], chunk[concatenated_rows], matrix[concatenated_rows], 50)
    assert list(whole) == list(parted)
    for qid in whole:
        assert list(whole[qid].items()) == list(parted[qid].items())
        scores = list(whole[qid].values())
        assert scores == sorted(scores, reverse=True)
        ranked = list(whole[qid])
        for a, b in zip(ranked, ranked[1:], strict=False):  # ties in id order
            assert whole[qid][a] > whole[qid][b] or a < b
    assert any(len(set(hits.values())) < len(hits) for hits in whole.values())  # ties were there to order
