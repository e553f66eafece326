"""Tokenizer chunking: documents cut into windows that fit a model's compiled sequence length.

Title handling in chunks: like BEIR's evaluation (which embeds `title + " " + text`), every chunk of a titled document
is embedded with a title header; we use `"<title>. "` (`Chunk.prefix`) in front of each chunk, not only the first,
so a late chunk still knows which object/paper it belongs to. `Chunk.text` stays an exact slice of `Document.text`;
`Chunk.input_text` is what the encoder sees, and it fits the token budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from neuronforge.corpus.readers import Document

__all__ = ["Chunk", "chunk_document", "content_budget", "iter_chunks"]


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    char_start: int
    char_end: int
    text: str  # == document.text[char_start:char_end]
    prefix: str = ""  # title header prepended for the encoder ("<title>. "), not part of the document text

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.chunk_index}"

    @property
    def input_text(self) -> str:
        """What the encoder embeds: the title header plus the chunk text."""
        return self.prefix + self.text


def content_budget(tokenizer: Any, sequence_length: int) -> int:
    """Tokens of content that fit a compiled sequence_length once the model's special tokens are added."""
    budget = sequence_length - tokenizer.num_special_tokens_to_add()
    if budget <= 0:
        raise ValueError(f"sequence_length={sequence_length} leaves no room for content after special tokens")
    return budget


def _token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is a slow tokenizer: chunking needs offset mappings; load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    # verbose=False: a long document legitimately exceeds model_max_length here; we cut it ourselves.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    return [(s, e) for s, e in enc["offset_mapping"] if e > s]


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])


def _title_prefix(tokenizer: Any, title: str, max_tokens: int) -> str:
    title = " ".join(title.split())
    if not title:
        return ""
    # A title may use at most a quarter of the budget, so chunks keep most of their room for content.
    limit = max(max_tokens // 4, 1)
    offsets = _token_offsets(tokenizer, title)
    if len(offsets) > limit:
        title = title[: offsets[limit - 1][1]]
    return f"{title}. "


def chunk_document(
    doc: Document, tokenizer: Any, max_tokens: int, overlap: int, *, with_title: bool = True
) -> list[Chunk]:
    """Cut a document into windows of at most `max_tokens` tokens (title header included), `overlap` tokens apart.

    `max_tokens` is the content budget (see `content_budget`: sequence_length minus special tokens). Windows follow
    the fast tokenizer's offsets, so each `Chunk.text` is an exact slice of `doc.text` (whitespace between tokens
    inside a window is kept, whitespace between windows is not). An empty document gives no chunk.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens={max_tokens}), got {overlap}")
    prefix = _title_prefix(tokenizer, doc.title, max_tokens) if with_title else ""
    prefix_tokens = _n_tokens(tokenizer, prefix) if prefix else 0
    budget = max_tokens - prefix_tokens
    if budget <= overlap:
        # Only possible with a tiny max_tokens; drop the title rather than loop forever.
        prefix, budget = "", max_tokens
    offsets = _token_offsets(tokenizer, doc.text)
    chunks: list[Chunk] = []
    start = 0
    while start < len(offsets):
        end = min(start + budget, len(offsets))
        while True:
            char_start, char_end = offsets[start][0], offsets[end - 1][1]
            text = doc.text[char_start:char_end]
            # A slice tokenized on its own can differ from the same tokens in context (a word cut mid-piece, BPE
            # merges across the title join): re-check what the encoder will see and shrink so it never truncates.
            excess = _n_tokens(tokenizer, prefix + text) - max_tokens
            if excess <= 0 or end - start <= 1:
                break
            end = max(start + 1, end - excess)
        chunks.append(Chunk(doc.id, len(chunks), char_start, char_end, text, prefix))
        if end >= len(offsets):
            break
        start = max(end - overlap, start + 1)
    return chunks


def iter_chunks(
    docs: Iterable[Document],
    tokenizer: Any,
    sequence_length: int,
    overlap: int = 0,
    *,
    batch_docs: int = 64,
    with_title: bool = True,
) -> Iterator[list[Chunk]]:
    """Stream chunks in batches: each yielded list holds the chunks of up to `batch_docs` documents.

    `sequence_length` is the model's (compiled) sequence length; the special tokens are subtracted here.
    """
    max_tokens = content_budget(tokenizer, sequence_length)
    if batch_docs <= 0:
        raise ValueError(f"batch_docs must be positive, got {batch_docs}")
    batch: list[Chunk] = []
    n_docs = 0
    for doc in docs:
        batch.extend(chunk_document(doc, tokenizer, max_tokens, overlap, with_title=with_title))
        n_docs += 1
        if n_docs == batch_docs:
            if batch:
                yield batch
            batch, n_docs = [], 0
    if batch:
        yield batch
