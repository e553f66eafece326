"""The compiled core of exact sparse search (numba): one pass over a query's posting lists, then top-k by a heap.

Postings are blocked by row (see sparse_index's format): term t's postings in row block b (rows b*65536 ..
b*65536+65535) are entries `blocks[t, b] : blocks[t, b+1]`, and each stores only its row's low 16 bits (`lows`,
uint16, ascending within a block). A search covers a row range [row_lo, row_hi) that starts and ends at document
boundaries, so two threads can take two halves of one index and their results merge exactly.

Scores are summed in float64, in the query's term order, one product `float64(weight) * qweight` per posting: the
same operations, in the same order, as `np.bincount` over the concatenated postings (the previous implementation)
and scipy's CSR @ vector (brute_force_scores), so scores are bitwise equal to them. The accumulator and the list of
touched rows are buffers the caller reuses (`Buffers`); the kernel leaves them zeroed, so no per-query O(rows) reset
or allocation happens. Top-k looks at touched documents only: a k-slot heap ordered by (score desc, document
number asc), which is also the tie rule of `retrieval.top_k_indices`.

Functions are compiled on first call (cache=True keeps the machine code under __pycache__ for later processes) and
release the GIL (nogil=True), so threads over segments or row ranges run in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK_BITS = 16
BLOCK_ROWS = 1 << BLOCK_BITS

__all__ = ["BLOCK_BITS", "BLOCK_ROWS", "Buffers", "top_k_range"]


class Buffers:
    """Per-thread scratch space for one index: row and document accumulators (kept zeroed between queries)."""

    def __init__(self, n_rows: int, n_docs: int):
        self.row_acc = np.zeros(n_rows, dtype=np.float64)
        self.touched_rows = np.empty(n_rows, dtype=np.int32)
        self.doc_acc = np.zeros(n_docs, dtype=np.float64)
        self.touched_docs = np.empty(n_docs, dtype=np.int32)


@numba.njit(nogil=True, cache=True)
def _worse(score_a, doc_a, score_b, doc_b):
    # True when (score_a, doc_a) ranks below (score_b, doc_b): lower score, or the same score and a later document.
    return score_a < score_b or (score_a == score_b and doc_a > doc_b)


@numba.njit(nogil=True, cache=True)
def _sift_down(heap_s, heap_d, size, i):
    # Min-heap on rank: the root is the worst entry kept so far.
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_d[right], heap_s[left], heap_d[left]):
            child = right
        if _worse(heap_s[child], heap_d[child], heap_s[i], heap_d[i]):
            heap_s[i], heap_s[child] = heap_s[child], heap_s[i]
            heap_d[i], heap_d[child] = heap_d[child], heap_d[i]
            i = child
        else:
            return


@numba.njit(nogil=True, cache=True)
def _accumulate(terms, qweights, blocks, lows, weights, row_lo, row_hi, row_acc, touched):
    n_touched = 0
    b_first = row_lo >> BLOCK_BITS
    b_last = (row_hi - 1) >> BLOCK_BITS
    for i in range(terms.shape[0]):
        t = terms[i]
        q = qweights[i]
        for b in range(b_first, b_last + 1):
            start = blocks[t, b]
            end = blocks[t, b + 1]
            if start == end:
                continue
            base = b << BLOCK_BITS
            if b == b_first and row_lo > base:
                start += np.searchsorted(lows[start:end], row_lo - base)
            if b == b_last and row_hi - base < BLOCK_ROWS:
                end = start + np.searchsorted(lows[start:end], row_hi - base)
            for p in range(start, end):
                r = base + lows[p]
                old = row_acc[r]
                new = old + np.float64(weights[p]) * q
                # A row is touched once its score turns positive (weights and query weights are > 0, so it stays so).
                if old == 0.0 and new > 0.0:
                    touched[n_touched] = r
                    n_touched += 1
                row_acc[r] = new
    return n_touched


@numba.njit(nogil=True, cache=True)
def _heap_top_k(scores, docs, n, k):
    """Top k of (scores[:n], docs[:n]) by (score desc, doc asc); returns (docs, scores) best first."""
    size = min(k, n)
    heap_s = np.empty(size, dtype=np.float64)
    heap_d = np.empty(size, dtype=np.int64)
    filled = 0
    for j in range(n):
        s = scores[j]
        d = docs[j]
        if filled < size:
            # Sift up.
            i = filled
            heap_s[i] = s
            heap_d[i] = d
            filled += 1
            while i > 0:
                parent = (i - 1) // 2
                if _worse(heap_s[i], heap_d[i], heap_s[parent], heap_d[parent]):
                    heap_s[i], heap_s[parent] = heap_s[parent], heap_s[i]
                    heap_d[i], heap_d[parent] = heap_d[parent], heap_d[i]
                    i = parent
                else:
                    break
        elif _worse(heap_s[0], heap_d[0], s, d):
            heap_s[0] = s
            heap_d[0] = d
            _sift_down(heap_s, heap_d, size, 0)
    # Pop the worst to the back until the heap is empty: the arrays end up best first.
    for last in range(size - 1, 0, -1):
        heap_s[0], heap_s[last] = heap_s[last], heap_s[0]
        heap_d[0], heap_d[last] = heap_d[last], heap_d[0]
        _sift_down(heap_s, heap_d, last, 0)
    return heap_d, heap_s


@numba.njit(nogil=True, cache=True)
def _top_k_range(
    terms, qweights, blocks, lows, weights, row_doc, rows_are_docs, row_lo, row_hi, k, row_acc, touched, doc_acc, tdocs
):
    n = _accumulate(terms, qweights, blocks, lows, weights, row_lo, row_hi, row_acc, touched)
    if rows_are_docs:
        scores = np.empty(n, dtype=np.float64)
        for j in range(n):
            r = touched[j]
            scores[j] = row_acc[r]
            row_acc[r] = 0.0
        return _heap_top_k(scores, touched, n, k)
    # Documents score the MAX over their chunks: fold touched rows into touched documents.
    m = 0
    for j in range(n):
        r = touched[j]
        s = row_acc[r]
        row_acc[r] = 0.0
        d = row_doc[r]
        if doc_acc[d] == 0.0:
            tdocs[m] = d
            m += 1
            doc_acc[d] = s
        elif s > doc_acc[d]:
            doc_acc[d] = s
    scores = np.empty(m, dtype=np.float64)
    for j in range(m):
        d = tdocs[j]
        scores[j] = doc_acc[d]
        doc_acc[d] = 0.0
    return _heap_top_k(scores, tdocs, m, k)


def top_k_range(
    terms: np.ndarray,
    qweights: np.ndarray,
    blocks: np.ndarray,
    lows: np.ndarray,
    weights: np.ndarray,
    row_doc: np.ndarray,
    rows_are_docs: bool,
    row_lo: int,
    row_hi: int,
    k: int,
    buffers: Buffers,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k documents of rows [row_lo, row_hi): (document numbers int64, float64 scores), best first, score > 0.

    `terms` (int64, ascending, unique) and `qweights` (float64, > 0) are the query; the range must start and end at
    document boundaries. `buffers` must be zeroed (as a previous call leaves them) and not shared between threads.
    """
    if k <= 0 or row_hi <= row_lo or terms.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    return _top_k_range(
        terms,
        qweights,
        blocks,
        lows,
        weights,
        row_doc,
        rows_are_docs,
        row_lo,
        row_hi,
        k,
        buffers.row_acc,
        buffers.touched_rows,
        buffers.doc_acc,
        buffers.touched_docs,
    )
