"""Orchestration overhead: `dagster job execute -j default_pipeline` (what `make run` runs: the multiprocess executor,
one process per step) in a scratch NEURONFORGE_HOME / DAGSTER_HOME, against the sum of its steps' durations read back
from the run's step stats (STEP_START → STEP_SUCCESS/FAILURE in the instance's event log).

The numerator is the wall time of the whole command (Python start, definitions load, run launch, every step's process
start); the denominator is the compute inside the steps. By default the run reads a document sample of the built-in
corpus and finds the GGUF conversion and the exported artifacts already in place (symlinked from the bench cache, as
on any re-run), which keeps the row inside the bench budget and makes the ratio stricter, not looser: fixed per-step
costs weigh more against shorter steps. `--full-pipeline` runs it cold (only the one-off GGUF conversion reused) on
the whole corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.context import BenchContext, hash_sample
from bench.harness import Row

REPO = Path(__file__).resolve().parent.parent


def write_corpus_sample(source: Path, out: Path, documents: int) -> dict[str, int]:
    """A BEIR folder with a deterministic document sample of `source` and the queries judged only on those docs."""
    from neuronforge.corpus import load_qrels, load_queries

    records = [json.loads(line) for line in (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]
    kept = hash_sample(records, documents, key=lambda r: r["_id"])
    ids = {r["_id"] for r in kept}
    qrels = {q: j for q, j in load_qrels(source).items() if set(j) <= ids}
    queries = load_queries(source)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    (out / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}, ensure_ascii=False) + "\n" for q in qrels), encoding="utf-8"
    )
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, j in qrels.items() for d, g in j.items()]
    (out / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"documents": len(kept), "queries": len(qrels)}


def seed_home(ctx: BenchContext, home: Path, *, artifacts: bool) -> None:
    """Reuse one-off work in the scratch home: the GGUF conversion always, the exported artifacts unless cold."""
    from neuronforge.paths import subdir

    (home / "cache").mkdir(parents=True)
    (home / "cache" / "converted").symlink_to(subdir("cache", "converted"), target_is_directory=True)
    if artifacts:
        (home / "artifacts").mkdir()
        for spec in ctx.registry.models:
            ctx.artifact(spec.name)  # make sure the cache holds the pipeline's own export
            (home / "artifacts" / spec.name).symlink_to(ctx.cache_dir / "artifacts" / spec.name)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (how many steps ran side by side)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def read_run(dagster_home: Path) -> dict[str, Any]:
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        runs = instance.get_runs(limit=1)
        if not runs:
            return {"found": False}
        run = runs[0]
        stats = instance.get_run_stats(run.run_id)
        steps = [
            {
                "step": s.step_key,
                "status": s.status.value if s.status else None,
                "start": s.start_time,
                "seconds": s.end_time - s.start_time,
            }
            for s in instance.get_run_step_stats(run.run_id)
            if s.start_time and s.end_time
        ]
        evaluations = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        checks = {}
        for record in evaluations:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            checks[f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"] = bool(evaluation.passed)
    finally:
        instance.dispose()
    return {
        "found": True,
        "checks": checks,
        "max_concurrent_steps": max_overlap([(s["start"], s["start"] + s["seconds"]) for s in steps]),
        "run_id": run.run_id,
        "status": run.status.value,
        "run_wall_s": (stats.end_time or 0) - (stats.start_time or 0),
        "steps": sorted(steps, key=lambda s: -s["seconds"]),
    }


def pipeline_rows(ctx: BenchContext, *, full: bool) -> tuple[list[Row], dict[str, Any]]:
    with ctx.setup("prepare pipeline home"):
        home = Path(tempfile.mkdtemp(prefix="pipeline-", dir=ctx.cache_dir))
        dagster_home = home / "dagster"
        dagster_home.mkdir(parents=True)
        shutil.copy(REPO / "deploy" / "dagster-local.yaml", dagster_home / "dagster.yaml")
        seed_home(ctx, home, artifacts=not full)
        run_config: dict[str, Any] = {}
        corpus: dict[str, Any] = {"source": "built-in stdlib corpus (all documents)"}
        if not full and ctx.sizes.pipeline_docs:
            sample = home / "corpus-sample"
            corpus = write_corpus_sample(ctx.corpus_dir, sample, ctx.sizes.pipeline_docs)
            run_config = {"resources": {"corpus": {"config": {"source": str(sample)}}}}
        config_file = home / "run_config.yaml"
        config_file.write_text(yaml.safe_dump(run_config))

    env = {**os.environ, "NEURONFORGE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    env.pop("NEURONFORGE_HUB_ENDPOINT", None)  # publish to the scratch home's own loopback hub
    command = [
        str(Path(sys.executable).with_name("dagster")),
        *("job", "execute", "-m", "pipelines.definitions", "-j", "default_pipeline"),
        *(("-c", str(config_file)) if run_config else ()),
    ]
    log_file = home / "dagster-job-execute.log"
    started = time.perf_counter()
    with open(log_file, "w") as log:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - started

    run = read_run(dagster_home)
    steps = run.get("steps", [])
    compute = sum(s["seconds"] for s in steps)
    checks = run.get("checks", {})
    failed_checks = sorted(name for name, passed in checks.items() if not passed)
    ok = done.returncode == 0 and run.get("status") == "SUCCESS" and not failed_checks
    info = {
        "command": " ".join(command[1:]),
        "executor": "multiprocess (dagster job execute, the default executor)",
        "corpus": corpus,
        "warm_artifacts": not full,
        "returncode": done.returncode,
        "cli_wall_s": wall,
        "step_compute_s": compute,
        "log": str(log_file),
        **run,
    }
    slowest = ", ".join(f"{s['step']} {s['seconds']:.0f}s" for s in steps[:4])
    row = Row(
        "orchestration",
        "default_pipeline wall / sum of step compute",
        "sum of step durations (run step stats)",
        wall / compute if compute else None,
        1.3,
        higher_is_better=False,
        quality=f"run {run.get('status', 'not found')}, {len(steps)} steps, checks passed "
        f"{len(checks) - len(failed_checks)}/{len(checks)}"
        + (f" (failed: {', '.join(failed_checks)})" if failed_checks else ""),
        quality_ok=ok,
        note=f"wall {wall:.0f}s (run {run.get('run_wall_s', 0):.0f}s) vs steps {compute:.0f}s (up to "
        f"{run.get('max_concurrent_steps', '?')} steps at once); {corpus.get('documents', 'all')} docs; slowest: {slowest}",
        details=info,
    )
    if ok:
        shutil.rmtree(home, ignore_errors=True)  # keep a failed run's home (log, instance) for inspection
    return [row], info
