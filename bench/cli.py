"""The bench command: run the sections, print the table, write results.json and the charts."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import DEFAULT, QUICK, BenchContext
from bench.harness import Row, format_table, ratios_chart, scaling_chart, write_json

OUT_DIR = Path(__file__).resolve().parent / "out"
SECTIONS = ("dense", "sparse", "search", "chat", "scaling", "data_parallel", "pipeline", "search-scale")


def default_cache_dir() -> Path:
    from neuronforge.paths import subdir

    return subdir("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark neuronforge's pipeline paths against plain library baselines (ratios, pass/miss).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller inputs and fewer rounds (a smoke run, about half the time)"
    )
    parser.add_argument(
        "--full-pipeline",
        action="store_true",
        help="orchestration row on the whole built-in corpus with a cold artifact cache (adds ~5 min)",
    )
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"sections to run (default all): {SECTIONS}")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="leave these sections out")
    parser.add_argument(
        "--scale-docs",
        nargs="+",
        type=int,
        metavar="N",
        help="synthetic corpus sizes for search-scale (default 1000000; e.g. 1000000 4000000)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    parser.add_argument(
        "--cache", type=Path, default=None, help="bench cache: corpus, artifacts (default $NEURONFORGE_HOME/bench)"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}: choose from {SECTIONS}")
    return args


def section_runners(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Callable[[], tuple[list[Row], Any]]]:
    from bench.chat import chat_rows
    from bench.data_parallel import data_parallel_rows
    from bench.encoders import dense_rows, sparse_rows
    from bench.pipeline import pipeline_rows
    from bench.scaling import scaling_rows
    from bench.search import sparse_search_rows
    from bench.search_scale import search_scale_rows

    return {
        "dense": lambda: dense_rows(ctx),
        "sparse": lambda: sparse_rows(ctx),
        "search": lambda: sparse_search_rows(ctx),
        "chat": lambda: chat_rows(ctx),
        "scaling": lambda: scaling_rows(ctx),
        "data_parallel": lambda: data_parallel_rows(ctx),
        "pipeline": lambda: pipeline_rows(ctx, full=args.full_pipeline),
        "search-scale": lambda: search_scale_rows(ctx),
    }


def load_average() -> tuple[float, ...] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def machine(load_at_start: tuple[float, ...] | None) -> dict[str, Any]:
    from neuronforge.backends import toolchain_versions

    # Other processes' load is the main source of noise on a shared machine: keep it next to the figures.
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "toolchain": toolchain_versions(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sizes = QUICK if args.quick else DEFAULT
    if args.scale_docs:
        sizes = dataclasses.replace(sizes, scale_docs=tuple(args.scale_docs))
    ctx = BenchContext(args.out, args.cache or default_cache_dir(), sizes)
    wanted = [s for s in (args.sections or args.only or SECTIONS) if s not in args.skip]
    started = time.perf_counter()
    load_at_start = load_average()
    rows: list[Row] = []
    sections: dict[str, Any] = {}
    for name, run in section_runners(ctx, args).items():
        if name not in wanted:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        section_started = time.perf_counter()
        try:
            new_rows, info = run()
        except Exception as exc:  # one broken section must not hide the others' figures
            traceback.print_exc()
            new_rows, info = [Row(name, "section failed", "-", None, 0, note=f"{type(exc).__name__}: {exc}")], {}
        rows += new_rows
        sections[name] = {**info, "section_seconds": round(time.perf_counter() - section_started, 1)}
        print(f"[bench] {name} done in {sections[name]['section_seconds']:.0f}s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started

    print()
    print(format_table(rows))
    for row in rows:
        if row.profile:
            print(f"\n--- profile: {row.section} / {row.name} (missed {row.target_text}) ---\n{row.profile}")
    load = f"{load_at_start[0]:.1f}" if load_at_start else "?"
    print(f"\ntotal bench wall time {total:.0f}s ({'quick' if args.quick else 'default'} sizes, load average {load})")
    print("untimed setup: " + ", ".join(f"{k} {v:.0f}s" for k, v in ctx.setup_seconds.items()))

    args.out.mkdir(parents=True, exist_ok=True)
    charts = [ratios_chart(args.out / "ratios.png", rows)]
    scaling = sections.get("scaling", {}).get("points")
    if scaling:
        charts.append(scaling_chart(args.out / "scaling.png", scaling))
    write_json(
        args.out / "results.json",
        rows,
        {
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "default",
            "sizes": dataclasses.asdict(sizes),
            "total_seconds": round(total, 1),
            "setup_seconds": {k: round(v, 1) for k, v in ctx.setup_seconds.items()},
            "machine": machine(load_at_start),
            "sections": sections,
            "charts": [str(c) for c in charts if c],
        },
    )
    print(f"wrote {args.out / 'results.json'}" + "".join(f", {c.name}" for c in charts if c))
    return 0
