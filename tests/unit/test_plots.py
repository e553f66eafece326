"""The inline plots stay small enough for the UI to render them (≤ 30 kB PNG) on realistic sizes of data."""

from __future__ import annotations

import numpy as np

from neuronforge import plots


def test_every_plot_fits_inline() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5000, 384)).astype(np.float32)
    sources = [f"mod{i % 12}.thing{i}" for i in range(5000)]
    pngs = {
        "chunk lengths": plots.chunk_length_histogram(rng.integers(20, 1200, size=5000)),
        "projection": plots.projection(vectors, [plots.source_label(s) for s in sources]),
        "scores": plots.score_bars({f"system {i}": float(v) for i, v in enumerate(rng.random(9))}, "nDCG@10"),
        "latency": plots.latency_bars([(f"conversation_{i}", 300.0 + i, 12.0 - i / 10) for i in range(12)]),
    }
    for name, png in pngs.items():
        assert png.startswith(b"\x89PNG"), name
        assert len(png) <= plots.MAX_PNG_BYTES, (name, len(png))


def test_sources_are_id_prefixes_and_rare_ones_are_other() -> None:
    assert [plots.source_label(d) for d in ("json.decoder.JSONDecoder", "docs/a.md", "plain")] == [
        "json",
        "docs",
        "plain",
    ]
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"]
    assert plots.top_labels(labels, keep=2) == ["a"] * 5 + ["b"] * 4 + ["other"] * 4


def test_the_projection_separates_what_differs() -> None:
    # Two clusters far apart: the first component carries nearly all the variance (shown on the axis label).
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.01, size=(100, 8)) + 1
    b = rng.normal(0, 0.01, size=(100, 8)) - 1
    assert plots.projection(np.vstack([a, b]), ["a"] * 100 + ["b"] * 100).startswith(b"\x89PNG")
    assert plots.projection(np.zeros((0, 8)), []).startswith(b"\x89PNG")  # an empty corpus still renders
