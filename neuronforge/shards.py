"""Streaming, resumable corpus encoding into content-addressed Parquet shards.

Documents are chunked as they stream in and grouped into shards of at most `shard_chunks` chunks; a shard never spans
two source files. Each shard's file name is a hash of the encoder's compile key and its chunks' ids and texts, so:
- a killed run resumes: shards already on disk are not encoded again;
- a new or changed corpus file re-encodes only its own shards (the others hash the same);
- a new export (new compile key) re-encodes everything.
`shards.json` lists the current shards in order and is replaced atomically at the end; stale shard files are removed.

Shard columns: chunk_id, doc_id, chunk_index, char_start, char_end, text, and either `vector` (dense:
fixed_size_list<float32>[D]) or `term_ids` + `weights` (sparse: list<int32>, list<float32>).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuronforge.artifacts import stable_hash, write_bytes_atomic, write_json_atomic
from neuronforge.corpus.chunking import Chunk, chunk_document, content_budget
from neuronforge.corpus.readers import BadInputPolicy, Document, iter_documents

SHARD_LIST = "shards.json"


@dataclass
class Shard:
    source: str
    chunks: list[Chunk]

    def name(self, key: str) -> str:
        digest = stable_hash([key, self.source, [(c.id, c.input_text) for c in self.chunks]], 20)
        return f"shard-{digest}.parquet"


@dataclass
class ShardRun:
    documents: int = 0
    chunks: int = 0
    shards: list[str] = field(default_factory=list)
    reused: int = 0
    encoded_chunks: int = 0
    encode_seconds: float = 0.0
    removed_stale: int = 0

    @property
    def chunks_per_s(self) -> float:
        return self.encoded_chunks / self.encode_seconds if self.encode_seconds else 0.0


def plan_shards(
    docs: Iterable[Document], tokenizer: Any, sequence_length: int, overlap: int, shard_chunks: int
) -> Iterator[Shard]:
    """Chunk documents as they stream and cut shards at `shard_chunks` chunks or a change of source file."""
    budget = content_budget(tokenizer, sequence_length)
    current: Shard | None = None
    for doc in docs:
        if current is not None and (current.source != doc.source or len(current.chunks) >= shard_chunks):
            yield current
            current = None
        if current is None:
            current = Shard(doc.source, [])
        current.chunks.extend(chunk_document(doc, tokenizer, budget, overlap))
    if current is not None and current.chunks:
        yield current


def plan_corpus_shards(
    source: Path,
    policy: BadInputPolicy | None,
    tokenizer: Any,
    sequence_length: int,
    overlap: int,
    shard_chunks: int,
) -> Iterator[Shard]:
    """The shards of a corpus source: its documents streamed (bad records skipped or failing per `policy`) through
    `plan_shards`. What corpus_embeddings, sparse_index and the scaling bench all encode."""
    return plan_shards(iter_documents(source, policy), tokenizer, sequence_length, overlap, shard_chunks)


def _base_columns(chunks: list[Chunk]) -> dict[str, pa.Array]:
    return {
        "chunk_id": pa.array([c.id for c in chunks], pa.string()),
        "doc_id": pa.array([c.doc_id for c in chunks], pa.string()),
        "chunk_index": pa.array([c.chunk_index for c in chunks], pa.int32()),
        "char_start": pa.array([c.char_start for c in chunks], pa.int64()),
        "char_end": pa.array([c.char_end for c in chunks], pa.int64()),
        "text": pa.array([c.text for c in chunks], pa.string()),
    }


def dense_table(chunks: list[Chunk], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return pa.table({**_base_columns(chunks), "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def sparse_table(chunks: list[Chunk], matrix: Any) -> pa.Table:
    """`matrix`: a scipy CSR [len(chunks), V]."""
    offsets = pa.array(matrix.indptr.astype(np.int32), pa.int32())
    term_ids = pa.ListArray.from_arrays(offsets, pa.array(matrix.indices.astype(np.int32), pa.int32()))
    weights = pa.ListArray.from_arrays(offsets, pa.array(matrix.data.astype(np.float32), pa.float32()))
    return pa.table({**_base_columns(chunks), "term_ids": term_ids, "weights": weights})


def write_table_atomic(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


def encode_shards(
    shards: Iterable[Shard],
    out_dir: Path,
    key: str,
    encode: Callable[[list[Chunk]], pa.Table],
    log: logging.Logger | None = None,
    *,
    remove_stale: bool = True,
) -> ShardRun:
    """Encode every shard not already on disk; then list the current shards and (unless `remove_stale` is off) drop
    the others. Stages whose records name their shards keep the others: another record may still name them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = ShardRun()
    docs_seen: set[str] = set()
    for shard in shards:
        name = shard.name(key)
        run.shards.append(name)
        run.chunks += len(shard.chunks)
        docs_seen.update(c.doc_id for c in shard.chunks)
        if (out_dir / name).is_file():
            run.reused += 1
            continue
        started = time.perf_counter()
        write_table_atomic(out_dir / name, encode(shard.chunks))
        run.encode_seconds += time.perf_counter() - started
        run.encoded_chunks += len(shard.chunks)
        if log is not None:
            log.info(
                f"shard {len(run.shards)}: {run.chunks} chunks so far ({run.reused} shards reused), "
                f"{run.chunks_per_s:.1f} chunks/s"
            )
    run.documents = len(docs_seen)
    write_json_atomic(out_dir / SHARD_LIST, {"key": key, "shards": run.shards, "chunks": run.chunks})
    current = set(run.shards)
    for stale in out_dir.glob("shard-*.parquet") if remove_stale else ():
        if stale.name not in current:
            stale.unlink()
            run.removed_stale += 1
    return run


def read_shards(out_dir: Path, columns: list[str] | None = None, names: Iterable[str] | None = None) -> pa.Table:
    """The shards `names` (default: the last run's list, shards.json), in order, as one table."""
    import json

    if names is None:
        listing = out_dir / SHARD_LIST
        if not listing.is_file():
            raise FileNotFoundError(f"{out_dir} has no {SHARD_LIST}: the encoding stage has not finished there yet")
        names = json.loads(listing.read_text())["shards"]
    tables = [pq.read_table(out_dir / name, columns=columns) for name in names]
    return pa.concat_tables(tables) if tables else pa.table({})


def dense_matrix(table: pa.Table) -> np.ndarray:
    vectors = table.column("vector").combine_chunks()
    width = vectors.type.list_size
    return vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def sparse_matrix(table: pa.Table, vocab_size: int):
    import scipy.sparse as sp

    terms = table.column("term_ids").combine_chunks()
    weights = table.column("weights").combine_chunks()
    indptr = terms.offsets.to_numpy().astype(np.int64)
    indptr -= indptr[0]
    # Copies: Arrow hands out read-only buffers, and scipy's in-place methods (sort_indices...) need writable ones.
    data = np.array(weights.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    indices = np.array(terms.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(table.num_rows, vocab_size))
