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
    for name, plot in pngs.items():
        assert plot.full.startswith(b"\x89PNG"), name
        assert len(plot.full) <= plots.MAX_PNG_BYTES, (name, len(plot.full))
        if plot.inline is not None:
            assert plot.inline.startswith(b"\x89PNG") and len(plot.inline) <= plots.INLINE_PNG_BYTES
    # Bars and histograms are simple enough to show in the metadata table itself.
    assert all(pngs[name].inline is not None for name in ("chunk lengths", "scores"))


def test_an_inline_plot_renders_in_place_in_the_ui() -> None:
    """dagster-ui renders a markdown value in place only below 1000 characters (MetadataEntry.tsx)."""
    import dagster as dg

    from assets.common import plot_metadata

    plot = plots.score_bars({"dense": 0.71, "sparse": 0.55, "hybrid": 0.74}, "nDCG@10")
    metadata = plot_metadata("ndcg_by_system", plot, "nDCG@10 per system")
    assert isinstance(metadata["ndcg_by_system"], dg.MarkdownMetadataValue)
    assert len(metadata["ndcg_by_system"].md_str) < 1000
    assert len(metadata["ndcg_by_system_full"].md_str) > 1000


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
    assert plots.projection(np.vstack([a, b]), ["a"] * 100 + ["b"] * 100).full.startswith(b"\x89PNG")
    assert plots.projection(np.zeros((0, 8)), []).full.startswith(b"\x89PNG")  # an empty corpus still renders
