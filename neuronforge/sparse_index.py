"""A SPLADE inverted index with exact top-k search, stored as memory-mappable numpy files; several such indexes
(segments, e.g. one per corpus partition) searched as one with an exact merge.

Rows are chunks, each with the id of the document it came from; a document's score for a query is the MAX over its
chunks' dot products (the best passage decides, as in MaxP passage-level retrieval), so a long document is not
rewarded for merely having many chunks. Chunks of a document are adjacent rows (`build` reorders them so).

Search is exact (neuronforge/sparse_kernel.py, compiled): a query touches only its terms' posting lists; products
are summed per row in float64 into a reused buffer (scores equal `brute_force_scores` bitwise), documents take the
MAX over their rows, and the top k come from a heap over touched documents ordered by (-score, document number), so
ties are deterministic: the document that comes first in the index wins. Only documents sharing at least one term
with the query (score > 0) are returned. Weights must be non-negative (SPLADE's log1p(relu(.)) always is), which
makes "matched" and "score > 0" the same thing. A search can split the rows into document ranges searched on
several threads (the kernel releases the GIL); their top-k lists merge exactly, because the ranges share no document.

On-disk format (folder, written atomically; FORMAT_VERSION 2). Term-major, postings blocked by row: row block b holds
rows b*65536 .. b*65536+65535, and a posting stores only its row's low 16 bits, so a posting costs 6 bytes (2 + 4)
instead of 8 and a thread's row range maps to whole blocks plus two binary searches:

    meta.json             {"format": "neuronforge-sparse-index", "format_version": 2, "vocab_size": V, "rows": R,
                           "documents": D, "nnz": N, "row_blocks": B, "aggregation": "max", "stats": {...}, ...}
    postings_blocks.npy   int64[V, B + 1]  term t's postings in row block b are entries blocks[t, b]:blocks[t, b+1]
                                           of the two arrays below (blocks[t, B] == blocks[t + 1, 0])
    postings_lows.npy     uint16[N]        row number & 0xFFFF, ascending within a (term, block)
    postings_weights.npy  float32[N]       the row's weight for the term (kept float: quantised weights reorder
                                           near-tied documents, see docs/sparse_search.md)
    row_doc.npy           int32[R]         document number of each row, non-decreasing (chunks of a document adjacent)
    doc_ids.json          [D strings]      document ids by document number

`SparseIndex.load(folder, mmap=True)` maps the three big arrays read-only (`np.load(mmap_mode="r")`), so opening an
index is O(V·B + R) and the OS pages in only the posting lists that queries touch. `neuronforge.sparse_build`
writes this format streaming over row batches (shards) with flat memory.

Segments: `SegmentedIndex([folder, ...])` searches indexes that share a vocabulary and no document as one index.
Document numbers run through the segments in the order given, so its results, ties included, are exactly those of
one index built over the segments' rows concatenated in that order.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import queue
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from neuronforge import sparse_kernel
from neuronforge.artifacts import atomic_dir
from neuronforge.retrieval import RowGroups, top_k_indices

FORMAT = "neuronforge-sparse-index"
FORMAT_VERSION = 2
# Below this many rows per range a second thread costs more (dispatch, merge) than it saves.
MIN_ROWS_PER_THREAD = 100_000

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IndexFormatError",
    "SegmentedIndex",
    "SparseIndex",
    "brute_force_scores",
    "brute_force_search",
    "merge_top_k",
    "sparsity_stats",
    "to_csr",
    "top_tokens",
]

Query = Any  # a 1 x V scipy sparse row, a dense [V] vector, or (term_ids, weights)
Hits = tuple[np.ndarray, np.ndarray]  # (document numbers int64, float64 scores), best first


class IndexFormatError(RuntimeError):
    """A folder is not a sparse index this code can read (missing files, other version, inconsistent arrays)."""


def to_csr(activations: Any, max_active_dims: int | None = None) -> sp.csr_matrix:
    """Dense [rows, V] activations (numpy or CPU torch) -> float32 CSR keeping each row's `max_active_dims` largest.

    Like SparseEncoder(max_active_dims=...), but ties at the cut keep the lowest term ids, so output is deterministic.
    Zeros are dropped.
    """
    a = np.asarray(activations, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"activations must be [rows, vocab], got shape {a.shape}")
    n_cols = a.shape[1]
    if max_active_dims is not None and max_active_dims <= 0:
        raise ValueError(f"max_active_dims must be positive or None, got {max_active_dims}")
    if max_active_dims is not None and max_active_dims < n_cols and a.shape[0]:
        k = max_active_dims
        kth = np.partition(a, n_cols - k, axis=1)[:, n_cols - k : n_cols - k + 1]
        keep = a > kth
        ties = a == kth
        keep |= ties & (np.cumsum(ties, axis=1) <= k - keep.sum(axis=1, keepdims=True))
        a = np.where(keep, a, np.float32(0))
    matrix = sp.csr_matrix(a, dtype=np.float32)
    matrix.eliminate_zeros()
    return matrix


def _query_terms(query: Query, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(term ids int64 ascending, float64 weights) of a query, duplicates summed, zeros dropped.

    Already-canonical input (sorted unique term ids, as a SparseEncoder row or a CSR row has) is taken without a
    scipy round trip: at a fraction of a millisecond a query, that conversion would be a visible share of a search.
    """
    if isinstance(query, tuple) or (sp.issparse(query) and query.format == "csr"):
        if isinstance(query, tuple):
            terms, weights = (np.asarray(x).ravel() for x in query)
            if terms.shape != weights.shape:
                raise ValueError(f"query term ids {terms.shape} and weights {weights.shape} differ in length")
        else:
            if query.shape[-1] != vocab_size or (query.ndim == 2 and query.shape[0] != 1):
                raise ValueError(f"query must be a 1 x {vocab_size} row, got shape {query.shape}")
            terms, weights = query.indices, query.data
        terms = terms.astype(np.int64, copy=False)
        weights = weights.astype(np.float64, copy=False)
        if terms.size and (terms.min() < 0 or terms.max() >= vocab_size):
            outside = terms[(terms < 0) | (terms >= vocab_size)]
            raise ValueError(f"query term ids outside [0, {vocab_size}): {outside[:5].tolist()} (wrong tokenizer?)")
        if terms.size > 1 and not bool(np.all(terms[1:] > terms[:-1])):
            order = np.argsort(terms, kind="stable")
            terms, weights = terms[order], weights[order]
            terms, starts = np.unique(terms, return_index=True)
            weights = np.add.reduceat(weights, starts)
    else:
        if sp.issparse(query):
            if query.shape[-1] != vocab_size or (query.ndim == 2 and query.shape[0] != 1):
                raise ValueError(f"query must be a 1 x {vocab_size} row, got shape {query.shape}")
            row = sp.csr_matrix(query, dtype=np.float64)
        else:
            dense = np.asarray(query, dtype=np.float64).ravel()
            if dense.size != vocab_size:
                raise ValueError(f"dense query has {dense.size} dims, the index vocabulary {vocab_size}")
            row = sp.csr_matrix(dense[None, :])
        row.sum_duplicates()
        terms, weights = row.indices.astype(np.int64), row.data
    if weights.size and (weights.min() < 0 or not np.isfinite(weights).all()):
        raise ValueError("query weights must be finite and non-negative (SPLADE output is)")
    keep = weights != 0
    return (terms, weights) if keep.all() else (terms[keep], weights[keep])


