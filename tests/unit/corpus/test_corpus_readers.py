"""Corpus readers (.jsonl, .parquet, folders of .txt/.md) and the bad-input policy and report (no Dagster)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuronforge.corpus import BadInputPolicy, BadInputReport, CorpusError, iter_documents


def _bad_jsonl(path: Path) -> None:
    lines = [
        json.dumps({"_id": "a", "title": "A", "text": "good one"}).encode(),  # 1
        b'{"_id": "b", "text": "caf\xe9 latin-1"}',  # 2 invalid utf-8
        b'{"_id": "c", "text": ',  # 3 malformed
        json.dumps({"title": "no id", "text": "x"}).encode(),  # 4 missing id
        json.dumps({"_id": "a", "text": "dup"}).encode(),  # 5 duplicate id
        json.dumps({"_id": "e", "text": "   "}).encode(),  # 6 empty
        b"",  # 7 blank line: ignored, not an error
        json.dumps({"_id": "big", "text": "x" * (10 * 1024 * 1024)}).encode(),  # 8 10 MB document
        json.dumps({"_id": "f", "text": "two MB " * 300_000}).encode(),  # 9 2 MB: parsed, then too big
        b"[1, 2, 3]",  # 10 not an object
        json.dumps({"_id": "g", "text": "lone \ud800 surrogate"}).encode(),  # 11 invalid once decoded
        json.dumps({"id": 7, "contents": "pyserini style"}).encode(),  # 12 good, int id
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_jsonl_bad_input_is_skipped_counted_and_located(tmp_path):
    path = tmp_path / "docs.jsonl"
    _bad_jsonl(path)
    report = BadInputReport()
    docs = list(iter_documents(path, BadInputPolicy(), report=report))
    assert [(d.id, d.line) for d in docs] == [("a", 1), ("7", 12)]
    assert docs[1].text == "pyserini style"
    assert dict(report.counts) == {
        "invalid_utf8": 2,
        "malformed_json": 2,
        "missing_id": 1,
        "duplicate_id": 1,
        "empty_text": 1,
        "oversized": 2,
    }
    where = [(r.source, r.line, r.reason) for r in report.examples]
    assert where == [
        ("docs.jsonl", 2, "invalid_utf8"),
        ("docs.jsonl", 3, "malformed_json"),
        ("docs.jsonl", 4, "missing_id"),
        ("docs.jsonl", 5, "duplicate_id"),
        ("docs.jsonl", 6, "empty_text"),
        ("docs.jsonl", 8, "oversized"),
        ("docs.jsonl", 9, "oversized"),
        ("docs.jsonl", 10, "malformed_json"),
        ("docs.jsonl", 11, "invalid_utf8"),
    ]
    assert report.documents == 2 and report.bad == 9
    assert "oversized=2" in report.summary()
    assert report.as_metadata()["bad_by_reason"]["invalid_utf8"] == 2


def test_fail_policy_names_file_line_reason_and_fix(tmp_path):
    path = tmp_path / "docs.jsonl"
    _bad_jsonl(path)
    with pytest.raises(CorpusError) as err:
        list(iter_documents(path, BadInputPolicy(mode="fail")))
    message = str(err.value)
    assert "docs.jsonl:2" in message and "invalid_utf8" in message and "Fix: re-encode" in message


def test_larger_max_doc_bytes_accepts_a_10mb_document(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"_id": "big", "text": "word " * 2_000_000}) + "\n")
    (doc,) = iter_documents(path, BadInputPolicy(max_doc_bytes=20_000_000))
    assert len(doc.text) == 10_000_000
    with pytest.raises(CorpusError, match="oversized"):
        list(iter_documents(path, BadInputPolicy(mode="fail")))


def test_parquet_reader_batches_and_reports_rows(tmp_path):
    path = tmp_path / "docs.parquet"
    table = pa.table(
        {
            "_id": pa.array([b"p1", b"p2", b"p3", b"p4"], pa.binary()),
            "title": ["T1", None, "T3", "T4"],
            "text": pa.array([b"first text", b"bad \xff byte", b"", b"fourth text"], pa.binary()),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    report = BadInputReport()
    docs = list(iter_documents(path, report=report))
    assert [(d.id, d.title, d.text, d.line) for d in docs] == [
        ("p1", "T1", "first text", 1),
        ("p4", "T4", "fourth text", 4),
    ]
    assert [(r.line, r.reason) for r in report.examples] == [(2, "invalid_utf8"), (3, "empty_text")]

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocols.parquet")
    with pytest.raises(CorpusError, match="rename the columns"):
        list(iter_documents(tmp_path / "nocols.parquet"))


def test_text_folder_reader(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha text")
    (tmp_path / "sub" / "b.md").write_text("# Beta\n\nbeta text")
    (tmp_path / "sub" / "c.md").write_bytes(b"line one\nline \xff two\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "huge.txt").write_bytes(b"y" * (10 * 1024 * 1024))
    (tmp_path / ".hidden.txt").write_text("ignored")
    (tmp_path / "notes.csv").write_text("ignored")
    report = BadInputReport()
    docs = list(iter_documents(tmp_path, report=report))
    assert [(d.id, d.source, d.line) for d in docs] == [("a.txt", "a.txt", None), ("sub/b.md", "sub/b.md", None)]
    assert sorted((r.source, r.line, r.reason) for r in report.examples) == [
        ("empty.txt", None, "empty_text"),
        ("huge.txt", None, "oversized"),
        ("sub/c.md", 2, "invalid_utf8"),
    ]


def test_unreadable_sources_raise_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        list(iter_documents(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CorpusError, match="unsupported corpus file type '.csv'"):
        list(iter_documents(tmp_path / "x.csv"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CorpusError, match="neither a BEIR corpus.jsonl"):
        list(iter_documents(tmp_path / "emptydir"))
    with pytest.raises(ValueError, match="mode"):
        BadInputPolicy(mode="ignore")  # type: ignore[arg-type]
