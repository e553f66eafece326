"""The built-in stdlib corpus: a deterministic BEIR known-item set, and docstring summary splitting (no Dagster)."""

from __future__ import annotations

import pytest

from neuronforge.corpus import build_stdlib_corpus, iter_documents, load_qrels, load_queries, split_summary


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


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
