"""Streaming, resumable corpus encoding into content-addressed Parquet shards.

Documents are chunked as they stream in and grouped into shards of at most `shard_chunks` chunks; a shard never spans
two source files. Each shard's file name is a hash of the encoder's compile key and its chunks' ids and texts, so:
- a killed run resumes: shards already on disk are not encoded again;
- a new or changed corpus file re-encodes only its own shards (the others hash the same);
- a new export (new compile key) re-encodes everything.
`shards.json` lists the current shards in order, each with its sha256 and row count, and is replaced atomically at
the end. A shard file found on disk is reused only when it is intact (its sha256 matches the last list that named it,
else its Parquet footer reads and holds the right row count); a damaged or truncated one is logged and re-encoded.
Encoding runs in this process (`encode_shards`) or on data-parallel worker processes
(`neuronforge.data_parallel.encode_shards_parallel`); both keep their books with `ShardBook`.

Shard columns: chunk_id, doc_id, chunk_index, char_start, char_end, text, and either `vector` (dense:
fixed_size_list<float32>[D]) or `term_ids` + `weights` (sparse: list<int32>, list<float32>).
"""

from __future__ import annotations

import hashlib
import json
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
from neuronforge.partitions import Partition
from neuronforge.progress import Progress

SHARD_LIST = "shards.json"


@dataclass
class Shard:
    source: str
    chunks: list[Chunk]

    def name(self, key: str) -> str:
        digest = stable_hash([key, self.source, [(c.id, c.input_text) for c in self.chunks]], 20)
        return f"shard-{digest}.parquet"


class ShardDamagedError(RuntimeError):
    """A shard file is truncated, unreadable or not the file its list names."""


@dataclass
class ShardRun:
    documents: int = 0
    chunks: int = 0
    shards: list[str] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {"sha256", "rows"}
    reused: int = 0
    repaired: int = 0  # damaged shards found on disk and encoded again
    encoded_chunks: int = 0
    encode_seconds: float = 0.0  # wall time spent encoding (all replicas together)
    removed_stale: int = 0
    replicas: list[dict[str, Any]] = field(default_factory=list)  # data-parallel workers: cores, shards, chunks/s

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
    partition: Partition | None = None,
) -> Iterator[Shard]:
    """The shards of a corpus source: its documents (those of `partition`, given one) streamed (bad records skipped
    or failing per `policy`) through `plan_shards`. What corpus_embeddings, sparse_index and the scaling bench all
    encode."""
    docs = iter_documents(source, policy)
    return plan_shards(partition.select(docs) if partition else docs, tokenizer, sequence_length, overlap, shard_chunks)


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


def write_table_atomic(path: Path, table: pa.Table) -> dict[str, Any]:
    """Write `table` as Parquet atomically; returns what the shard list records of it: sha256 and row count."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    write_bytes_atomic(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "rows": table.num_rows}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_shard(path: Path, rows: int, sha256: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(what the list records of an intact shard, None) or (None, what is wrong with it)."""
    try:
        digest = file_sha256(path)
        if sha256 is not None:
            if digest != sha256:
                return None, f"sha256 {digest[:12]}… differs from the {sha256[:12]}… its shard list recorded"
        else:
            found = pq.read_metadata(path).num_rows
            if found != rows:
                return None, f"{found} rows where its shard holds {rows} chunks"
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    return {"sha256": digest, "rows": rows}, None


