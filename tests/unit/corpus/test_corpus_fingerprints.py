"""Fingerprints and the one file walk (`corpus_files`): only files a corpus stage reads count (no Dagster)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neuronforge.corpus import (
    CorpusError,
    changed_files,
    corpus_files,
    corpus_fingerprint,
    corpus_stat_signature,
    document_files,
    file_fingerprints,
    iter_documents,
)

MINI_BEIR = Path(__file__).resolve().parents[2] / "fixtures" / "corpus" / "mini_beir"


def test_file_fingerprints_detect_new_changed_removed(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.txt").write_text("two")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("ignored")
    before = file_fingerprints(tmp_path)
    assert sorted(before) == ["a.txt", "b.txt"]
    fp = corpus_fingerprint(tmp_path)
    assert fp == corpus_fingerprint(fingerprints=before)
    (tmp_path / "b.txt").write_text("two, edited")
    (tmp_path / "c.txt").write_text("three")
    (tmp_path / "a.txt").unlink()
    after = file_fingerprints(tmp_path)
    assert changed_files(before, after) == {"added": ["c.txt"], "changed": ["b.txt"], "removed": ["a.txt"]}
    assert corpus_fingerprint(tmp_path) != fp
    single = file_fingerprints(tmp_path / "c.txt")
    assert list(single) == ["c.txt"] and len(single["c.txt"]) == 64


def beir_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "beir"
    shutil.copytree(MINI_BEIR, folder)
    return folder


def text_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha text")
    (folder / "sub" / "b.md").write_text("# Beta\n\nbeta text")
    (folder / "c.jsonl").write_text('{"_id": "c1", "text": "gamma text"}\n')
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta.txt\t1\n")
    return folder


def test_corpus_files_are_the_documents_read_plus_queries_and_qrels(tmp_path):
    beir = beir_folder(tmp_path)
    for name in ("README.md", "notes.csv", "extra.jsonl", ".hidden.jsonl"):
        (beir / name).write_text("not read: corpus.jsonl makes this a BEIR folder")
    assert list(corpus_files(beir)) == ["corpus.jsonl", "qrels/dev.tsv", "qrels/test.tsv", "queries.jsonl"]
    assert document_files(beir) == [beir / "corpus.jsonl"]
    assert {d.source for d in iter_documents(beir)} == {"corpus.jsonl"}

    docs = text_folder(tmp_path)
    (docs / "notes.csv").write_text("not a document type")
    (docs / ".hidden.txt").write_text("hidden")
    (docs / ".git").mkdir()
    (docs / ".git" / "HEAD.md").write_text("hidden folder")
    (docs / "qrels" / "README").write_text("not a .tsv")
    assert list(corpus_files(docs)) == ["a.txt", "c.jsonl", "qrels/test.tsv", "sub/b.md"]
    # The readers read exactly the document files: the walk is theirs too.
    read = [relative for relative, path in corpus_files(docs).items() if path in document_files(docs)]
    assert sorted({d.source for d in iter_documents(docs)}) == read == ["a.txt", "c.jsonl", "sub/b.md"]

    single = docs / "c.jsonl"
    assert corpus_files(single) == {"c.jsonl": single}
    assert list(file_fingerprints(single)) == ["c.jsonl"]


@pytest.mark.parametrize(
    ("layout", "non_corpus_file"),
    [
        ("beir", "README.md"),  # a README beside corpus.jsonl is not a document of a BEIR folder
        ("beir", "notes.csv"),
        ("beir", "more.jsonl"),
        ("docs", "notes.csv"),
        ("docs", ".hidden.md"),
        ("docs", ".cache/x.txt"),
        ("docs", "qrels/README"),
    ],
)
def test_a_non_corpus_file_changes_neither_fingerprint_nor_stat_signature(tmp_path, layout, non_corpus_file):
    source = beir_folder(tmp_path) if layout == "beir" else text_folder(tmp_path)
    fingerprints, fingerprint, signature = (
        file_fingerprints(source),
        corpus_fingerprint(source),
        corpus_stat_signature(source),
    )
    extra = source / non_corpus_file
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text("added")
    assert corpus_stat_signature(source) == signature
    assert file_fingerprints(source) == fingerprints and corpus_fingerprint(source) == fingerprint
    extra.write_text("added, then edited to a different size")
    assert corpus_stat_signature(source) == signature
    assert corpus_fingerprint(source) == fingerprint
    extra.unlink()
    assert corpus_stat_signature(source) == signature and corpus_fingerprint(source) == fingerprint


@pytest.mark.parametrize(
    ("layout", "corpus_file"),
    [
        ("beir", "corpus.jsonl"),
        ("beir", "queries.jsonl"),
        ("beir", "qrels/test.tsv"),
        ("docs", "a.txt"),
        ("docs", "sub/b.md"),
        ("docs", "qrels/test.tsv"),
    ],
)
def test_a_corpus_file_edit_changes_fingerprint_and_stat_signature(tmp_path, layout, corpus_file):
    source = beir_folder(tmp_path) if layout == "beir" else text_folder(tmp_path)
    before, fingerprint, signature = (
        file_fingerprints(source),
        corpus_fingerprint(source),
        corpus_stat_signature(source),
    )
    path = source / corpus_file
    path.write_text(path.read_text() + "\n")
    assert corpus_stat_signature(source) != signature
    assert corpus_fingerprint(source) != fingerprint
    assert changed_files(before, file_fingerprints(source)) == {"added": [], "changed": [corpus_file], "removed": []}


def test_adding_a_document_or_a_qrels_split_counts(tmp_path):
    source = text_folder(tmp_path)
    fingerprint, signature = corpus_fingerprint(source), corpus_stat_signature(source)
    (source / "d.md").write_text("delta text")
    assert corpus_stat_signature(source) != signature and corpus_fingerprint(source) != fingerprint
    fingerprint, signature = corpus_fingerprint(source), corpus_stat_signature(source)
    (source / "qrels" / "dev.tsv").write_text("q1\td.md\t1\n")
    assert corpus_stat_signature(source) != signature and corpus_fingerprint(source) != fingerprint


def test_a_missing_source_raises_and_an_empty_folder_has_no_files(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        file_fingerprints(tmp_path / "nope")
    with pytest.raises(CorpusError, match="does not exist"):
        corpus_stat_signature(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    # An emptied folder is a change the sensor reports (every file removed), not a tick error; the corpus asset then
    # says the folder holds no document.
    assert corpus_files(tmp_path / "empty") == {} and file_fingerprints(tmp_path / "empty") == {}
    with pytest.raises(CorpusError, match="neither a BEIR corpus.jsonl"):
        list(iter_documents(tmp_path / "empty"))
