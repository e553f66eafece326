"""BEIR folders: documents streamed from corpus.jsonl, queries, qrels splits, TREC-style qrels (no Dagster)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from neuronforge.corpus import CorpusError, Document, iter_documents, load_qrels, load_queries, qrels_splits

MINI_BEIR = Path(__file__).resolve().parents[2] / "fixtures" / "corpus" / "mini_beir"


def test_reads_beir_folder_streaming_and_queries_qrels():
    docs = iter_documents(MINI_BEIR)
    assert inspect.isgenerator(docs)
    first = next(docs)
    assert first == Document("d1", "Inverted index", first.text, "corpus.jsonl", 1)
    assert [d.id for d in docs] == ["d2", "d3", "d4", "d5"]
    assert load_queries(MINI_BEIR)["q3"] == "combine rankings from several retrievers"
    assert load_qrels(MINI_BEIR) == {"q1": {"d1": 2, "d3": 1}, "q2": {"d3": 2}, "q3": {"d4": 1}}
    assert load_qrels(MINI_BEIR, "dev") == {"q2": {"d3": 1}}
    assert qrels_splits(MINI_BEIR) == ["dev", "test"]
    with pytest.raises(CorpusError, match=r"splits present .*\['dev', 'test'\]"):
        load_qrels(MINI_BEIR, "train")


def test_trec_qrels_and_bad_qrels(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("q1 0 d1 1\nq1 0 d2 0\n")
    assert load_qrels(tmp_path) == {"q1": {"d1": 1, "d2": 0}}
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(CorpusError, match=r"test.tsv:2: expected"):
        load_qrels(tmp_path)
