"""Data parallelism: the corpus encoder on N worker processes (neuronforge.data_parallel), as ratios against one worker.

Two hosts:
- this CPU: the same shards of the built-in corpus through the dense ONNX artifact, encoded by one worker process
  (1 thread), by two (1 thread each), and in-process with every thread (what `data_parallel: auto` does on a CPU
  host today). Rows: two workers vs one (linear would be 2.0 on 2 cores) and two processes vs one process with
  all the threads — the figure CPU_AUTO_WORKERS follows.
- a simulated 24-core Neuron host (`SimulatedNeuronHost`: each worker starts its runtime on its own cores, each batch
  costs a fixed per-core latency): throughput at 1..24 replicas with a fixed amount of work per replica, against
  linear (replicas × one replica's throughput). Target >= 0.9 at 24.
Timing starts when every worker has loaded its model (`start_when_ready`): model loading is a one-off per stage, the
encode phase is what scales; start-up seconds are reported beside each point.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.context import DENSE_MODEL, BenchContext, hash_sample
from bench.harness import Row

SIM_SHARDS_PER_REPLICA = 6
SIM_CHUNKS_PER_SHARD = 32
SIM_BATCH = 8
SIM_LATENCY_S = 0.1  # per batch of 8 on one core: a 0.4 s shard


def _run(shards, out: Path, factory, replicas) -> dict[str, Any]:
    from neuronforge.data_parallel import encode_shards_parallel

    run = encode_shards_parallel(shards, out, "bench", factory, replicas, start_when_ready=True)
    load = max(r["load_s"] for r in run.replicas)
    return {
        "chunks": run.encoded_chunks,
        "encode_s": run.encode_seconds,
        "chunks_per_s": run.chunks_per_s,
        "startup_s": load,
        "replicas": run.replicas,
    }


def cpu_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    from transformers import AutoTokenizer

    from neuronforge.data_parallel import ArtifactShardEncoder, plan_replicas
    from neuronforge.devices import CoreLease
    from neuronforge.shards import Shard, encode_shards

    artifact = ctx.artifact(DENSE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    docs = hash_sample(ctx.documents, ctx.sizes.dp_docs, key=lambda d: d.id)
    chunks = ctx.chunks(tokenizer, ctx.spec(DENSE_MODEL).sequence_length, docs)
    shards = [Shard("bench", chunks[i : i + 16]) for i in range(0, len(chunks), 16)]
    cpus = os.cpu_count() or 1
    factory = ArtifactShardEncoder(str(artifact))
    slot = CoreLease("cpu", 0, 0, 1, {}, 0.0, cpus)
    one = plan_replicas(slot, 1, 1, 1)
    two = plan_replicas(slot, 1, 2, 2)
    results: dict[str, list[dict[str, Any]]] = {"1 worker x 1 thread": [], "2 workers x 1 thread": [], "in-process": []}
    in_process = factory.load(0)
    with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as tmp:
        for r in range(ctx.sizes.dp_rounds):
            order = list(results)[r % 3 :] + list(results)[: r % 3]
            for name in order:
                out = Path(tmp) / f"{name}-{r}".replace(" ", "_")
                if name == "in-process":
                    run = encode_shards(shards, out, "bench", in_process)
                    results[name].append({"chunks_per_s": run.chunks_per_s, "encode_s": run.encode_seconds})
                else:
                    results[name].append(_run(shards, out, factory, one if name.startswith("1") else two))
    rate = {name: statistics.median(p["chunks_per_s"] for p in points) for name, points in results.items()}
    note = ", ".join(f"{name}: {value:.1f} chunks/s" for name, value in rate.items())
    note += f" ({len(chunks)} chunks in {len(shards)} shards, {cpus} CPUs, median of {ctx.sizes.dp_rounds} rounds)"
    info = {"chunks": len(chunks), "shards": len(shards), "rates": rate, "points": results, "cpus": cpus}
    rows = [
        Row(
            "data_parallel",
            "CPU: 2 workers vs 1 (1 thread each, same shards)",
            "1 worker x 1 thread",
            rate["2 workers x 1 thread"] / rate["1 worker x 1 thread"],
            1.8,  # 0.9 x linear on 2 cores
            note=note,
            details=info,
        ),
        Row(
            "data_parallel",
            f"CPU: 2 worker processes vs in-process x {cpus} threads",
            f"in-process, {cpus} onnxruntime threads",
            rate["2 workers x 1 thread"] / rate["in-process"],
            1.0,
            note="decides CPU_AUTO_WORKERS (neuronforge/data_parallel.py): processes only where they beat threads",
        ),
    ]
    return rows, info


def simulated_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    from neuronforge.corpus.chunking import Chunk
    from neuronforge.data_parallel import Replica
    from neuronforge.devices.simulated_runtime import SimulatedNeuronHost, SimulatedShardEncoder
    from neuronforge.shards import Shard

    points = []
    with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as tmp:
        for n in ctx.sizes.dp_sim_replicas:
            host = SimulatedNeuronHost(Path(tmp) / f"rt-{n}", 24, core_latency_s=SIM_LATENCY_S)
            shards = [
                Shard(
                    f"s{s}",
                    [Chunk(f"d{s}-{c}", c, 0, 10, f"text {s} {c}", "") for c in range(SIM_CHUNKS_PER_SHARD)],
                )
                for s in range(n * SIM_SHARDS_PER_REPLICA)
            ]
            replicas = [Replica(i, {"NEURON_RT_VISIBLE_CORES": str(i)}, str(i)) for i in range(n)]
            result = _run(shards, Path(tmp) / f"out-{n}", SimulatedShardEncoder(host, SIM_BATCH), replicas)
            points.append({"replicas": n, **{k: v for k, v in result.items() if k != "replicas"}})
    base = points[0]["chunks_per_s"]
    for point in points:
        point["vs_linear"] = point["chunks_per_s"] / (base * point["replicas"])
    last = points[-1]
    rows = [
        Row(
            "data_parallel",
            f"simulated 24-core host: {last['replicas']} replicas vs linear",
            "replicas x 1 replica's throughput",
            last["vs_linear"],
            0.9,
            note=", ".join(f"{p['replicas']}: {p['vs_linear']:.2f}" for p in points)
            + f" (per-batch latency {SIM_LATENCY_S * 1000:.0f} ms, {SIM_SHARDS_PER_REPLICA} shards per replica; "
            f"start-up at 24: {last['startup_s']:.1f} s)",
            details={"points": points},
        )
    ]
    return rows, {"simulated_points": points}


def data_parallel_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    rows, info = cpu_rows(ctx)
    more, sim = simulated_rows(ctx)
    return rows + more, {**info, **sim}