def row_blocks(n_rows: int) -> int:
    """Number of 65536-row blocks of an index with `n_rows` rows (at least one)."""
    return max(1, -(-n_rows // sparse_kernel.BLOCK_ROWS))


def blocked_postings(csc: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blocks, lows, weights) of a [rows, V] CSC matrix with sorted indices (see the format above)."""
    n_rows, vocab = csc.shape
    n_blocks = row_blocks(n_rows)
    rows = csc.indices.astype(np.int64)
    terms = np.repeat(np.arange(vocab, dtype=np.int64), np.diff(csc.indptr))
    counts = np.bincount(terms * n_blocks + (rows >> sparse_kernel.BLOCK_BITS), minlength=vocab * n_blocks)
    return (
        block_table(counts.reshape(vocab, n_blocks)),
        (rows & (sparse_kernel.BLOCK_ROWS - 1)).astype(np.uint16),
        csc.data.astype(np.float32),
    )


def block_table(counts: np.ndarray) -> np.ndarray:
    """[V, B] posting counts per (term, row block) -> the int64[V, B + 1] start offsets of the format."""
    vocab, n_blocks = counts.shape
    ends = np.cumsum(counts.ravel(), dtype=np.int64).reshape(vocab, n_blocks)
    table = np.empty((vocab, n_blocks + 1), dtype=np.int64)
    table[:, 1:] = ends
    table[:, 0] = ends[:, -1] - counts.sum(axis=1)
    return table


def merge_top_k(parts: Iterable[Hits], k: int) -> Hits:
    """Exact top-k of the union of top-k lists over disjoint document sets, by (-score, document number)."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    docs = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    order = np.lexsort((docs, -scores))[:k]  # lexsort: last key is primary
    return docs[order], scores[order]


@functools.cache
def _executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="sparse-search")


def _auto_threads(n_rows: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_rows // MIN_ROWS_PER_THREAD))


class SparseIndex:
    """Posting lists of a chunk x vocab SPLADE matrix, searched exactly; documents score the MAX over their chunks."""

    def __init__(
        self,
        blocks: np.ndarray,
        lows: np.ndarray,
        weights: np.ndarray,
        row_doc: np.ndarray,
        doc_ids: Sequence[str],
        vocab_size: int,
        meta: Mapping[str, Any] | None = None,
    ):
        self.blocks, self.lows, self.weights = blocks, lows, weights
        self.row_doc = row_doc
        self.doc_ids = list(doc_ids)
        self.vocab_size = int(vocab_size)
        self.meta = dict(meta or {})
        # Every document has a row and rows are grouped by document, so equal counts mean row i is document i.
        self.rows_are_docs = self.n_rows == self.n_docs
        self._buffers: queue.SimpleQueue[sparse_kernel.Buffers] = queue.SimpleQueue()

    @property
    def n_rows(self) -> int:
        return int(self.row_doc.shape[0])

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def nnz(self) -> int:
        return int(self.lows.shape[0])

    def __repr__(self) -> str:
        return f"SparseIndex(docs={self.n_docs}, rows={self.n_rows}, vocab={self.vocab_size}, nnz={self.nnz})"

    # ---------------------------------------------------------------------------------------------------- building

    @classmethod
    def build(cls, matrix: Any, ids: Sequence[str], vocab_size: int) -> SparseIndex:
        """Index a [rows, vocab] sparse matrix in memory; `ids[i]` is the document id of row i (chunks share it).

        Documents are numbered in order of first appearance. For corpora larger than memory, write the folder with
        `neuronforge.sparse_build.write_index` instead.
        """
        matrix = clean_matrix(matrix, vocab_size)
        if matrix.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for {matrix.shape[0]} matrix rows: give one document id per row")
        groups = RowGroups.from_row_ids(ids)
        order = np.argsort(groups.row_doc, kind="stable")  # chunks of a document become adjacent
        csc = matrix[order].tocsc()
        csc.sort_indices()
        blocks, lows, weights = blocked_postings(csc)
        index = cls(blocks, lows, weights, groups.row_doc[order].astype(np.int32), groups.doc_ids, vocab_size)
        index.meta["stats"] = active_stats(np.diff(matrix.indptr), vocab_size) | {
            "documents": index.n_docs,
            "terms_used": int(np.count_nonzero(np.diff(csc.indptr))),
        }
        return index

    # ------------------------------------------------------------------------------------------------- searching

    def doc_ranges(self, parts: int) -> list[tuple[int, int]]:
        """Split the rows into at most `parts` non-empty ranges that start and end at document boundaries."""
        cuts = {0, self.n_rows}
        for i in range(1, parts):
            row = i * self.n_rows // parts
            if 0 < row < self.n_rows:
                cuts.add(int(np.searchsorted(self.row_doc, self.row_doc[row], side="left")))
        edges = sorted(cuts)
        return [(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False) if hi > lo]

    def top_k_rows(self, terms: np.ndarray, qweights: np.ndarray, k: int, row_lo: int, row_hi: int) -> Hits:
        """The kernel over rows [row_lo, row_hi) (document boundaries), with a reused per-thread buffer."""
        try:
            buffers = self._buffers.get_nowait()
        except queue.Empty:
            buffers = sparse_kernel.Buffers(self.n_rows, self.n_docs)
        try:
            return sparse_kernel.top_k_range(
                terms,
                qweights,
                self.blocks,
                self.lows,
                self.weights,
                self.row_doc,
                self.rows_are_docs,
                row_lo,
                row_hi,
                k,
                buffers,
            )
        finally:
            self._buffers.put(buffers)

    def top_k(self, query: Query, k: int = 10, threads: int | None = None) -> Hits:
        """Exact top-k as (document numbers, scores), best first; `threads` None picks by size."""
        return search_parts([(self, 0)], query, k, threads)

    def search(self, query: Query, k: int = 10, threads: int | None = None) -> list[tuple[str, float]]:
        """Exact top-k documents by dot product: [(doc id, score)], best first, only documents with score > 0."""
        docs, scores = self.top_k(query, k, threads)
        return [(self.doc_ids[d], float(s)) for d, s in zip(docs.tolist(), scores.tolist(), strict=True)]

    def search_many(self, queries: Any, k: int = 10, threads: int | None = None) -> list[list[tuple[str, float]]]:
        """`search` for each row of a [queries, vocab] sparse matrix (or a list of queries)."""
        return [self.search(q, k, threads) for q in _query_rows(queries, self.vocab_size)]

    # ------------------------------------------------------------------------------------------------ persistence

    def stats(self) -> dict[str, Any]:
        return dict(self.meta.get("stats", {}))

    def save(self, folder: Path, extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the index folder atomically (see the module docstring for the format); return its meta."""
        with atomic_dir(Path(folder)) as tmp:
            np.save(tmp / "postings_blocks.npy", np.ascontiguousarray(self.blocks, dtype=np.int64))
            np.save(tmp / "postings_lows.npy", np.ascontiguousarray(self.lows, dtype=np.uint16))
            np.save(tmp / "postings_weights.npy", np.ascontiguousarray(self.weights, dtype=np.float32))
            meta = write_meta_and_docs(
                tmp, self.row_doc, self.doc_ids, self.vocab_size, self.nnz, self.stats(), extra_meta
            )
        self.meta = meta
        return meta

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> SparseIndex:
        """Open a saved index; with mmap the big arrays stay on disk (read-only) and are paged in on use."""
        folder = Path(folder)
        rebuild = "rebuild it (materialize the sparse_index asset)"
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise IndexFormatError(f"{folder} has no meta.json: it is not a sparse index; {rebuild}.")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{folder} is format {meta.get('format')!r} v{meta.get('format_version')}, this code reads "
                f"{FORMAT!r} v{FORMAT_VERSION}; {rebuild}."
            )
        mode = "r" if mmap else None
        try:
            blocks = np.load(folder / "postings_blocks.npy")
            lows = np.load(folder / "postings_lows.npy", mmap_mode=mode)
            weights = np.load(folder / "postings_weights.npy", mmap_mode=mode)
            row_doc = np.load(folder / "row_doc.npy")
            doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{folder}: unreadable index file ({exc}); {rebuild}.") from exc
        vocab, nnz, n_rows = meta["vocab_size"], meta["nnz"], meta["rows"]
        problems = []
        if blocks.shape != (vocab, row_blocks(n_rows) + 1) or (vocab and int(blocks[-1, -1]) != nnz):
            problems.append(f"postings_blocks shape {blocks.shape} vs vocab {vocab}, rows {n_rows}, nnz {nnz}")
        if lows.shape != (nnz,) or weights.shape != (nnz,) or lows.dtype != np.uint16:
            problems.append(f"postings arrays {lows.shape}/{weights.shape} vs nnz {nnz}")
        if row_doc.shape != (n_rows,) or len(doc_ids) != meta["documents"]:
            problems.append(f"row_doc {row_doc.shape} / {len(doc_ids)} doc ids vs meta {n_rows}/{meta['documents']}")
        elif n_rows and (row_doc[0] != 0 or row_doc[-1] != len(doc_ids) - 1 or np.any(np.diff(row_doc) < 0)):
            problems.append("row_doc is not grouped by document (0 .. documents-1, non-decreasing)")
        if problems:
            raise IndexFormatError(f"{folder} is inconsistent ({'; '.join(problems)}): partly copied? {rebuild}.")
        return cls(blocks, lows, weights, row_doc.astype(np.int32, copy=False), doc_ids, vocab, meta)


def clean_matrix(matrix: Any, vocab_size: int) -> sp.csr_matrix:
    """A float32 CSR copy without duplicates or zeros, checked for what an inverted index needs."""
    # A copy: sum_duplicates/eliminate_zeros work in place, and the caller's arrays may be read-only (Arrow).
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if matrix.shape[1] != vocab_size:
        raise ValueError(f"matrix has {matrix.shape[1]} columns but vocab_size={vocab_size}")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    if matrix.data.size and not np.isfinite(matrix.data).all():
        raise ValueError("matrix holds NaN/inf weights: the encoder diverged; check its output before indexing")
    if matrix.data.size and matrix.data.min() < 0:
        raise ValueError(
            "matrix holds negative weights: an inverted index needs non-negative (SPLADE) weights; "
            "use retrieval.dense_search for signed embeddings"
        )
    return matrix


def write_meta_and_docs(
    folder: Path,
    row_doc: np.ndarray,
    doc_ids: Sequence[str],
    vocab_size: int,
    nnz: int,
    stats: Mapping[str, Any],
    extra_meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The small files of an index folder (row_doc, doc_ids, meta); the postings are the writer's."""
    meta = {
        **dict(extra_meta or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vocab_size": int(vocab_size),
        "rows": int(row_doc.shape[0]),
        "documents": len(doc_ids),
        "nnz": int(nnz),
        "row_blocks": row_blocks(int(row_doc.shape[0])),
        "aggregation": "max",
        "stats": dict(stats),
    }
    np.save(folder / "row_doc.npy", np.ascontiguousarray(row_doc, dtype=np.int32))
    (folder / "doc_ids.json").write_text(json.dumps(list(doc_ids), ensure_ascii=False))
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def search_parts(parts: Sequence[tuple[SparseIndex, int]], query: Query, k: int, threads: int | None) -> Hits:
    """Exact top-k over indexes whose documents are numbered from the given offsets, on up to `threads` threads.

    Each index is cut into document ranges (more than one only when there are more threads than indexes); every
    range yields its own top k, and the union's top k by (-score, global document number) is the exact answer.
    """
    empty = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    if k <= 0 or not parts:
        return empty
    terms, qweights = _query_terms(query, parts[0][0].vocab_size)
    if not terms.size:
        return empty
    n_rows = sum(index.n_rows for index, _ in parts)
    threads = _auto_threads(n_rows) if threads is None else max(1, int(threads))
    tasks = []
    for index, offset in parts:
        share = max(1, round(threads * index.n_rows / max(n_rows, 1))) if threads > len(parts) else 1
        tasks += [(index, offset, lo, hi) for lo, hi in index.doc_ranges(share)]

    def run(task: tuple[SparseIndex, int, int, int]) -> Hits:
        index, offset, lo, hi = task
        docs, scores = index.top_k_rows(terms, qweights, k, lo, hi)
        return docs + offset, scores

    if threads == 1 or len(tasks) == 1:
        return merge_top_k(map(run, tasks), k)
    return merge_top_k(_executor().map(run, tasks), k)


class SegmentedIndex:
    """Several indexes (same vocabulary, disjoint documents) searched as one, exactly.

    Documents are numbered segment by segment in the order given, so results and their tie order equal one index
    built over all segments' rows concatenated in that order. `threads` spreads segments (and, with more threads
    than segments, document ranges inside them) over a thread pool.
    """

    def __init__(self, segments: Sequence[SparseIndex]):
        if not segments:
            raise ValueError("a SegmentedIndex needs at least one segment")
        vocabs = {s.vocab_size for s in segments}
        if len(vocabs) > 1:
            raise ValueError(f"segments disagree on vocab_size {sorted(vocabs)}: they must come from the same model")
        seen: dict[str, int] = {}
        for number, segment in enumerate(segments):
            for doc in segment.doc_ids:
                if seen.setdefault(doc, number) != number:
                    raise ValueError(
                        f"document {doc!r} is in segments {seen[doc]} and {number}: a document's chunks must all be "
                        "in one segment (partition the corpus by document)"
                    )
        self.segments = list(segments)
        self.vocab_size = vocabs.pop()
        self.offsets = np.cumsum([0] + [s.n_docs for s in segments])

    @classmethod
    def open(cls, folders: Iterable[Path], mmap: bool = True) -> SegmentedIndex:
        return cls([SparseIndex.load(Path(f), mmap=mmap) for f in folders])

    @property
    def n_docs(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.segments)

    @property
    def nnz(self) -> int:
        return sum(s.nnz for s in self.segments)

    def __repr__(self) -> str:
        return f"SegmentedIndex(segments={len(self.segments)}, docs={self.n_docs}, nnz={self.nnz})"

    def doc_id(self, number: int) -> str:
        segment = int(np.searchsorted(self.offsets, number, side="right")) - 1
        return self.segments[segment].doc_ids[number - int(self.offsets[segment])]

    def top_k(self, query: Query, k: int = 10, threads: int | None = None) -> Hits:
        """Exact top-k as (global document numbers, scores), best first."""
        parts = [(s, int(o)) for s, o in zip(self.segments, self.offsets[:-1], strict=True)]
        return search_parts(parts, query, k, threads)

    def search(self, query: Query, k: int = 10, threads: int | None = None) -> list[tuple[str, float]]:
        """Exact top-k documents over all segments: [(doc id, score)], best first, only score > 0."""
        docs, scores = self.top_k(query, k, threads)
        return [(self.doc_id(d), float(s)) for d, s in zip(docs.tolist(), scores.tolist(), strict=True)]

    def search_many(self, queries: Any, k: int = 10, threads: int | None = None) -> list[list[tuple[str, float]]]:
        return [self.search(q, k, threads) for q in _query_rows(queries, self.vocab_size)]


def _query_rows(queries: Any, vocab_size: int) -> list[Query]:
    if sp.issparse(queries):
        queries = sp.csr_matrix(queries)
        if queries.shape[1] != vocab_size:
            raise ValueError(f"queries have {queries.shape[1]} columns, the index vocabulary {vocab_size}")
        return [queries.getrow(i) for i in range(queries.shape[0])]
    return list(queries)


# ---------------------------------------------------------------------------------------------- exactness checks


def brute_force_scores(matrix: Any, query: Query) -> np.ndarray:
    """Per-row dot products `matrix @ query` with scipy, in float64: the reference `SparseIndex.search` must match."""
    matrix = sp.csr_matrix(matrix)
    terms, weights = _query_terms(query, matrix.shape[1])
    q = sp.csr_matrix((weights, (terms, np.zeros_like(terms))), shape=(matrix.shape[1], 1))
    return np.asarray((matrix.astype(np.float64) @ q).todense()).ravel()


def brute_force_search(matrix: Any, ids: Sequence[str], query: Query, k: int = 10) -> list[tuple[str, float]]:
    """Top-k by brute force over all rows, with the index's rules (max over chunks, score > 0, ties by first id)."""
    groups = RowGroups.from_row_ids(ids)
    scores = groups.doc_scores(brute_force_scores(matrix, query))
    top = top_k_indices(scores, k)
    return [(groups.doc_ids[i], float(scores[i])) for i in top if scores[i] > 0]


# --------------------------------------------------------------------------------------------------------- stats


def active_stats(active: np.ndarray, vocab_size: int) -> dict[str, Any]:
    mean = float(active.mean()) if active.size else 0.0
    return {
        "rows": int(active.size),
        "nnz": int(active.sum()),
        "active_dims": mean,
        "active_dims_min": int(active.min()) if active.size else 0,
        "active_dims_median": float(np.median(active)) if active.size else 0.0,
        "active_dims_max": int(active.max()) if active.size else 0,
        "sparsity_ratio": 1.0 - mean / vocab_size,
    }


def sparsity_stats(matrix: Any, vocab_size: int) -> dict[str, Any]:
    """Active dimensions per row and `sparsity_ratio = 1 - active_dims / vocab` (SparseEncoder.sparsity's keys)."""
    matrix = sp.csr_matrix(matrix)
    # Count stored zeros per row instead of eliminate_zeros(), which would modify the caller's matrix in place.
    stored = np.diff(matrix.indptr)
    row_of_entry = np.repeat(np.arange(matrix.shape[0]), stored)
    zeros = np.bincount(row_of_entry[matrix.data == 0], minlength=matrix.shape[0])
    return active_stats(stored - zeros, vocab_size)


def top_tokens(row: Query, tokenizer: Any, n: int = 10) -> list[tuple[str, float]]:
    """The `n` highest-weighted vocabulary tokens of one sparse vector, like SparseEncoder.decode (ties by id)."""
    vocab_size = len(tokenizer)
    if sp.issparse(row):
        vocab_size = row.shape[-1]
    elif not isinstance(row, tuple):
        vocab_size = np.asarray(row).size
    terms, weights = _query_terms(row, vocab_size)
    order = np.lexsort((terms, -weights))[:n]
    tokens = tokenizer.convert_ids_to_tokens(terms[order].tolist())
    return [(tok, float(w)) for tok, w in zip(tokens, weights[order], strict=True)]
