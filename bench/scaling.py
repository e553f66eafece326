"""Scaling: the corpus_embeddings path (iter_documents → plan_shards → encode_shards with the ONNX artifact) on 1x, 4x
and 16x a base corpus, each in a fresh subprocess, for encoding time and peak RSS.

The base is a document sample of the built-in corpus (Sizes.scaling_base_docs, to stay in budget); a multiple repeats
it with new document ids, so every repetition costs the same to encode and only the streaming design decides whether
memory stays flat. Linearity is judged on the CPU time the stage used (all threads; onnxruntime's workers sleep
rather than spin, so that is work done), which other processes on a shared machine barely disturb; wall times are
reported beside it. Peak RSS is the child's VmHWM from /proc/self/status (its high-water mark since exec). The
child's ru_maxrss (from os.wait4) is reported too but not used: Linux carries the forking parent's RSS into it, so
it reads the bench process's own size, not the worker's.

Run as `python -m bench.scaling CORPUS ARTIFACT OUT_DIR` it is the worker, printing one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.context import DENSE_MODEL, BenchContext, hash_sample
from bench.harness import Row


def vm_kib(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in KiB (0 where /proc is missing)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def write_repeated_corpus(documents: list, multiple: int, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in range(multiple):
            for doc in documents:
                record = {"_id": f"{doc.id}~{r}", "title": doc.title, "text": doc.text}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def worker(corpus: Path, artifact_dir: Path, out_dir: Path) -> dict[str, Any]:
    """What the corpus_embeddings asset does, minus Dagster: stream, chunk, encode and write shards."""
    from neuronforge.backends import load_encoder
    from neuronforge.shards import dense_table, encode_shards
    from resources.corpus import CorpusResource

    settings = CorpusResource()
    encoder = load_encoder(artifact_dir)
    # Warm the session up (first runs allocate and plan each input shape) so 1x is not charged a one-off cost.
    encoder.encode(["warm-up " * n for n in (4, 20, 60, 120)])
    loaded_kib = vm_kib("VmRSS")
    started, cpu_started = time.perf_counter(), time.process_time()
    shards = settings.plan_shards(corpus, encoder.tokenizer, encoder.sequence_length)
    run = encode_shards(
        shards,
        out_dir,
        encoder.manifest["compile_key"],
        lambda chunks: dense_table(chunks, encoder.encode([c.input_text for c in chunks], truncate=False)),
    )
    return {
        "stage_s": time.perf_counter() - started,
        "stage_cpu_s": time.process_time() - cpu_started,
        "encode_s": run.encode_seconds,
        "documents": run.documents,
        "chunks": run.chunks,
        "shards": len(run.shards),
        "rss_after_load_mb": loaded_kib / 1024,
        "vm_hwm_mb": vm_kib("VmHWM") / 1024,
    }


def run_worker(corpus: Path, artifact_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run the worker in a fresh interpreter; its peak RSS comes from its own rusage."""
    command = [sys.executable, "-m", "bench.scaling", str(corpus), str(artifact_dir), str(out_dir)]
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen so it does not wait again
    if proc.returncode != 0:
        raise RuntimeError(f"scaling worker failed ({proc.returncode}): {' '.join(command)}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = result["vm_hwm_mb"]
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux; includes the parent's RSS at fork (see above)
    return result


def scaling_rows(ctx: BenchContext) -> tuple[list[Row], dict[str, Any]]:
    artifact_dir = ctx.artifact(DENSE_MODEL)
    base = hash_sample(ctx.documents, ctx.sizes.scaling_base_docs, key=lambda d: d.id)
    points = []
    with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as tmp:
        for multiple in ctx.sizes.scaling_multiples:
            corpus = Path(tmp) / f"corpus-{multiple}x.jsonl"
            write_repeated_corpus(base, multiple, corpus)
            result = run_worker(corpus, artifact_dir, Path(tmp) / f"shards-{multiple}x")
            points.append({"multiple": multiple, **result})
    first, last = points[0], points[-1]
    per_chunk = [p["stage_cpu_s"] / p["chunks"] for p in points]
    growth = last["peak_rss_mb"] - first["peak_rss_mb"]
    info = {"base_documents": len(base), "points": points, "cpu_seconds_per_chunk": per_chunk}
    span = f"{last['multiple']}x vs {first['multiple']}x"
    rows = [
        Row(
            "scaling",
            f"embedding CPU time per chunk, {span}",
            f"{first['multiple']}x corpus ({first['chunks']} chunks, {len(base)} docs)",
            per_chunk[-1] / per_chunk[0],
            1.25,
            higher_is_better=False,
            note=", ".join(
                f"{p['multiple']}x: {p['chunks']} chunks {p['stage_cpu_s']:.1f}s CPU / {p['stage_s']:.1f}s wall"
                for p in points
            ),
            details=info,
        ),
        Row(
            "scaling",
            f"peak RSS, {span}",
            f"{first['multiple']}x corpus peak RSS",
            last["peak_rss_mb"] / first["peak_rss_mb"],
            1.25,
            higher_is_better=False,
            note=", ".join(f"{p['multiple']}x: {p['peak_rss_mb']:.0f} MiB" for p in points)
            + f" (+{growth:.0f} MiB; {first['rss_after_load_mb']:.0f} MiB after model load)",
        ),
    ]
    return rows, info


if __name__ == "__main__":
    corpus_arg, artifact_arg, out_arg = (Path(a) for a in sys.argv[1:4])
    print(json.dumps(worker(corpus_arg, artifact_arg, out_arg)))
