"""Measuring and reporting: alternated timing, ratio rows with targets, the printed table, JSON and PNG charts.

Every figure is a ratio against a baseline measured in the same process on the same inputs. The machine is shared
(other test runs come and go), so contenders run alternately, round by round, in a rotating order, and a row reports
the median of the per-round paired ratios: a load spike slows both sides of a pair, and the median drops the
rounds where it hit only one.
"""

from __future__ import annotations

import cProfile
import io
import json
import math
import pstats
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Row:
    """One benchmark figure: `ratio` against `baseline`, checked against `target`.

    `higher_is_better` says which side of the target passes (speed-ups: higher; overhead and memory growth: lower).
    `quality_ok` carries the row's other conditions (cosine, identical top-10...), described in `quality`.
    """

    section: str
    name: str
    baseline: str
    ratio: float | None
    target: float
    higher_is_better: bool = True
    quality: str = ""
    quality_ok: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    profile: str = ""

    @property
    def ratio_ok(self) -> bool:
        if self.ratio is None or not math.isfinite(self.ratio):
            return False
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "n/a"
        return "pass" if self.ratio_ok and self.quality_ok else "MISS"

    @property
    def target_text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status, "target_text": self.target_text}


# ---------------------------------------------------------------------------------------------------------- timing


def alternate(
    contenders: Mapping[str, Callable[[int], Any]], rounds: int, *, warmup: bool = True
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Time each contender once per round, `contender(round_index)`, rotating who goes first.

    A contender gets the round index so every contender of a round can work on the same input slice. Returns the
    seconds per round and the values returned (for quality checks), both by contender. With `warmup`, each contender
    runs round 0 once untimed first (lazy initialisation, allocator and cache warm-up).
    """
    names = list(contenders)
    if warmup:
        for name in names:
            contenders[name](0)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            value = contenders[name](r)
            seconds[name].append(time.perf_counter() - started)
            outputs[name].append(value)
    return seconds, outputs


def paired_ratio(baseline: Sequence[float], contender: Sequence[float]) -> dict[str, float]:
    """Speed-up of `contender` over `baseline` per round (baseline time / contender time): median, min and max."""
    ratios = np.asarray(baseline, dtype=float) / np.asarray(contender, dtype=float)
    return {
        "median": float(np.median(ratios)),
        "min": float(ratios.min()),
        "max": float(ratios.max()),
        "rounds": len(ratios),
    }


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 99)) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {f"p{p}": float(np.percentile(arr, p)) for p in points}


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    arr = np.asarray(lengths, dtype=float)
    return {
        "count": int(arr.size),
        "mean": round(float(arr.mean()), 1),
        "p10": float(np.percentile(arr, 10)),
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "max": float(arr.max()),
    }


def cprofile_summary(fn: Callable[[], Any], top: int = 8) -> str:
    """The `top` functions by cumulative time while running `fn` once (for rows that miss their target)."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start : start + top + 1])


# --------------------------------------------------------------------------------------------------------- reports


def format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if abs(ratio) >= 0.1 else f"{ratio:.2g}x"


def format_table(rows: Sequence[Row]) -> str:
    header = ["section", "figure", "baseline", "ratio", "target", "pass", "quality / notes"]
    body = []
    for row in rows:
        ratio = "-" if row.ratio is None else format_ratio(row.ratio)
        notes = "; ".join(part for part in (row.quality, row.note) if part)
        body.append([row.section, row.name, row.baseline, ratio, row.target_text, row.status, notes])
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, ["-" * w for w in widths] + ["-" * 15], *body]:
        cells = [str(cell).ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, str(line[-1])]))
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, rows: Sequence[Row], extra: Mapping[str, Any]) -> dict[str, Any]:
    report = _jsonable({**extra, "rows": [row.to_dict() for row in rows]})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return report


CHART_CLIP = 10.0


def ratios_chart(path: Path, rows: Sequence[Row]) -> Path | None:
    """One bar per figure: its ratio relative to its target, so every row reads the same way (right of 1 = meets
    the target) whatever its direction or scale; each bar is labelled with the ratio and the target themselves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if row.ratio is not None and math.isfinite(row.ratio) and row.ratio > 0]
    if not measured:
        return None
    # Clipped for display: a figure 200x inside its target would squash every other bar.
    headroom = [
        min(row.ratio / row.target if row.higher_is_better else row.target / row.ratio, CHART_CLIP) for row in measured
    ]
    figure, axis = plt.subplots(figsize=(10, 0.42 * len(measured) + 1.3))
    y = np.arange(len(measured))[::-1]
    colours = ["#2e9d5b" if row.status == "pass" else "#d1495b" for row in measured]
    axis.barh(y, headroom, color=colours, height=0.6)
    axis.axvline(1.0, color="black", linewidth=1)
    for yi, row, h in zip(y, measured, headroom, strict=True):
        axis.text(h, yi, f" {format_ratio(row.ratio)} (target {row.target_text})", va="center", fontsize=8)
    axis.set_yticks(y, [f"{row.section}: {row.name}" for row in measured], fontsize=8)
    axis.set_xscale("log")
    axis.set_xlim(min(0.1, min(headroom) / 1.5), CHART_CLIP * 10)
    axis.set_xlabel("ratio / target (lower-is-better figures: target / ratio); right of the line meets the target")
    axis.set_title("neuronforge vs plain-library baselines (green: pass, red: miss)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def scaling_chart(path: Path, points: Sequence[Mapping[str, Any]]) -> Path | None:
    """Two panels over the corpus multiple: encoding time (with the linear extrapolation of 1x) and peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        return None
    multiples = [p["multiple"] for p in points]
    seconds = [p["stage_cpu_s"] for p in points]
    wall = [p["stage_s"] for p in points]
    rss = [p["peak_rss_mb"] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(multiples, seconds, "o-", color="#4f43dd", label="CPU time")
    left.plot(multiples, wall, "s:", color="#9a94f0", label="wall time")
    left.plot(multiples, [seconds[0] * m / multiples[0] for m in multiples], "--", color="grey", label="linear from 1x")
    left.set_xlabel("corpus size (x base)")
    left.set_ylabel("stream, chunk, encode, write (s)")
    left.legend(fontsize=8)
    right.plot(multiples, rss, "o-", color="#d1495b")
    right.set_ylim(0, max(rss) * 1.3)
    right.set_xlabel("corpus size (x base)")
    right.set_ylabel("peak RSS (MiB)")
    for axis in (left, right):
        axis.set_xticks(multiples, [f"{m}x" for m in multiples])
    figure.suptitle("corpus_embeddings path: time linear, memory flat (streaming shards)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
