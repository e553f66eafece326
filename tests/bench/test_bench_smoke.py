"""The bench harness on tiny inputs: ratio rows and their verdicts, alternated timing, table, JSON, charts, samples.

No timing assertions: the figures themselves come from `make bench` on a real machine.
"""

from __future__ import annotations

import json

import pytest

from bench.context import DEFAULT, QUICK, hash_sample
from bench.harness import (
    Row,
    alternate,
    cprofile_summary,
    format_ratio,
    format_table,
    length_stats,
    paired_ratio,
    percentiles,
    ratios_chart,
    scaling_chart,
    write_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rows() -> list[Row]:
    return [
        Row("dense", "fp32 throughput", "library", 1.4, 1.3, quality="min cosine 1.0"),
        Row("dense", "int8 throughput", "library", 2.5, 2.0, quality="mean cosine 0.98", quality_ok=False),
        Row("orchestration", "wall / steps", "steps", 1.1, 1.3, higher_is_better=False),
        Row("scaling", "peak RSS", "1x", 1.6, 1.25, higher_is_better=False),
        Row("search", "vs bm25s", "bm25s", None, 10.0, note="not installed"),
    ]


def test_row_verdicts():
    fast, lossy, overhead, memory, absent = rows()
    assert fast.status == "pass" and fast.target_text == ">= 1.3"
    assert lossy.ratio_ok and lossy.status == "MISS"  # fast but fails its quality condition
    assert overhead.status == "pass" and overhead.target_text == "<= 1.3"
    assert memory.status == "MISS"
    assert absent.status == "n/a" and not absent.ratio_ok
    assert Row("x", "nan", "b", float("nan"), 1.0).status == "MISS"


def test_alternate_rotates_and_pairs():
    calls: list[tuple[str, int]] = []

    def contender(name):
        def run(r):
            calls.append((name, r))
            return f"{name}{r}"

        return run

    seconds, outputs = alternate({"a": contender("a"), "b": contender("b")}, rounds=3)
    assert calls[:2] == [("a", 0), ("b", 0)]  # warm-up, untimed
    assert calls[2:] == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert outputs == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    assert all(len(v) == 3 and min(v) >= 0 for v in seconds.values())

    stats = paired_ratio([2.0, 4.0, 3.0], [1.0, 1.0, 3.0])
    assert stats == {"median": 2.0, "min": 1.0, "max": 4.0, "rounds": 3}


def test_statistics():
    assert percentiles([1, 2, 3, 4, 100], (50,)) == {"p50": 3.0}
    stats = length_stats([10, 20, 30, 128])
    assert stats["count"] == 4 and stats["max"] == 128 and stats["mean"] == 47.0
    summary = cprofile_summary(lambda: sorted(range(1000)), top=3)
    assert "ncalls" in summary


def test_table_json_and_charts(tmp_path):
    table = format_table(rows())
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["section", "figure", "baseline"]
    assert len(lines) == 2 + len(rows())
    assert "1.40x" in table and "MISS" in table and "n/a" in table
    assert format_ratio(0.000512) == "0.00051x" and format_ratio(2.5) == "2.50x"

    report = write_json(tmp_path / "out" / "results.json", rows(), {"mode": "test", "value": float("inf")})
    loaded = json.loads((tmp_path / "out" / "results.json").read_text())
    assert loaded == report and loaded["value"] is None
    assert [r["status"] for r in loaded["rows"]] == ["pass", "MISS", "pass", "MISS", "n/a"]

    chart = ratios_chart(tmp_path / "out" / "ratios.png", rows())
    assert chart is not None and chart.read_bytes().startswith(PNG_MAGIC)
    points = [
        {"multiple": m, "stage_s": 1.0 * m, "stage_cpu_s": 1.5 * m, "peak_rss_mb": 500.0 + m, "chunks": 10 * m}
        for m in (1, 4, 16)
    ]
    scaling = scaling_chart(tmp_path / "out" / "scaling.png", points)
    assert scaling is not None and scaling.read_bytes().startswith(PNG_MAGIC)
    assert ratios_chart(tmp_path / "empty.png", [rows()[-1]]) is None


def test_max_overlap():
    from bench.pipeline import max_overlap

    assert max_overlap([]) == 0
    assert max_overlap([(0, 2), (1, 3), (2, 4), (5, 6)]) == 2  # an end and a start at t=2 do not overlap
    assert max_overlap([(0, 10), (1, 2), (1.5, 3)]) == 3


def test_hash_sample_is_deterministic_and_ordered():
    items = [f"doc{i}" for i in range(50)]
    sample = hash_sample(items, 10, key=str)
    assert len(sample) == 10 and sample == hash_sample(list(items), 10, key=str)
    assert sample == sorted(sample, key=items.index)
    assert hash_sample(items, None, key=str) == items


@pytest.mark.parametrize("sizes", [DEFAULT, QUICK])
def test_sizes_are_consistent(sizes):
    assert sizes.scaling_multiples[0] == 1 and list(sizes.scaling_multiples) == sorted(sizes.scaling_multiples)
    assert sizes.encode_rounds >= 3 and sizes.encode_chunks >= 32


def test_repeated_corpus_and_sample(tmp_path):
    from bench.pipeline import write_corpus_sample
    from bench.scaling import write_repeated_corpus
    from neuronforge.corpus import Document, iter_documents, load_qrels, load_queries

    docs = [Document(f"d{i}", f"title {i}", f"text number {i}", "corpus.jsonl", i + 1) for i in range(6)]
    write_repeated_corpus(docs, 3, tmp_path / "x3.jsonl")
    repeated = list(iter_documents(tmp_path / "x3.jsonl"))
    assert len(repeated) == 18 and len({d.id for d in repeated}) == 18

    source = tmp_path / "beir"
    (source / "qrels").mkdir(parents=True)
    (source / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )
    (source / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": "?"}) + "\n" for i in range(6)))
    (source / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(6))
    )
    counts = write_corpus_sample(source, tmp_path / "sample", 3)
    assert counts == {"documents": 3, "queries": 3}
    kept = {d.id for d in iter_documents(tmp_path / "sample")}
    qrels = load_qrels(tmp_path / "sample")
    assert {doc for judged in qrels.values() for doc in judged} == kept
    assert set(load_queries(tmp_path / "sample")) == set(qrels)
