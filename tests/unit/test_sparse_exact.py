"""Exactness of the compiled search, ties included: against an independent brute force on small and medium random
indexes (several row blocks, thread ranges), across segments against one unpartitioned index, and the streaming
build against the in-memory one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from neuronforge.retrieval import RowGroups
from neuronforge.sparse_build import csr_batches, write_index
from neuronforge.sparse_index import SegmentedIndex, SparseIndex, brute_force_scores, merge_top_k
from neuronforge.sparse_kernel import BLOCK_ROWS


def _tied_matrix(rng, rows: int, vocab: int, per_row: int) -> sp.csr_matrix:
    """Weights from {0.5, 1, 2}: many rows score exactly alike, so the tie rule decides the cut at k."""
    cols = rng.integers(0, vocab, size=(rows, per_row))
    data = rng.choice(np.array([0.5, 1.0, 2.0], dtype=np.float32), size=(rows, per_row))
    indptr = np.arange(0, rows * per_row + 1, per_row)
    return sp.csr_matrix((data.ravel(), cols.ravel(), indptr), shape=(rows, vocab))  # duplicates summed on build


def _queries(rng, n: int, vocab: int, terms: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (rng.choice(vocab, size=terms, replace=False), rng.choice(np.array([1.0, 2.0, 0.25]), size=terms))
        for _ in range(n)
    ]


def _expected(matrix, groups: RowGroups, query, k: int) -> list[tuple[str, float]]:
    """Independent of the kernel: scipy scores, per-document max, full stable sort by (-score, document number)."""
    scores = groups.doc_scores(brute_force_scores(matrix, query))
    order = np.lexsort((np.arange(scores.size), -scores))
    return [(groups.doc_ids[i], float(scores[i])) for i in order[:k] if scores[i] > 0]


def _chunked_ids(rng, rows: int, docs: int) -> list[str]:
    """Rows grouped by document (1-4 chunks each), numbered in order, so a partition by rows is one by documents."""
    sizes = rng.integers(1, 5, size=docs)
    sizes[-1] += max(0, rows - sizes.sum())
    row_doc = np.repeat(np.arange(docs), sizes)[:rows]
    return [f"d{i}" for i in row_doc]


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    vocab = 300
    matrix = _tied_matrix(rng, 2_000, vocab, 6)
    ids = _chunked_ids(rng, 2_000, 900)
    return matrix, ids, vocab, _queries(rng, 60, vocab, 5)


@pytest.fixture(scope="module")
def medium():
    # Three row blocks (rows > 2 * 65536): thread ranges and segment cuts fall inside blocks.
    rng = np.random.default_rng(12)
    vocab, rows = 2_000, 2 * BLOCK_ROWS + 7_001
    matrix = _tied_matrix(rng, rows, vocab, 5)
    ids = _chunked_ids(rng, rows, rows * 2 // 3)
    return matrix, ids, vocab, _queries(rng, 25, vocab, 12)


@pytest.mark.parametrize("data", ["small", "medium"])
def test_search_equals_brute_force_with_ties(data, request):
    matrix, ids, vocab, queries = request.getfixturevalue(data)
    index = SparseIndex.build(matrix, ids, vocab)
    groups = RowGroups.from_row_ids(ids)
    ties_at_cut = 0
    for query in queries:
        for k in (1, 10, 50):
            want = _expected(matrix, groups, query, k)
            for threads in (1, 2, 3):
                got = index.search(query, k, threads=threads)
                assert got == want, (data, k, threads)  # same ids, same order, bitwise-equal float64 scores
        full = _expected(matrix, groups, query, 11)
        ties_at_cut += len(full) == 11 and full[9][1] == full[10][1]
    assert ties_at_cut >= len(queries) // 3, "the data must put ties at the k = 10 cut, or ties are not tested"


def test_one_row_per_document_path(small):
    matrix, _, vocab, queries = small
    ids = [f"r{i}" for i in range(matrix.shape[0])]
    index = SparseIndex.build(matrix, ids, vocab)
    assert index.rows_are_docs
    groups = RowGroups.from_row_ids(ids)
    for query in queries[:20]:
        assert index.search(query, 10) == _expected(matrix, groups, query, 10)
        assert index.search(query, 10_000) == _expected(matrix, groups, query, 10_000)


@pytest.mark.parametrize("data", ["small", "medium"])
def test_segments_equal_one_unpartitioned_index(data, request, tmp_path):
    matrix, ids, vocab, queries = request.getfixturevalue(data)
    whole = SparseIndex.build(matrix, ids, vocab)
    # Cut at document boundaries into uneven segments, one of them tiny, each saved and opened from its folder.
    starts = [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    cuts = [0, starts[len(starts) // 7], starts[len(starts) // 7 + 1], starts[len(starts) * 3 // 4], len(ids)]
    folders = []
    for n, (lo, hi) in enumerate(zip(cuts, cuts[1:], strict=False)):
        SparseIndex.build(matrix[lo:hi], ids[lo:hi], vocab).save(tmp_path / f"seg{n}")
        folders.append(tmp_path / f"seg{n}")
    segmented = SegmentedIndex.open(folders)
    assert (segmented.n_docs, segmented.n_rows, segmented.nnz) == (whole.n_docs, whole.n_rows, whole.nnz)
    for query in queries:
        for k in (1, 10, 40):
            want = whole.search(query, k, threads=1)
            for threads in (1, 2, 4, 8):
                assert segmented.search(query, k, threads=threads) == want, (k, threads)


def test_segments_refuse_shared_documents_and_other_vocabularies(small):
    matrix, ids, vocab, _ = small
    a = SparseIndex.build(matrix[:10], ids[:10], vocab)
    with pytest.raises(ValueError, match="in segments 0 and 1.*partition the corpus by document"):
        SegmentedIndex([a, SparseIndex.build(matrix[:10], ids[:10], vocab)])
    other = SparseIndex.build(sp.csr_matrix(matrix[10:20].toarray()[:, :100]), ids[10:20], 100)
    with pytest.raises(ValueError, match="vocab_size"):
        SegmentedIndex([a, other])
    with pytest.raises(ValueError, match="at least one segment"):
        SegmentedIndex([])


def test_merge_top_k_breaks_ties_by_document_number():
    parts = [
        (np.array([5, 1]), np.array([2.0, 1.0])),
        (np.array([9, 3, 4]), np.array([2.0, 2.0, 1.0])),
        (np.array([], dtype=np.int64), np.array([])),
    ]
    docs, scores = merge_top_k(parts, 4)
    assert docs.tolist() == [3, 5, 9, 1] and scores.tolist() == [2.0, 2.0, 2.0, 1.0]


@pytest.mark.parametrize("data", ["small", "medium"])
def test_streaming_build_writes_the_same_folder(data, request, tmp_path):
    matrix, ids, vocab, queries = request.getfixturevalue(data)
    SparseIndex.build(matrix, ids, vocab).save(tmp_path / "memory", extra_meta={"model": "m"})
    # Batches that cut documents and row blocks anywhere.
    write_index(tmp_path / "stream", csr_batches(matrix, ids, 9_973), vocab, extra_meta={"model": "m"})
    for name in sorted(p.name for p in (tmp_path / "memory").iterdir()):
        assert (tmp_path / "stream" / name).read_bytes() == (tmp_path / "memory" / name).read_bytes(), name
    loaded = SparseIndex.load(tmp_path / "stream")
    assert loaded.search(queries[0], 10) == SparseIndex.build(matrix, ids, vocab).search(queries[0], 10)


def test_streaming_build_refuses_scattered_chunks_and_changing_batches(tmp_path):
    matrix = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="'a' has chunks apart"):
        write_index(tmp_path / "x", csr_batches(matrix, ["a", "b", "a"], 2), 3)
    calls = iter([[(matrix, ["a", "b", "c"])], [(matrix[:2], ["a", "b"])]])
    with pytest.raises(ValueError, match="repeatable"):
        write_index(tmp_path / "y", lambda: next(calls), 3)
    assert not (tmp_path / "y").exists()
