"""Data-parallel corpus encoding: one model replica per worker process over a lease of N cores, shards from a queue.

A model that fits one NeuronCore (or `tensor_parallel_size` of them) is replicated: each worker is its own process
with its own NEURON_RT_VISIBLE_CORES range (on CUDA its own CUDA_VISIBLE_DEVICES; on CPU a share of the threads), so
each starts its own Neuron runtime on its own cores, exactly as the runtime guide partitions a host
("NEURON_RT_VISIBLE_CORES=0-1 python worker.py & NEURON_RT_VISIBLE_CORES=2-3 python worker.py &"). The parent plans
shards as they stream in, skips the ones already on disk intact (`ShardBook`, as `encode_shards` does), and hands the
rest out one at a time to whichever worker is free. Each worker writes the shard it encoded atomically and reports its
sha256 and row count; a worker that dies (kill -9, out of memory, a runtime crash) is started again on the same cores
and its shard goes back in the queue, up to `max_attempts` per shard. The shard list keeps plan order, so the result
is the same as one worker's: the same shards, the same bytes.

The parent never loads the model: on Neuron its lease (scope="children") ends when the block ends, since the
workers, which held the cores in their runtimes, have exited by then.

`encode_corpus_shards` is the whole story for a stage: choose the replica count (`data_parallel: auto | N`), lease,
encode, return the run and the lease. The policy for `auto` is in `replica_request`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

from neuronforge.corpus.chunking import Chunk
from neuronforge.devices import CoreAllocator, CoreLease
from neuronforge.progress import Progress
from neuronforge.shards import Shard, ShardBook, ShardRun, write_table_atomic

logger = logging.getLogger(__name__)

# `python -m bench --only data_parallel` on the 2-core CI machine kind: 2 worker processes x 1 thread encoded at 0.86x
# one process with 2 onnxruntime threads (docs/operations.md): on a CPU host `auto` stays in-process.
CPU_AUTO_WORKERS = 1
PREFETCH = 2  # shards in flight per worker
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ShardEncoderFactory(Protocol):
    """Picklable: builds, inside a worker, the function that turns a shard's chunks into its table."""

    def load(self, threads: int) -> Callable[[list[Chunk]], pa.Table]: ...


@dataclass(frozen=True)
class ArtifactShardEncoder:
    """The pipeline's encoder artifact (dense: vectors; sparse: top-`max_active_dims` SPLADE activations)."""

    artifact_dir: str

    def load(self, threads: int) -> Callable[[list[Chunk]], pa.Table]:
        from neuronforge.backends import load_encoder
        from neuronforge.shards import dense_table, sparse_table

        encoder = load_encoder(self.artifact_dir, onnx_threads=threads)
        texts = lambda chunks: [c.input_text for c in chunks]  # noqa: E731
        if encoder.kind == "dense":
            return lambda chunks: dense_table(chunks, encoder.encode(texts(chunks), truncate=False))
        from neuronforge.sparse_index import to_csr

        return lambda chunks: sparse_table(
            chunks, to_csr(encoder.encode(texts(chunks), truncate=False), encoder.max_active_dims)
        )


@dataclass(frozen=True)
class Replica:
    """One worker: the device variables it starts with and the threads its backend may use (0: its default)."""

    index: int
    env: dict[str, str]
    cores: str
    threads: int = 0


class ReplicaRequest(NamedTuple):
    cores: int  # the lease's minimum: one replica
    up_to: int  # the lease's maximum
    cpu_workers: int  # worker processes on a CPU host (the CPU lease is a slot, not cores)


