"""Regression tests for the corpus bad-input defects of issue #15 (each failed on the code before its fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuronforge.corpus import BadInputPolicy, BadInputReport, CorpusError, iter_documents, qrels_splits
from neuronforge.corpus.files import corpus_files, document_files


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize("bad_id", ["a\x00b", "tab\tid", "new\nline", "esc\x1b[31m", "del\x7f", "c1\x85"])
def test_ids_with_nul_or_control_characters_are_bad_input(tmp_path, bad_id):
    path = _jsonl(tmp_path / "docs.jsonl", [{"_id": bad_id, "text": "some text"}, {"_id": "ok", "text": "fine"}])
    report = BadInputReport()
    assert [d.id for d in iter_documents(path, report=report)] == ["ok"]
    (bad,) = report.examples
    assert (bad.line, bad.reason) == (1, "bad_id")
    first_control = next(c for c in bad_id if not c.isprintable())
    assert f"U+{ord(first_control):04X}" in bad.detail
    with pytest.raises(CorpusError, match=r"docs.jsonl:1: bad input: bad_id .*control character"):
        list(iter_documents(path, BadInputPolicy(mode="fail")))


def test_a_file_name_with_a_control_character_is_a_bad_id(tmp_path):
    (tmp_path / "good.txt").write_text("good text")
    (tmp_path / "bell\x07.txt").write_text("bad name")
    report = BadInputReport()
    assert [d.id for d in iter_documents(tmp_path, report=report)] == ["good.txt"]
    assert [r.reason for r in report.examples] == ["bad_id"]


def test_the_json_error_position_is_kept(tmp_path):
    path = _jsonl(tmp_path / "docs.jsonl", ['{"_id": "a", "text": "x",, }'])
    report = BadInputReport()
    assert list(iter_documents(path, report=report)) == []
    (bad,) = report.examples
    assert bad.reason == "malformed_json"
    assert "column 26" in bad.detail and "char 25" in bad.detail, bad.detail


def test_the_fail_message_names_the_bad_input_setting(tmp_path):
    path = _jsonl(tmp_path / "docs.jsonl", [{"_id": "a", "text": ""}])
    with pytest.raises(CorpusError) as err:
        list(iter_documents(path, BadInputPolicy(mode="fail")))
    message = str(err.value)
    assert "bad_input: skip" in message and "BadInputPolicy" not in message, message


def test_the_oversized_fix_names_the_max_doc_bytes_setting(tmp_path):
    path = _jsonl(tmp_path / "docs.jsonl", [{"_id": "a", "text": "x" * 100}])
    with pytest.raises(CorpusError) as err:
        list(iter_documents(path, BadInputPolicy(mode="fail", max_doc_bytes=10)))
    assert "max_doc_bytes:" in str(err.value) and "BadInputPolicy" not in str(err.value)


def test_blank_lines_are_counted(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n\n   \n{"_id": "b", "text": "y"}\n\n')
    report = BadInputReport()
    assert [d.id for d in iter_documents(path, report=report)] == ["a", "b"]
    assert report.blank_lines == 3
    assert report.bad == 0  # blank lines are not bad records
    assert report.as_metadata()["blank_lines"] == 3
    assert "3 blank lines" in report.summary()


def test_hidden_qrels_files_are_not_splits(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    # macOS AppleDouble files (copied from a Mac) and editor leftovers
    (tmp_path / "qrels" / "._test.tsv").write_bytes(b"\x00\x05\x16\x07 binary resource fork")
    (tmp_path / "qrels" / ".dev.tsv").write_text("q1\td1\t1\n")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    assert qrels_splits(tmp_path) == ["test"]
    assert sorted(corpus_files(tmp_path)) == ["corpus.jsonl", "qrels/test.tsv"]


def test_queries_jsonl_is_not_read_as_documents(tmp_path):
    # A folder of JSONL documents (no corpus.jsonl) with BEIR-style queries and qrels beside them.
    _jsonl(tmp_path / "docs.jsonl", [{"_id": "d1", "text": "alpha"}])
    _jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "what is alpha"}])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    assert [p.name for p in document_files(tmp_path)] == ["docs.jsonl"]
    assert [d.id for d in iter_documents(tmp_path)] == ["d1"]
    # The queries still count for evaluation (and the fingerprint), once.
    assert sorted(corpus_files(tmp_path)) == ["docs.jsonl", "qrels/test.tsv", "queries.jsonl"]