class ShardBook:
    """The bookkeeping both encoders share: which planned shards are already on disk and intact, what was encoded,
    and the shard list written at the end."""

    def __init__(
        self,
        out_dir: Path,
        key: str,
        log: logging.Logger | None = None,
        progress: Progress | None = None,
        total_documents: int | None = None,
    ):
        self.out_dir, self.key, self.log = out_dir, key, log
        # With `progress`, shards already on disk count as done (not in the rate), and the chunk total is estimated
        # from the documents planned so far against `total_documents` (the corpus's count).
        self.progress, self.total_documents = progress, total_documents
        out_dir.mkdir(parents=True, exist_ok=True)
        self.run = ShardRun()
        self._docs: set[str] = set()
        self._known = _listed_files(out_dir / SHARD_LIST)

    def admit(self, shard: Shard) -> str | None:
        """List `shard`; its file name when it must be encoded, None when an intact copy is on disk."""
        name = shard.name(self.key)
        self.run.shards.append(name)
        self.run.chunks += len(shard.chunks)
        self._docs.update(c.doc_id for c in shard.chunks)
        self._estimate_total()
        path = self.out_dir / name
        if not path.is_file():
            return name
        known = self._known.get(name, {})
        info, problem = check_shard(path, len(shard.chunks), known.get("sha256"))
        if info is not None:
            self.run.files[name] = info
            self.run.reused += 1
            if self.progress is not None:
                self.progress.advance(len(shard.chunks), skipped=True)
            return None
        if self.log is not None:
            self.log.warning(f"shard {name} is damaged ({problem}): encoding it again")
        path.unlink(missing_ok=True)
        self.run.repaired += 1
        return name

    def _estimate_total(self) -> None:
        if self.progress is None or not self.total_documents:
            return
        # A document's chunks all go to one shard, so chunks/document so far is a fair estimate.
        seen, chunks = len(self._docs), self.run.chunks
        estimate = max(chunks, round(chunks / max(1, seen) * self.total_documents))
        self.progress.set_total(estimate, approximate=seen < self.total_documents)
        self.progress.set_note(f"{seen:,}/{self.total_documents:,} documents, shard {len(self.run.shards)}")

    def encoded(self, name: str, info: dict[str, Any], chunks: int) -> None:
        self.run.files[name] = info
        self.run.encoded_chunks += chunks
        if self.progress is not None:
            self.progress.advance(chunks)
        elif self.log is not None:
            done = len(self.run.files)
            self.log.info(
                f"shard {done}/{len(self.run.shards)} listed: {self.run.chunks} chunks so far ({self.run.reused} "
                f"shards reused, {self.run.repaired} repaired), {self.run.encoded_chunks} encoded"
            )

    def finish(self, remove_stale: bool) -> ShardRun:
        run = self.run
        run.documents = len(self._docs)
        files = {name: run.files[name] for name in run.shards}
        write_json_atomic(
            self.out_dir / SHARD_LIST, {"key": self.key, "shards": run.shards, "chunks": run.chunks, "files": files}
        )
        current = set(run.shards)
        for stale in self.out_dir.glob("shard-*.parquet") if remove_stale else ():
            if stale.name not in current:
                stale.unlink()
                run.removed_stale += 1
        return run


def _listed_files(listing: Path) -> dict[str, dict[str, Any]]:
    """name → {"sha256", "rows"} from an earlier shard list (empty when missing, older or damaged)."""
    try:
        files = json.loads(listing.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def encode_shards(
    shards: Iterable[Shard],
    out_dir: Path,
    key: str,
    encode: Callable[[list[Chunk]], pa.Table],
    log: logging.Logger | None = None,
    *,
    remove_stale: bool = True,
    progress: Progress | None = None,
    total_documents: int | None = None,
) -> ShardRun:
    """Encode, in this process, every shard not already on disk intact; then list the current shards and (unless
    `remove_stale` is off) drop the others. Stages whose records name their shards keep the others: another record
    may still name them. With `progress`, see ShardBook."""
    book = ShardBook(out_dir, key, log, progress, total_documents)
    for shard in shards:
        name = book.admit(shard)
        if name is None:
            continue
        started = time.perf_counter()
        info = write_table_atomic(out_dir / name, encode(shard.chunks))
        book.run.encode_seconds += time.perf_counter() - started
        book.encoded(name, info, len(shard.chunks))
    return book.finish(remove_stale)


def read_shards(
    out_dir: Path,
    columns: list[str] | None = None,
    names: Iterable[str] | None = None,
    files: dict[str, dict[str, Any]] | None = None,
) -> pa.Table:
    """The shards `names` (default: the last run's list, shards.json), in order, as one table.

    A damaged shard raises ShardDamagedError naming the file (and, given `files` from a shard list or record, a shard
    whose sha256 differs from it), never a bare Arrow error."""
    if names is None:
        listing = out_dir / SHARD_LIST
        if not listing.is_file():
            raise FileNotFoundError(f"{out_dir} has no {SHARD_LIST}: the encoding stage has not finished there yet")
        names = json.loads(listing.read_text())["shards"]
    tables = []
    for name in names:
        path = out_dir / name
        expected = (files or {}).get(name)
        if expected is not None:
            _, problem = check_shard(path, int(expected["rows"]), expected["sha256"])
            if problem is not None:
                raise ShardDamagedError(f"{path} is damaged: {problem}. Materialize the stage again to re-encode it.")
        try:
            tables.append(pq.read_table(path, columns=columns))
        except (OSError, pa.ArrowException) as exc:
            raise ShardDamagedError(
                f"{path} is damaged or missing ({type(exc).__name__}: {exc}). Materialize the stage that wrote it "
                "again: it re-encodes damaged shards."
            ) from exc
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