def replica_request(
    setting: str | int, kind: str, cores_per_replica: int, host_total: int, pool_slots: int, cpus: int
) -> ReplicaRequest:
    """How many cores a data-parallel stage leases. Policy for `auto`:

    - Neuron / CUDA: at least one replica, at most the stage's fair share of the host (its cores ÷ the `neuron`
      pool's slot limit, in whole replicas), and only what is free when it leases. With a pool limit of 2 on an
      inf2.48xlarge a corpus stage takes up to 12 of the 24 cores, so the other slot's step always finds its share.
    - CPU: CPU_AUTO_WORKERS processes (what the data-parallel bench measured faster on this machine kind).
    `N` asks for exactly N replicas (N × cores_per_replica cores, waiting for them; N processes on a CPU host).
    """
    if setting == "auto":
        share = max(1, host_total // max(1, pool_slots))
        up_to = max(cores_per_replica, share // cores_per_replica * cores_per_replica)
        return ReplicaRequest(cores_per_replica, up_to, min(CPU_AUTO_WORKERS, cpus))
    n = int(setting)
    return ReplicaRequest(n * cores_per_replica, n * cores_per_replica, n)


def plan_replicas(lease: CoreLease, cores_per_replica: int, cpu_workers: int, cpus: int) -> list[Replica]:
    """One replica per `cores_per_replica` leased cores (GPUs), or `cpu_workers` sharing the CPUs' threads."""
    if lease.kind == "cpu":
        threads = max(1, cpus // cpu_workers)
        env = {var: str(threads) for var in THREAD_VARS}
        return [Replica(i, env, f"cpu ({threads} threads)", threads) for i in range(cpu_workers)]
    envs = lease.split(cores_per_replica)
    return [Replica(i, env, next(iter(env.values()))) for i, env in enumerate(envs)]


# --------------------------------------------------------------------------------------------------- the worker side


def serve(fd: int) -> None:
    """A worker's life (`python -c "...serve(fd)"`): receive its factory, load the model on its cores, then encode and
    write shards until told to stop. It is a plain fresh interpreter (not multiprocessing's spawn, which would re-run
    the parent's __main__: the bench, a dagster CLI), so it holds nothing of the parent's runtime or threads."""
    conn = Connection(fd)
    try:
        factory, replica, out_dir = conn.recv()
        started = time.perf_counter()
        encode = factory.load(replica.threads)
        conn.send(("ready", os.getpid(), time.perf_counter() - started))
        while True:
            task = conn.recv()
            if task is None:
                return
            seq, name, chunks = task
            started, cpu = time.perf_counter(), time.process_time()
            try:
                info = write_table_atomic(Path(out_dir) / name, encode(chunks))
            except Exception:
                conn.send(("failed", seq, name, traceback.format_exc()))
                return
            conn.send(("done", seq, name, info, time.perf_counter() - started, time.process_time() - cpu))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the parent is gone (killed, or the step failed): nothing to report to
    except Exception:
        with contextlib.suppress(OSError, EOFError):
            conn.send(("failed", None, None, traceback.format_exc()))


# --------------------------------------------------------------------------------------------------- the parent side


class ShardEncodeError(RuntimeError):
    """A worker raised while loading the model or encoding a shard (not retried: it would fail the same way)."""


class WorkerCrashed(RuntimeError):
    """A shard killed every worker that tried it."""


@dataclass
class _Worker:
    replica: Replica
    proc: Any = None
    conn: Connection | None = None
    ready: bool = False
    # Shards sent and not yet done, in the order the worker takes them: (seq, name, shard, attempt). The first is
    # being encoded; the next waits in the pipe, so the worker never idles while the parent answers another.
    tasks: collections.deque = field(default_factory=collections.deque)
    pids: list[int] = field(default_factory=list)
    shards: int = 0
    chunks: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0  # the worker's own CPU time encoding (host-side cost: tokenising, tables, writes)
    load_s: float = 0.0
    restarts: int = 0

    def stats(self) -> dict[str, Any]:
        rate = self.chunks / self.seconds if self.seconds else 0.0
        return {
            "replica": self.replica.index,
            "cores": self.replica.cores,
            "pids": self.pids,
            "shards": self.shards,
            "chunks": self.chunks,
            "encode_s": round(self.seconds, 3),
            "cpu_s": round(self.cpu_s, 3),
            "chunks_per_s": round(rate, 1),
            "load_s": round(self.load_s, 2),
            "restarts": self.restarts,
        }


class _Pool:
    def __init__(self, factory: ShardEncoderFactory, replicas: Sequence[Replica], out_dir: Path, max_restarts: int):
        self.factory, self.out_dir, self.max_restarts = factory, out_dir, max_restarts
        self.workers = [_Worker(r) for r in replicas]
        for worker in self.workers:
            self._start(worker)

    def _start(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        # The worker sees the parent's import path (a factory may live in any module the parent imported) and its
        # replica's device variables, set before anything in it starts a runtime.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **worker.replica.env}
        code = f"from neuronforge.data_parallel import serve; serve({theirs.fileno()})"
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, pass_fds=[theirs.fileno()])
        theirs.close()
        worker.proc, worker.conn, worker.ready = proc, Connection(ours.detach()), False
        worker.conn.send((self.factory, worker.replica, str(self.out_dir)))

    def stop(self, timeout_s: float = 30.0) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None and worker.ready and not worker.tasks:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
            else:
                worker.proc.kill()  # still loading, or stuck mid-shard when the step fails: its cores come back now
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            worker.conn.close()


def encode_shards_parallel(
    shards: Iterable[Shard],
    out_dir: Path,
    key: str,
    factory: ShardEncoderFactory,
    replicas: Sequence[Replica],
    log: logging.Logger | None = None,
    *,
    remove_stale: bool = True,
    max_attempts: int = 3,
    start_when_ready: bool = False,
    progress: Progress | None = None,
    total_documents: int | None = None,
) -> ShardRun:
    """Encode every shard not already on disk intact on one worker process per replica; see the module docstring.

    With `start_when_ready` no shard is handed out before every worker has loaded its model (the bench times the
    encode phase apart from start-up); otherwise the first worker ready starts at once."""
    if not replicas:
        raise ValueError("encode_shards_parallel needs at least one replica")
    log = log or logger
    book = ShardBook(out_dir, key, log, progress, total_documents)
    source = iter(shards)
    pending: collections.deque[tuple[int, str, Shard, int]] = collections.deque()
    exhausted, seq = False, 0
    started = None
    pool = _Pool(factory, replicas, out_dir, max_restarts=max_attempts * len(replicas))
    try:
        while True:
            while not exhausted and len(pending) < 2 * len(pool.workers):
                shard = next(source, None)
                if shard is None:
                    exhausted = True
                    break
                name = book.admit(shard)
                if name is not None:
                    pending.append((seq, name, shard, 1))
                    seq += 1
            everyone = all(w.ready for w in pool.workers) or not start_when_ready
            for worker in pool.workers:
                while everyone and worker.ready and len(worker.tasks) < PREFETCH and pending:
                    task = pending.popleft()
                    worker.tasks.append(task)
                    started = started or time.perf_counter()
                    try:
                        worker.conn.send((task[0], task[1], task[2].chunks))
                    except OSError:  # the worker is gone: its last words (or EOF) are read below, task re-queued
                        break
            busy = [w for w in pool.workers if w.tasks]
            if exhausted and not pending and not busy:
                break
            # A worker's death closes its end of the socket: its connection turns readable (EOF).
            handles = {w.conn: w for w in pool.workers}
            for handle in wait(list(handles), timeout=60):
                if not handle.closed:
                    _receive(handles[handle], book, pool, pending, log, max_attempts)
    finally:
        pool.stop()
    book.run.encode_seconds = time.perf_counter() - started if started else 0.0
    book.run.replicas = [w.stats() for w in pool.workers]
    return book.finish(remove_stale)


def _receive(worker: _Worker, book: ShardBook, pool: _Pool, pending, log: logging.Logger, max_attempts: int) -> None:
    try:
        message = worker.conn.recv()
    except (EOFError, OSError):
        _crashed(worker, pool, pending, log, max_attempts)
        return
    if message[0] == "ready":
        worker.ready, worker.load_s = True, message[2]
        worker.pids.append(message[1])
    elif message[0] == "done":
        _, _seq, name, info, seconds, cpu_s = message
        shard = worker.tasks.popleft()[2]
        worker.shards += 1
        worker.chunks += len(shard.chunks)
        worker.seconds += seconds
        worker.cpu_s += cpu_s
        book.encoded(name, info, len(shard.chunks))
    else:
        _, _seq, name, text = message
        where = f"encoding {name}" if name else "loading the model"
        raise ShardEncodeError(f"replica {worker.replica.index} ({worker.replica.cores}) failed {where}:\n{text}")


def _crashed(worker: _Worker, pool: _Pool, pending, log: logging.Logger, max_attempts: int) -> None:
    """A worker process died without a word: put its shard back, start it again on the same cores."""
    code = worker.proc.wait()
    worker.conn.close()
    tasks = list(worker.tasks)
    worker.tasks.clear()
    task = tasks[0] if tasks else None
    what = "while loading the model" if not worker.ready else (f"on {task[1]}" if task else "while idle")
    log.warning(f"replica {worker.replica.index} ({worker.replica.cores}) died (exit code {code}) {what}")
    if task is not None:
        seq, name, shard, attempt = task
        if attempt >= max_attempts:
            raise WorkerCrashed(
                f"shard {name} killed its worker {attempt} times (last exit code {code}); its chunks "
                f"{shard.chunks[0].id} … {shard.chunks[-1].id} from {shard.source}. Check the worker's memory "
                "and the runtime logs, or encode that source on its own."
            )
        # Back to the front of the queue in order: the shard it died on (one more attempt), then the prefetched.
        pending.extendleft(reversed([(seq, name, shard, attempt + 1), *tasks[1:]]))
    if not worker.ready:
        raise WorkerCrashed(
            f"replica {worker.replica.index} ({worker.replica.cores}) died while loading the model (exit code {code})"
        )
    if worker.restarts >= pool.max_restarts:
        raise WorkerCrashed(f"replica {worker.replica.index} died {worker.restarts + 1} times; giving up")
    worker.restarts += 1
    pool._start(worker)


# ------------------------------------------------------------------------------------------------- the stage's story


def encode_corpus_shards(
    shards: Iterable[Shard],
    out_dir: Path,
    key: str,
    factory: ShardEncoderFactory,
    *,
    allocator: CoreAllocator,
    holder: str,
    cores_per_replica: int = 1,
    data_parallel: str | int = "auto",
    pool_slots: int = 1,
    log: logging.Logger | None = None,
    remove_stale: bool = False,
    progress: Progress | None = None,
    total_documents: int | None = None,
    start_when_ready: bool = False,
) -> tuple[ShardRun, CoreLease]:
    """Lease cores for `data_parallel` replicas (see `replica_request`) and encode `shards` on them.

    One replica on one process's own cores (`data_parallel: 1`, or one CPU worker) encodes in this process with a
    lease held until it exits; otherwise the workers are child processes and the lease ends with them.
    """
    log = log or logger
    cpus = os.cpu_count() or 1
    inv = allocator.discover()
    request = replica_request(data_parallel, inv.kind, cores_per_replica, inv.total, pool_slots, cpus)
    in_process = data_parallel == 1 or (inv.kind == "cpu" and request.cpu_workers == 1)
    scope = "process" if in_process else "children"
    with allocator.lease(request.cores, holder=holder, log=log, scope=scope, up_to=request.up_to) as lease:
        if in_process:
            from neuronforge.shards import encode_shards

            encode = factory.load(0)
            run = encode_shards(
                shards,
                out_dir,
                key,
                encode,
                log,
                remove_stale=remove_stale,
                progress=progress,
                total_documents=total_documents,
            )
            run.replicas = [
                {
                    "replica": 0,
                    "cores": lease.cores,
                    "pids": [os.getpid()],
                    "shards": len(run.files) - run.reused,
                    "chunks": run.encoded_chunks,
                    "encode_s": round(run.encode_seconds, 3),
                    "chunks_per_s": round(run.chunks_per_s, 1),
                    "load_s": 0.0,
                    "restarts": 0,
                }
            ]
            return run, lease
        replicas = plan_replicas(lease, cores_per_replica, request.cpu_workers, cpus)
        log.info(f"{holder}: {len(replicas)} replicas on {', '.join(r.cores for r in replicas)}")
        run = encode_shards_parallel(
            shards,
            out_dir,
            key,
            factory,
            replicas,
            log,
            remove_stale=remove_stale,
            progress=progress,
            total_documents=total_documents,
            start_when_ready=start_when_ready,
        )
        return run, lease
