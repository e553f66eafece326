"""The compiled core of exact sparse search (numba): one pass over a query's posting lists, then top-k by a heap.

Postings are blocked by row (see sparse_index's format): term t's postings in row block b (rows b*65536 ..
b*65536+65535) are entries `blocks[t, b] : blocks[t, b+1]`, and each stores only its row's low 16 bits (`lows`,
uint16, ascending within a block). A search covers a row range [row_lo, row_hi) that starts and ends at document
boundaries, so two threads can take two halves of one index and their results merge exactly.

Scores are summed in float64, in the query's term order, one product `float64(weight) * qweight` per posting: the
same operations, in the same order, as `np.bincount` over the concatenated postings (the previous implementation)
and scipy's CSR @ vector (brute_force_scores), so scores are bitwise equal to them. The accumulator and its dirty
marks (one byte per 64 rows) are buffers the caller reuses (`Buffers`); the kernel leaves them zeroed, so no
per-query allocation or full reset happens. Top-k visits dirty chunks only, in row order, folding a document's
adjacent rows into their MAX, and keeps a k-slot heap ordered by (score desc, document number asc), which is also
the tie rule of `retrieval.top_k_indices`.

Functions are compiled on first call (cache=True keeps the machine code under __pycache__ for later processes) and
release the GIL (nogil=True), so threads over segments or row ranges run in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK_BITS = 16
BLOCK_ROWS = 1 << BLOCK_BITS
# Touched rows are remembered per 64-row chunk (a branch-free store per posting, where a per-row "first touch" test
# mispredicts about once a row); top-k and the reset then visit dirty chunks only.
DIRTY_BITS = 6

__all__ = ["BLOCK_BITS", "BLOCK_ROWS", "DIRTY_BITS", "Buffers", "top_k_range"]


class Buffers:
    """Per-thread scratch space for one index: the row accumulator and its dirty marks (kept zeroed between queries)."""

    def __init__(self, n_rows: int, n_docs: int):
        self.row_acc = np.zeros(n_rows, dtype=np.float64)
        self.dirty = np.zeros((n_rows >> DIRTY_BITS) + 1, dtype=np.uint8)


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
def _accumulate(terms, qweights, blocks, lows, weights, row_lo, row_hi, row_acc, dirty):
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
                row_acc[r] += np.float64(weights[p]) * q
                dirty[r >> DIRTY_BITS] = 1


@numba.njit(nogil=True, cache=True)
def _offer(heap_s, heap_d, filled, s, d):
    """Offer (s, d) to a heap holding `filled` entries (capacity len(heap_s)); returns the new fill."""
    size = heap_s.shape[0]
    if filled < size:
        i = filled
        heap_s[i] = s
        heap_d[i] = d
        while i > 0:  # sift up
            parent = (i - 1) // 2
            if _worse(heap_s[i], heap_d[i], heap_s[parent], heap_d[parent]):
                heap_s[i], heap_s[parent] = heap_s[parent], heap_s[i]
                heap_d[i], heap_d[parent] = heap_d[parent], heap_d[i]
                i = parent
            else:
                break
        return filled + 1
    if _worse(heap_s[0], heap_d[0], s, d):
        heap_s[0] = s
        heap_d[0] = d
        _sift_down(heap_s, heap_d, size, 0)
    return filled


@numba.njit(nogil=True, cache=True)
def _top_k_range(terms, qweights, blocks, lows, weights, row_doc, rows_are_docs, row_lo, row_hi, k, row_acc, dirty):
    _accumulate(terms, qweights, blocks, lows, weights, row_lo, row_hi, row_acc, dirty)
    heap_s = np.empty(k, dtype=np.float64)
    heap_d = np.empty(k, dtype=np.int64)
    filled = 0
    # One pass over the dirty chunks in row order: read each score, fold a document's adjacent rows into their MAX,
    # offer each finished document to the heap, and zero the chunk. Documents come in ascending order, so once the
    # heap is full a tie with its worst entry never wins: `score > threshold` is the whole test.
    threshold = 0.0
    current = -1
    best = 0.0
    for c in range(row_lo >> DIRTY_BITS, ((row_hi - 1) >> DIRTY_BITS) + 1):
        if dirty[c] == 0:
            continue
        dirty[c] = 0
        lo = max(c << DIRTY_BITS, row_lo)
        hi = min((c + 1) << DIRTY_BITS, row_hi)
        if rows_are_docs:
            for r in range(lo, hi):
                s = row_acc[r]
                if s > threshold:
                    filled = _offer(heap_s, heap_d, filled, s, r)
                    if filled == k:
                        threshold = heap_s[0]
        else:
            for r in range(lo, hi):
                s = row_acc[r]
                d = row_doc[r]
                if d != current:
                    if best > threshold:
                        filled = _offer(heap_s, heap_d, filled, best, current)
                        if filled == k:
                            threshold = heap_s[0]
                    current = d
                    best = s
                elif s > best:
                    best = s
        row_acc[lo:hi] = 0.0
    if best > threshold:
        filled = _offer(heap_s, heap_d, filled, best, current)
    # Pop the worst to the back until the heap is empty: the arrays end up best first.
    for last in range(filled - 1, 0, -1):
        heap_s[0], heap_s[last] = heap_s[last], heap_s[0]
        heap_d[0], heap_d[last] = heap_d[last], heap_d[0]
        _sift_down(heap_s, heap_d, last, 0)
    return heap_d[:filled], heap_s[:filled]


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
    k = min(k, row_hi - row_lo)  # a range holds at most as many documents as rows
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
        buffers.dirty,
    )
