"""A SPLADE inverted index with exact top-k search, stored as memory-mappable numpy files.

Rows are chunks, each with the id of the document it came from; a document's score for a query is the MAX over its
chunks' dot products (the best passage decides, as in MaxP passage-level retrieval), so a long document is not
rewarded for merely having many chunks. `build` reorders rows so a document's chunks are adjacent, which makes that
aggregation one `np.maximum.reduceat`.

Search is exact: a query touches only its terms' posting lists; their (row, weight x query weight) products are summed
per row with `np.bincount` into a dense score array (float64: products are formed and summed in double, so scores
equal `brute_force_scores` to ~1e-12), then the top k documents come from `argpartition` and a stable sort by
(-score, document number), so ties are deterministic. Only documents sharing at least one term with the query
(score > 0) are returned: an empty query gives an empty result. Weights must be non-negative (SPLADE's
log1p(relu(.)) always is), which makes "matched" and "score > 0" the same thing.

On-disk format (folder, written atomically; FORMAT_VERSION 1). Term-major (CSC of the row x vocab matrix):

    meta.json             {"format": "neuronforge-sparse-index", "format_version": 1, "vocab_size": V, "rows": R,
                           "documents": D, "nnz": N, "aggregation": "max", "stats": {...}, ...caller's extra keys}
    postings_indptr.npy   int64[V + 1]  term t's postings are entries indptr[t]:indptr[t+1] of the two arrays below
    postings_rows.npy     int32[N]      row (chunk) numbers, ascending within a term
    postings_weights.npy  float32[N]    the row's weight for the term
    row_doc.npy           int32[R]      document number of each row, non-decreasing (chunks of a document adjacent)
    doc_ids.json          [D strings]   document ids by document number

`SparseIndex.load(folder, mmap=True)` maps the three big arrays read-only (`np.load(mmap_mode="r")`), so opening an
index is O(V + R) and the OS pages in only the posting lists that queries touch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from neuronforge.artifacts import atomic_dir
from neuronforge.retrieval import RowGroups, top_k_indices

FORMAT = "neuronforge-sparse-index"
FORMAT_VERSION = 1

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IndexFormatError",
    "SparseIndex",
    "brute_force_scores",
    "brute_force_search",
    "sparsity_stats",
    "to_csr",
    "top_tokens",
]

Query = Any  # a 1 x V scipy sparse row, a dense [V] vector, or (term_ids, weights)


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
    """(term ids, float64 weights) of a query, duplicates summed, zeros dropped."""
    if isinstance(query, tuple):
        terms, weights = (np.asarray(x).ravel() for x in query)
        if terms.shape != weights.shape:
            raise ValueError(f"query term ids {terms.shape} and weights {weights.shape} differ in length")
        outside = terms[(terms < 0) | (terms >= vocab_size)]
        if outside.size:
            raise ValueError(f"query term ids outside [0, {vocab_size}): {outside[:5].tolist()} (wrong tokenizer?)")
        row = sp.csr_matrix(
            (weights.astype(np.float64), (np.zeros_like(terms, dtype=np.int64), terms.astype(np.int64))),
            shape=(1, vocab_size),
        )
    elif sp.issparse(query):
        if query.shape[-1] != vocab_size or (query.ndim == 2 and query.shape[0] != 1):
            raise ValueError(f"query must be a 1 x {vocab_size} row, got shape {query.shape}")
        row = sp.csr_matrix(query, dtype=np.float64)
    else:
        dense = np.asarray(query, dtype=np.float64).ravel()
        if dense.size != vocab_size:
            raise ValueError(f"dense query has {dense.size} dims, the index vocabulary {vocab_size}")
        row = sp.csr_matrix(dense[None, :])
    row.sum_duplicates()
    row.eliminate_zeros()
    if row.data.size and (row.data.min() < 0 or not np.isfinite(row.data).all()):
        raise ValueError("query weights must be finite and non-negative (SPLADE output is)")
    return row.indices.astype(np.int64), row.data


class SparseIndex:
    """Posting lists of a chunk x vocab SPLADE matrix, searched exactly; documents score the MAX over their chunks."""

    def __init__(
        self,
        indptr: np.ndarray,
        rows: np.ndarray,
        weights: np.ndarray,
        row_doc: np.ndarray,
        doc_ids: Sequence[str],
        vocab_size: int,
        meta: Mapping[str, Any] | None = None,
    ):
        self.indptr, self.rows, self.weights = indptr, rows, weights
        self.row_doc = row_doc
        self.doc_ids = list(doc_ids)
        self.vocab_size = int(vocab_size)
        self.meta = dict(meta or {})
        self._groups = RowGroups(self.doc_ids, row_doc)

    @property
    def n_rows(self) -> int:
        return int(self.row_doc.shape[0])

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def nnz(self) -> int:
        return int(self.rows.shape[0])

    def __repr__(self) -> str:
        return f"SparseIndex(docs={self.n_docs}, rows={self.n_rows}, vocab={self.vocab_size}, nnz={self.nnz})"

    # ---------------------------------------------------------------------------------------------------- building

    @classmethod
    def build(cls, matrix: Any, ids: Sequence[str], vocab_size: int) -> SparseIndex:
        """Index a [rows, vocab] sparse matrix; `ids[i]` is the document id of row i (chunks of a doc share it)."""
        # A copy: sum_duplicates/eliminate_zeros work in place, and the caller's arrays may be read-only (Arrow).
        matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        if matrix.shape[1] != vocab_size:
            raise ValueError(f"matrix has {matrix.shape[1]} columns but vocab_size={vocab_size}")
        if matrix.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for {matrix.shape[0]} matrix rows: give one document id per row")
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        if matrix.data.size and not np.isfinite(matrix.data).all():
            raise ValueError("matrix holds NaN/inf weights: the encoder diverged; check its output before indexing")
        if matrix.data.size and matrix.data.min() < 0:
            raise ValueError(
                "matrix holds negative weights: an inverted index needs non-negative (SPLADE) weights; "
                "use retrieval.dense_search for signed embeddings"
            )
        groups = RowGroups.from_row_ids(ids)
        order = np.argsort(groups.row_doc, kind="stable")  # chunks of a document become adjacent
        csc = matrix[order].tocsc()
        csc.sort_indices()
        return cls(
            indptr=csc.indptr.astype(np.int64),
            rows=csc.indices.astype(np.int32),
            weights=csc.data.astype(np.float32),
            row_doc=groups.row_doc[order].astype(np.int32),
            doc_ids=groups.doc_ids,
            vocab_size=vocab_size,
        )

    # ------------------------------------------------------------------------------------------------- searching

    def _row_scores(self, terms: np.ndarray, qweights: np.ndarray) -> np.ndarray | None:
        starts, ends = self.indptr[terms], self.indptr[terms + 1]
        lengths = ends - starts
        if not lengths.any():
            return None
        hit_rows = np.concatenate([self.rows[s:e] for s, e in zip(starts, ends, strict=True)])
        hit_weights = np.concatenate(
            [self.weights[s:e].astype(np.float64) * w for s, e, w in zip(starts, ends, qweights, strict=True)]
        )
        # bincount sums weights per row in one C pass (np.add.at is an order of magnitude slower).
        return np.bincount(hit_rows, weights=hit_weights, minlength=self.n_rows)

    def search(self, query: Query, k: int = 10) -> list[tuple[str, float]]:
        """Exact top-k documents by dot product: [(doc id, score)], best first, only documents with score > 0."""
        if k <= 0:
            return []
        terms, qweights = _query_terms(query, self.vocab_size)
        if not terms.size:
            return []
        row_scores = self._row_scores(terms, qweights)
        if row_scores is None:
            return []
        doc_scores = self._groups.doc_scores(row_scores)
        top = top_k_indices(doc_scores, k)
        top = top[doc_scores[top] > 0]
        return [(self.doc_ids[i], float(doc_scores[i])) for i in top]

    def search_many(self, queries: Any, k: int = 10) -> list[list[tuple[str, float]]]:
        """`search` for each row of a [queries, vocab] sparse matrix (or a list of queries)."""
        if sp.issparse(queries):
            queries = sp.csr_matrix(queries)
            if queries.shape[1] != self.vocab_size:
                raise ValueError(f"queries have {queries.shape[1]} columns, the index vocabulary {self.vocab_size}")
            return [self.search(queries.getrow(i), k) for i in range(queries.shape[0])]
        return [self.search(q, k) for q in queries]

    # ------------------------------------------------------------------------------------------------ persistence

    def stats(self) -> dict[str, Any]:
        active = np.bincount(self.rows, minlength=self.n_rows) if self.n_rows else np.zeros(0)
        return _active_stats(active, self.vocab_size) | {
            "documents": self.n_docs,
            "terms_used": int(np.count_nonzero(np.diff(self.indptr))),
        }

    def save(self, folder: Path, extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the index folder atomically (see the module docstring for the format); return its meta."""
        meta = {
            **dict(extra_meta or {}),
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "rows": self.n_rows,
            "documents": self.n_docs,
            "nnz": self.nnz,
            "aggregation": "max",
            "stats": self.stats(),
        }
        with atomic_dir(Path(folder)) as tmp:
            np.save(tmp / "postings_indptr.npy", np.ascontiguousarray(self.indptr, dtype=np.int64))
            np.save(tmp / "postings_rows.npy", np.ascontiguousarray(self.rows, dtype=np.int32))
            np.save(tmp / "postings_weights.npy", np.ascontiguousarray(self.weights, dtype=np.float32))
            np.save(tmp / "row_doc.npy", np.ascontiguousarray(self.row_doc, dtype=np.int32))
            (tmp / "doc_ids.json").write_text(json.dumps(self.doc_ids, ensure_ascii=False))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
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
            indptr = np.load(folder / "postings_indptr.npy", mmap_mode=mode)
            rows = np.load(folder / "postings_rows.npy", mmap_mode=mode)
            weights = np.load(folder / "postings_weights.npy", mmap_mode=mode)
            row_doc = np.load(folder / "row_doc.npy")
            doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{folder}: unreadable index file ({exc}); {rebuild}.") from exc
        vocab, nnz = meta["vocab_size"], meta["nnz"]
        problems = []
        if indptr.shape != (vocab + 1,) or int(indptr[-1]) != nnz:
            problems.append(f"postings_indptr shape {indptr.shape} / end {int(indptr[-1])} vs vocab {vocab}, nnz {nnz}")
        if rows.shape != (nnz,) or weights.shape != (nnz,):
            problems.append(f"postings arrays {rows.shape}/{weights.shape} vs nnz {nnz}")
        if row_doc.shape != (meta["rows"],) or len(doc_ids) != meta["documents"]:
            problems.append(
                f"row_doc {row_doc.shape} / {len(doc_ids)} doc ids vs meta {meta['rows']}/{meta['documents']}"
            )
        if problems:
            raise IndexFormatError(f"{folder} is inconsistent ({'; '.join(problems)}): partly copied? {rebuild}.")
        return cls(indptr, rows, weights, row_doc, doc_ids, vocab, meta)


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


def _active_stats(active: np.ndarray, vocab_size: int) -> dict[str, Any]:
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
    return _active_stats(stored - zeros, vocab_size)


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
