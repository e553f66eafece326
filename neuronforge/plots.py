"""The plots the UI shows: PNG bytes, each in two sizes.

Dagster has no image metadata type; a PNG goes into markdown metadata as a data URI. The UI renders a markdown value in
the metadata table only while it is shorter than 1000 characters (dagster-ui MetadataEntry.tsx,
`entry.mdStr.length < 1000`); longer ones hide behind "[Show Markdown]". So each plot comes as
- `inline`: an 8-colour PNG small enough (≤ INLINE_PNG_BYTES) to render in the table itself, and
- `full`: a readable PNG of at most MAX_PNG_BYTES (30 kB), one click away.

Each answers a question a person asks of the stage: how long are the chunks; do the embeddings separate the corpus's
sources; which retrieval system wins; how fast did each conversation answer.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_PNG_BYTES = 30_000
# base64 makes 4 characters of 3 bytes; the markdown around it takes ~60: stay under the UI's 1000 characters.
INLINE_PNG_BYTES = 690
OTHER = "other"


@dataclass(frozen=True)
class Plot:
    full: bytes  # ≤ MAX_PNG_BYTES
    inline: bytes | None  # ≤ INLINE_PNG_BYTES, or None when even the smallest rendering is larger


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _quantized(png_bytes: bytes, colors: int = 8) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(png_bytes)).convert("RGB").quantize(colors=colors)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def png(figure: Any, compact: Any = None) -> Plot:
    """`figure` at the highest of a few resolutions within MAX_PNG_BYTES, and the largest 8-colour rendering of
    `compact` (a sparser drawing of the same data; default `figure` itself) within INLINE_PNG_BYTES, if any."""
    plt = _pyplot()
    try:
        full = b""
        for dpi in (80, 64, 48, 36):
            full = _png(figure, dpi)
            if len(full) <= MAX_PNG_BYTES:
                break
        inline = None
        for dpi in (96, 80, 64, 56, 48, 40, 32):
            small = _quantized(_png(compact or figure, dpi))
            if len(small) <= INLINE_PNG_BYTES:
                inline = small
                break
    finally:
        plt.close(figure)
        if compact is not None:
            plt.close(compact)
    return Plot(full, inline)


def source_label(doc_id: str) -> str:
    """What a document's id says of where it came from: the part before the first '.', '/', ':' or '-'."""
    return re.split(r"[./:-]", doc_id, maxsplit=1)[0] or doc_id


def top_labels(labels: Sequence[str], keep: int = 7) -> list[str]:
    """The `keep` most common labels; every other one becomes 'other'."""
    common = {label for label, _ in Counter(labels).most_common(keep)}
    return [label if label in common else OTHER for label in labels]


def chunk_length_histogram(lengths: Sequence[int], unit: str = "characters") -> Plot:
    plt = _pyplot()
    lengths = np.asarray(lengths)
    figure, axis = plt.subplots(figsize=(5, 2.4))
    axis.hist(lengths, bins=40, color="#4f43dd")
    axis.set_xlabel(f"chunk length ({unit})")
    axis.set_ylabel("chunks")
    if lengths.size:
        axis.set_title(f"{lengths.size:,} chunks, median {int(np.median(lengths)):,} {unit}", fontsize=9)
    # In the table: the shape, and the range it spans.
    compact, small = plt.subplots(figsize=(2.6, 0.7))
    small.hist(lengths, bins=20, color="#4f43dd")
    small.set_yticks([])
    for side in ("top", "right", "left"):
        small.spines[side].set_visible(False)
    if lengths.size:
        small.set_xticks([int(lengths.min()), int(np.median(lengths)), int(lengths.max())])
    small.tick_params(axis="x", labelsize=6, length=2)
    return png(figure, compact)


def projection(vectors: np.ndarray, labels: Sequence[str], *, max_points: int = 1500, seed: int = 0) -> Plot:
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


def score_bars(scores: Mapping[str, float], label: str) -> Plot:
    """One horizontal bar per system, best on top, with its value."""
    plt = _pyplot()
    items = sorted(scores.items(), key=lambda kv: kv[1])
    figure, axis = plt.subplots(figsize=(5, 0.5 + 0.35 * max(1, len(items))))
    bars = axis.barh([k for k, _ in items], [v for _, v in items], color="#4f43dd")
    axis.bar_label(bars, labels=[f"{v:.4f}" for _, v in items], fontsize=7, padding=2)
    axis.set_xlim(0, max([1.0, *[v for _, v in items]]) * 1.12)
    axis.set_xlabel(label)
    axis.tick_params(axis="y", labelsize=7)
    # In the table: each system's kind and value beside its bar (model names are in the results table).
    compact, small = plt.subplots(figsize=(2.4, 0.15 + 0.2 * max(1, len(items))))
    small.barh(range(len(items)), [v for _, v in items], color="#4f43dd", height=0.7)
    for row, (name, value) in enumerate(items):
        small.text(0.01, row, f"{name.split(':')[0]} {value:.3f}", va="center", fontsize=6, color="white")
    small.set_xlim(0, max([1.0, *[v for _, v in items]]))
    small.axis("off")
    return png(figure, compact)


def latency_bars(rows: Sequence[tuple[str, float, float]]) -> Plot:
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
    # In the table: tokens/s per conversation, in suite order.
    compact, small = plt.subplots(figsize=(2.4, 0.6))
    small.bar(range(len(rows)), [r[2] for r in rows], color="#2e9e6a")
    small.set_xticks([])
    small.tick_params(axis="y", labelsize=5, length=2)
    small.set_title("tokens/s per conversation", fontsize=6)
    for side in ("top", "right"):
        small.spines[side].set_visible(False)
    return png(figure, compact)
