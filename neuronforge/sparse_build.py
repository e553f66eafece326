"""Write a sparse index folder streaming over row batches (e.g. Parquet shards), in two passes with flat memory.

Pass 1 counts postings per (term, row block) and collects document ids; pass 2 reads the batches again and writes
each batch's postings straight to their final place in the output files with positioned writes (a batch's rows
come after every earlier batch's, so each posting list stays ascending). Peak memory is one batch plus the
O(V·B + R) tables and the document ids, never a copy of all postings.

The output is byte for byte what `SparseIndex.build(...).save(...)` writes for the same rows, provided a document's
chunks are adjacent in the stream (what the corpus shards guarantee; otherwise build in memory, which reorders).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from neuronforge.artifacts import atomic_dir
from neuronforge.sparse_index import (
    active_stats,
    block_table,
    clean_matrix,
    row_blocks,
    write_meta_and_docs,
)
from neuronforge.sparse_kernel import BLOCK_BITS, BLOCK_ROWS

__all__ = ["csr_batches", "write_index"]

Batches = Callable[[], Iterable[tuple[Any, Sequence[str]]]]  # called once per pass; yields (CSR rows, doc ids)


def _count_pass(batches: Batches, vocab_size: int):
    doc_ids: list[str] = []
    seen: set[str] = set()
    row_doc: list[np.ndarray] = []
    active: list[np.ndarray] = []
    block_counts: list[np.ndarray] = []  # one int64[V] per row block
    batch_rows: list[int] = []
    n_rows = 0
    for matrix, ids in batches():
        matrix = clean_matrix(matrix, vocab_size)
        if matrix.shape[0] != len(ids):
            raise ValueError(f"a batch has {len(ids)} ids for {matrix.shape[0]} rows: give one document id per row")
        numbers = np.empty(len(ids), dtype=np.int32)
        for i, doc in enumerate(ids):
            if not doc_ids or doc != doc_ids[-1]:
                if doc in seen:
                    raise ValueError(
                        f"document {doc!r} has chunks apart from each other in the stream: streaming needs a "
                        "document's rows adjacent (build in memory with SparseIndex.build, which reorders)"
                    )
                seen.add(doc)
                doc_ids.append(doc)
            numbers[i] = len(doc_ids) - 1
        row_doc.append(numbers)
        active.append(np.diff(matrix.indptr))
        # A batch's rows are contiguous, so each row block it touches is a contiguous range of its CSR entries.
        for b in range(n_rows >> BLOCK_BITS, ((n_rows + matrix.shape[0] - 1) >> BLOCK_BITS) + 1):
            lo = max(0, b * BLOCK_ROWS - n_rows)
            hi = min(matrix.shape[0], (b + 1) * BLOCK_ROWS - n_rows)
            while len(block_counts) <= b:
                block_counts.append(np.zeros(vocab_size, dtype=np.int64))
            entries = matrix.indices[matrix.indptr[lo] : matrix.indptr[hi]]
            block_counts[b] += np.bincount(entries, minlength=vocab_size)
        n_rows += matrix.shape[0]
        batch_rows.append(matrix.shape[0])
    n_blocks = row_blocks(n_rows)
    counts = np.zeros((vocab_size, n_blocks), dtype=np.int64)
    for b, c in enumerate(block_counts):
        counts[:, b] = c
    row_doc_all = np.concatenate(row_doc) if row_doc else np.zeros(0, dtype=np.int32)
    active_all = np.concatenate(active) if active else np.zeros(0, dtype=np.int64)
    return counts, doc_ids, row_doc_all, active_all, batch_rows


def write_index(
    folder: Path, batches: Batches, vocab_size: int, extra_meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write the index of the rows `batches()` yields (called twice: it must yield the same rows each time)."""
    counts, doc_ids, row_doc, active, batch_rows = _count_pass(batches, vocab_size)
    table = block_table(counts)
    n_blocks = counts.shape[1]
    nnz = int(table[-1, -1]) if vocab_size else 0
    cursor = table[:, :-1].ravel().copy()  # next free slot per (term, block), flat index t * B + b
    with atomic_dir(Path(folder)) as tmp:
        np.save(tmp / "postings_blocks.npy", table)
        outputs = []
        for name, dtype in (("postings_lows.npy", np.uint16), ("postings_weights.npy", np.float32)):
            header = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dtype, shape=(nnz,))
            outputs.append((os.open(tmp / name, os.O_WRONLY), header.offset, np.dtype(dtype).itemsize))
            del header
        try:
            offset = 0
            for number, (matrix, ids) in enumerate(batches()):
                if number >= len(batch_rows) or len(ids) != batch_rows[number]:
                    raise ValueError("batches() yielded other rows on its second pass: it must be repeatable")
                csc = clean_matrix(matrix, vocab_size).tocsc()
                csc.sort_indices()
                terms = np.repeat(np.arange(vocab_size, dtype=np.int64), np.diff(csc.indptr))
                rows = offset + csc.indices.astype(np.int64)
                keys = terms * n_blocks + (rows >> BLOCK_BITS)  # sorted: by term, then row
                starts = np.flatnonzero(np.diff(keys, prepend=-1))  # keys are sorted: runs start where they change
                unique, runs = keys[starts], np.diff(np.append(starts, keys.size))
                columns = ((rows & (BLOCK_ROWS - 1)).astype(np.uint16), csc.data.astype(np.float32))
                # Each (term, block) run of this batch is contiguous in the output: one positioned write per run
                # and file. Plain writes, not a writable memory map, whose dirty pages would count in our RSS.
                for (fd, base, size), column in zip(outputs, columns, strict=True):
                    view = memoryview(column)
                    for key, start, count in zip(unique.tolist(), starts.tolist(), runs.tolist(), strict=True):
                        os.pwrite(fd, view[start : start + count], base + int(cursor[key]) * size)
                cursor[unique] += runs
                offset += csc.shape[0]
        finally:
            for fd, _, _ in outputs:
                os.close(fd)
        if offset != row_doc.shape[0]:
            raise ValueError("batches() yielded fewer rows on its second pass: it must be repeatable")
        stats = active_stats(active, vocab_size) | {
            "documents": len(doc_ids),
            "terms_used": int(np.count_nonzero(counts.sum(axis=1))),
        }
        return write_meta_and_docs(tmp, row_doc, doc_ids, vocab_size, nnz, stats, extra_meta)


def csr_batches(matrix: Any, ids: Sequence[str], rows_per_batch: int) -> Batches:
    """Batches over an in-memory matrix (tests, benches): the same rows in slices of `rows_per_batch`."""
    matrix = sp.csr_matrix(matrix)

    def batches():
        for lo in range(0, matrix.shape[0], rows_per_batch):
            yield matrix[lo : lo + rows_per_batch], ids[lo : lo + rows_per_batch]

    return batches
