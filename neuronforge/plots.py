"""The small plots the UI shows inline (PNG bytes, at most MAX_PNG_BYTES so Dagster renders them, not a link).

Each answers a question a person asks of the stage: how long are the chunks; do the embeddings separate the corpus's
sources; which retrieval system wins; how fast did each conversation answer.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAX_PNG_BYTES = 30_000
OTHER = "other"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure: Any) -> bytes:
    """The figure as PNG, at the highest of a few resolutions that stays within MAX_PNG_BYTES."""
    plt = _pyplot()
    data = b""
    try:
        for dpi in (80, 64, 48, 36):
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
            data = buffer.getvalue()
            if len(data) <= MAX_PNG_BYTES:
                break
    finally:
        plt.close(figure)
    return data


def source_label(doc_id: str) -> str:
    """What a document's id says of where it came from: the part before the first '.', '/', ':' or '-'."""
    return re.split(r"[./:-]", doc_id, maxsplit=1)[0] or doc_id


def top_labels(labels: Sequence[str], keep: int = 7) -> list[str]:
    """The `keep` most common labels; every other one becomes 'other'."""
    common = {label for label, _ in Counter(labels).most_common(keep)}
    return [label if label in common else OTHER for label in labels]


def chunk_length_histogram(lengths: Sequence[int], unit: str = "characters") -> bytes:
    plt = _pyplot()
    lengths = np.asarray(lengths)
    figure, axis = plt.subplots(figsize=(5, 2.4))
    axis.hist(lengths, bins=40, color="#4f43dd")
    axis.set_xlabel(f"chunk length ({unit})")
    axis.set_ylabel("chunks")
    if lengths.size:
        axis.set_title(f"{lengths.size:,} chunks, median {int(np.median(lengths)):,} {unit}", fontsize=9)
    return png(figure)


def projection(vectors: np.ndarray, labels: Sequence[str], *, max_points: int = 1500, seed: int = 0) -> bytes:
    """A 2-D PCA projection of (a sample of) the vectors, coloured by label: whether the model separates sources."""
    plt = _pyplot()
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = list(labels)
    if len(vectors) > max_points:
        rows = np.random.default_rng(seed).choice(len(vectors), size=max_points, replace=False)
        vectors, labels = vectors[rows], [labels[i] for i in rows]
    centred = vectors - vectors.mean(axis=0) if len(vectors) else vectors
    points = np.zeros((len(vectors), 2))
    explained = [0.0, 0.0]
    if len(vectors) >= 2:
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        points = centred @ components[:2].T
        variance = singular**2
        explained = list(variance[:2] / variance.sum()) if variance.sum() else [0.0, 0.0]
    figure, axis = plt.subplots(figsize=(5, 3.4))
    grouped = top_labels(labels)
    for label in sorted(set(grouped), key=lambda v: (v == OTHER, v)):
        mask = np.array([g == label for g in grouped])
        axis.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, label=label, rasterized=True)
    axis.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    axis.set_ylabel(f"PC2 ({explained[1]:.0%})")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=6, markerscale=2, loc="best", frameon=False)
    axis.set_title(f"{len(points):,} chunks, coloured by source", fontsize=9)
    return png(figure)


def score_bars(scores: Mapping[str, float], label: str) -> bytes:
    """One horizontal bar per system, best on top, with its value."""
    plt = _pyplot()
    items = sorted(scores.items(), key=lambda kv: kv[1])
    figure, axis = plt.subplots(figsize=(5, 0.5 + 0.35 * max(1, len(items))))
    bars = axis.barh([k for k, _ in items], [v for _, v in items], color="#4f43dd")
    axis.bar_label(bars, labels=[f"{v:.4f}" for _, v in items], fontsize=7, padding=2)
    axis.set_xlim(0, max([1.0, *[v for _, v in items]]) * 1.12)
    axis.set_xlabel(label)
    axis.tick_params(axis="y", labelsize=7)
    return png(figure)


def latency_bars(rows: Sequence[tuple[str, float, float]]) -> bytes:
    """Per conversation: time to first token (ms) and tokens/s, side by side."""
    plt = _pyplot()
    names = [r[0] for r in rows]
    figure, (ttft, rate) = plt.subplots(1, 2, figsize=(6, 0.6 + 0.3 * max(1, len(rows))), sharey=True)
    ttft.barh(names, [r[1] for r in rows], color="#4f43dd")
    ttft.set_xlabel("TTFT (ms)")
    rate.barh(names, [r[2] for r in rows], color="#2e9e6a")
    rate.set_xlabel("tokens/s")
    ttft.tick_params(axis="y", labelsize=7)
    ttft.invert_yaxis()
    return png(figure)
