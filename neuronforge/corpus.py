"""Corpora: the built-in stdlib corpus, streaming readers with a bad-input policy, tokenizer chunking, fingerprints.

Sources `iter_documents` reads (one record at a time, never the whole corpus in memory):

- a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), e.g. SciFact or NFCorpus unzipped;
- a `.jsonl` file: one JSON object per line with `_id` (or `id`), `text` (or `contents`) and an optional `title`;
- a `.parquet` file with the same columns, read batch by batch with pyarrow;
- a folder of `.txt` / `.md` files: one document per file, id = POSIX path relative to the folder, no title.

Bad records (invalid UTF-8, malformed JSON, missing id, duplicate id, empty text, oversized) are skipped and counted in
a `BadInputReport` with their file and line, or raise `CorpusError` naming file, line, reason and fix, per
`BadInputPolicy.mode`.

The built-in corpus (`build_stdlib_corpus`) is a known-item retrieval set made from the docstrings of the Python
standard library: the summary sentence of a docstring is the query, the rest of the docstring is the document, so the
query never appears verbatim in its answer.

Title handling in chunks: like BEIR's evaluation (which embeds `title + " " + text`), every chunk of a titled document
is embedded with a title header; we use `"<title>. "` (`Chunk.prefix`) in front of each chunk, not only the first,
so a late chunk still knows which object/paper it belongs to. `Chunk.text` stays an exact slice of `Document.text`;
`Chunk.input_text` is what the encoder sees, and it fits the token budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import json
import pkgutil
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from neuronforge.artifacts import atomic_dir, sha256_file, stable_hash

__all__ = [
    "BadInputPolicy",
    "BadInputReport",
    "BadRecord",
    "Chunk",
    "CorpusError",
    "CorpusStats",
    "Document",
    "build_stdlib_corpus",
    "changed_files",
    "chunk_document",
    "content_budget",
    "corpus_fingerprint",
    "file_fingerprints",
    "iter_chunks",
    "iter_documents",
    "load_qrels",
    "load_queries",
    "qrels_splits",
    "split_summary",
]

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# JSON escapes (\uXXXX, 6 bytes for a 1-3 byte character) can make a line much larger than the text it holds: a line
# above this multiple of max_doc_bytes is rejected unread instead of parsed.
_JSON_LINE_FACTOR = 6
_JSON_LINE_SLACK = 64 * 1024
_DRAIN_BLOCK = 1 << 20


class CorpusError(RuntimeError):
    """A corpus source cannot be read, or a bad record was met with BadInputPolicy(mode="fail")."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    source: str  # file it came from, relative to the source folder (or the file name)
    line: int | None  # 1-based line (JSONL) or row (Parquet); None for one-file-per-document sources


@dataclass(frozen=True)
class BadInputPolicy:
    """What to do with a bad record: "skip" (count and report it) or "fail" (raise CorpusError)."""

    mode: Literal["skip", "fail"] = "skip"
    max_doc_bytes: int = 1_000_000  # UTF-8 size of a document's text; larger ones are bad input ("oversized")

    def __post_init__(self) -> None:
        if self.mode not in ("skip", "fail"):
            raise ValueError(f"BadInputPolicy.mode must be 'skip' or 'fail', got {self.mode!r}")
        if self.max_doc_bytes <= 0:
            raise ValueError(f"BadInputPolicy.max_doc_bytes must be positive, got {self.max_doc_bytes}")


class BadRecord(NamedTuple):
    source: str
    line: int | None
    reason: str
    detail: str = ""


_FIXES = {
    "invalid_utf8": "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
    "malformed_json": 'make every line one JSON object, e.g. {"_id": "d1", "title": "", "text": "..."}',
    "missing_id": "give every record an `_id` (or `id`) field",
    "duplicate_id": "make document ids unique (the first occurrence is kept when skipping)",
    "empty_text": "drop the record or give it a non-empty `text` field",
    "oversized": "split the document, or raise BadInputPolicy(max_doc_bytes=...)",
}


@dataclass
class BadInputReport:
    """Counts of accepted and rejected records, with the first `max_examples` rejects and where they are."""

    max_examples: int = 20
    documents: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[BadRecord] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return sum(self.counts.values())

    def add(self, record: BadRecord) -> None:
        self.counts[record.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(record)

    def summary(self) -> str:
        if not self.bad:
            return f"{self.documents} documents, no bad input"
        reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))
        first = "; ".join(_where(r) + f" {r.reason}" for r in self.examples[:5])
        return f"{self.documents} documents, {self.bad} bad records skipped ({reasons}); first: {first}"

    def as_metadata(self) -> dict[str, Any]:
        """A JSON-friendly dict for Dagster metadata."""
        return {
            "documents": self.documents,
            "bad_records": self.bad,
            "bad_by_reason": dict(sorted(self.counts.items())),
            "bad_examples": [
                {"source": r.source, "line": r.line, "reason": r.reason, "detail": r.detail} for r in self.examples
            ],
        }


def _where(record: BadRecord) -> str:
    return f"{record.source}:{record.line}" if record.line is not None else record.source


def _reject(record: BadRecord, policy: BadInputPolicy, report: BadInputReport) -> None:
    if policy.mode == "fail":
        detail = f" ({record.detail})" if record.detail else ""
        raise CorpusError(
            f"{_where(record)}: bad input: {record.reason}{detail}. Fix: {_FIXES[record.reason]}; "
            "or read with BadInputPolicy(mode='skip') to skip and count such records."
        )
    report.add(record)


# ---------------------------------------------------------------------------------------------------------- readers


def iter_documents(
    source: Path,
    policy: BadInputPolicy | None = None,
    *,
    report: BadInputReport | None = None,
) -> Iterator[Document]:
    """Stream the documents of a BEIR folder, a .jsonl or .parquet file, or a folder of .txt/.md files.

    Pass a `report` to see what was skipped; with policy.mode == "fail" the first bad record raises CorpusError.
    Duplicate ids are detected across the whole source, so the set of ids seen is kept in memory (not the texts).
    """
    policy = policy or BadInputPolicy()
    report = report if report is not None else BadInputReport()
    source = Path(source)
    seen: set[str] = set()
    for doc in _iter_raw(source, policy, report):
        if doc.id in seen:
            _reject(BadRecord(doc.source, doc.line, "duplicate_id", f"id {doc.id!r}"), policy, report)
            continue
        seen.add(doc.id)
        report.documents += 1
        yield doc


def _iter_raw(source: Path, policy: BadInputPolicy, report: BadInputReport) -> Iterator[Document]:
    if source.is_dir():
        if (source / "corpus.jsonl").is_file():
            yield from _iter_jsonl(source / "corpus.jsonl", "corpus.jsonl", policy, report)
            return
        # A folder of files (any mix of .jsonl/.parquet/.txt/.md), read in sorted order: adding a file leaves the
        # documents of the others, and so their embedding shards, unchanged.
        files = _corpus_files(source)
        if not files:
            raise CorpusError(
                f"{source} holds neither a BEIR corpus.jsonl nor any .jsonl/.parquet/.txt/.md file; point the corpus "
                "at a BEIR folder, a .jsonl/.parquet file or a folder of such files."
            )
        for path in files:
            yield from _iter_file(path, path.relative_to(source).as_posix(), policy, report)
        return
    if not source.exists():
        raise CorpusError(f"corpus source {source} does not exist; check the path in the run config.")
    yield from _iter_file(source, source.name, policy, report)


def _iter_file(source: Path, rel: str, policy: BadInputPolicy, report: BadInputReport) -> Iterator[Document]:
    suffix = source.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _iter_jsonl(source, rel, policy, report)
    elif suffix == ".parquet":
        yield from _iter_parquet(source, rel, policy, report)
    elif suffix in TEXT_SUFFIXES:
        yield from _read_text_file(source, rel, policy, report)
    else:
        raise CorpusError(
            f"{source}: unsupported corpus file type {suffix!r}; use a BEIR folder, a .jsonl or .parquet file, "
            "or a folder of .txt/.md files."
        )


def _corpus_files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.suffix.lower() in (*TEXT_SUFFIXES, *JSONL_SUFFIXES, ".parquet")
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def _read_text_file(path: Path, rel: str, policy: BadInputPolicy, report: BadInputReport) -> Iterator[Document]:
    size = path.stat().st_size
    if size > policy.max_doc_bytes:
        # Checked before reading: a runaway file never has to be held in memory.
        _reject(
            BadRecord(rel, None, "oversized", f"{size} bytes > max_doc_bytes={policy.max_doc_bytes}"), policy, report
        )
        return
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        _reject(BadRecord(rel, line, "invalid_utf8", f"byte {exc.start}: {exc.reason}"), policy, report)
        return
    if not text.strip():
        _reject(BadRecord(rel, None, "empty_text"), policy, report)
        return
    yield Document(id=rel, title="", text=text, source=rel, line=None)


def _read_capped_line(fh: IO[bytes], cap: int) -> tuple[bytes, bool]:
    """One line of at most `cap` bytes; a longer line is drained block by block and returned as (b"", True)."""
    line = fh.readline(cap + 1)
    if len(line) <= cap or line.endswith(b"\n"):
        return line, False
    while block := fh.readline(_DRAIN_BLOCK):
        if block.endswith(b"\n"):
            break
    return b"", True


def _iter_jsonl(path: Path, rel: str, policy: BadInputPolicy, report: BadInputReport) -> Iterator[Document]:
    cap = policy.max_doc_bytes * _JSON_LINE_FACTOR + _JSON_LINE_SLACK
    with open(path, "rb") as fh:
        lineno = 0
        while True:
            raw, too_long = _read_capped_line(fh, cap)
            lineno += 1
            if too_long:
                _reject(BadRecord(rel, lineno, "oversized", f"line longer than {cap} bytes"), policy, report)
                continue
            if not raw:
                break
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _reject(BadRecord(rel, lineno, "invalid_utf8", f"byte {exc.start}: {exc.reason}"), policy, report)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                _reject(BadRecord(rel, lineno, "malformed_json", exc.msg), policy, report)
                continue
            if not isinstance(record, dict):
                _reject(BadRecord(rel, lineno, "malformed_json", "not a JSON object"), policy, report)
                continue
            doc = _document_from_record(record, rel, lineno, policy, report)
            if doc is not None:
                yield doc


def _document_from_record(
    record: Mapping[str, Any], rel: str, line: int, policy: BadInputPolicy, report: BadInputReport
) -> Document | None:
    doc_id = record.get("_id", record.get("id"))
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        _reject(BadRecord(rel, line, "missing_id"), policy, report)
        return None
    text = record.get("text", record.get("contents"))
    if not isinstance(text, str) or not text.strip():
        _reject(BadRecord(rel, line, "empty_text", f"id {doc_id!r}"), policy, report)
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > policy.max_doc_bytes:
        detail = f"id {doc_id!r}: {size} bytes > max_doc_bytes={policy.max_doc_bytes}"
        _reject(BadRecord(rel, line, "oversized", detail), policy, report)
        return None
    if _has_surrogates(text):
        # JSON "\ud800" escapes decode to lone surrogates, which are not valid UTF-8 and break tokenizers.
        _reject(BadRecord(rel, line, "invalid_utf8", f"id {doc_id!r}: lone surrogate escape"), policy, report)
        return None
    title = record.get("title") or ""
    if not isinstance(title, str) or _has_surrogates(title):
        title = ""
    return Document(id=doc_id, title=title, text=text, source=rel, line=line)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _iter_parquet(
    path: Path, rel: str, policy: BadInputPolicy, report: BadInputReport, batch_size: int = 1024
) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise CorpusError(f"{rel}: not a readable Parquet file ({exc}); re-export it or convert it to JSONL.") from exc
    names = set(pf.schema_arrow.names)
    id_col = next((c for c in ("_id", "id") if c in names), None)
    text_col = next((c for c in ("text", "contents") if c in names), None)
    if id_col is None or text_col is None:
        raise CorpusError(
            f"{rel}: Parquet columns {sorted(names)} lack an id (`_id`/`id`) or text (`text`/`contents`) column; "
            "rename the columns."
        )
    columns = [id_col, text_col] + (["title"] if "title" in names else [])
    row = 0
    batches = pf.iter_batches(batch_size=batch_size, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except Exception as exc:  # a damaged row group: pyarrow's own error types vary
            raise CorpusError(
                f"{rel}: cannot read the rows after row {row} ({exc}); re-export the file or convert it to JSONL."
            ) from exc
        # Binary columns stay bytes in Arrow, so invalid UTF-8 is caught per value below instead of failing a batch.
        data = batch.to_pydict()
        titles = data.get("title") or [None] * batch.num_rows
        for doc_id, text, title in zip(data[id_col], data[text_col], titles, strict=True):
            row += 1
            fields: dict[str, Any] = {}
            bad = False
            for key, value in (("_id", doc_id), ("text", text), ("title", title)):
                if isinstance(value, bytes):
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        if key != "title":
                            _reject(BadRecord(rel, row, "invalid_utf8", f"{key}: {exc.reason}"), policy, report)
                            bad = True
                            break
                        value = ""
                fields[key] = value
            if bad:
                continue
            doc = _document_from_record(fields, rel, row, policy, report)
            if doc is not None:
                yield doc


def load_queries(folder: Path) -> dict[str, str]:
    """Queries of a BEIR folder (or a queries .jsonl file): id -> text."""
    path = Path(folder)
    if path.is_dir():
        path = path / "queries.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path} not found: a BEIR folder needs queries.jsonl to be evaluated.")
    queries: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                qid, text = str(record["_id"]), record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(
                    f'{path}:{lineno}: not a BEIR query ({exc!r}); each line must be {{"_id": "...", "text": "..."}}.'
                ) from exc
            queries[qid] = text
    return queries


def qrels_splits(folder: Path) -> list[str]:
    """The qrels splits present in a BEIR folder (`qrels/<split>.tsv`)."""
    return sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))


def load_qrels(folder: Path, split: str = "test") -> dict[str, dict[str, int]]:
    """Relevance judgments of a BEIR folder: query id -> {doc id: grade}.

    Reads `qrels/<split>.tsv` (header `query-id corpus-id score`, tab separated); 4-column TREC lines
    (`qid 0 docid grade`) are accepted too.
    """
    folder = Path(folder)
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        present = qrels_splits(folder)
        raise CorpusError(
            f"{path} not found; splits present in {folder / 'qrels'}: {present or 'none'}. "
            "Pass one of them as split, or add the qrels file."
        )
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and parts[-1].lower() == "score":
                continue
            if len(parts) == 4:  # TREC: qid iter docid rel
                parts = [parts[0], parts[2], parts[3]]
            try:
                qid, docid, grade = parts[0], parts[1], int(parts[2])
            except (IndexError, ValueError) as exc:
                raise CorpusError(
                    f"{path}:{lineno}: expected `query-id<TAB>corpus-id<TAB>score` with an integer score, "
                    f"got {line.strip()!r}."
                ) from exc
            qrels.setdefault(qid, {})[docid] = grade
    return qrels


# --------------------------------------------------------------------------------------------------------- chunking


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


# ----------------------------------------------------------------------------------------------------- fingerprints


def file_fingerprints(source: Path) -> dict[str, str]:
    """sha256 of every corpus file of a source (POSIX path relative to the source folder, or the file name).

    Hidden files are ignored. Compare two results with `changed_files` to find new/changed/removed files.
    """
    source = Path(source)
    if source.is_file():
        return {source.name: sha256_file(source)}
    if not source.is_dir():
        raise CorpusError(f"corpus source {source} does not exist; check the path in the run config.")
    return {
        p.relative_to(source).as_posix(): sha256_file(p)
        for p in sorted(source.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
    }


def corpus_fingerprint(source: Path | None = None, *, fingerprints: Mapping[str, str] | None = None) -> str:
    """One short hash for the whole source: changes iff any file is added, removed or altered."""
    if fingerprints is None:
        if source is None:
            raise ValueError("pass a source or its file_fingerprints")
        fingerprints = file_fingerprints(source)
    return stable_hash(dict(fingerprints))


def changed_files(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, list[str]]:
    """Which files are new, changed or removed between two `file_fingerprints` results."""
    return {
        "added": sorted(set(new) - set(old)),
        "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k]),
        "removed": sorted(set(old) - set(new)),
    }


# ---------------------------------------------------------------------------------------------- the stdlib corpus

# Modules never imported: GUIs, a browser opener, printers-on-import, terminal state changers, test suites, shims that
# third-party packages replace (distutils -> setuptools), codec tables with no prose.
_STDLIB_SKIP = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "lib2to3",
        "test",
        "tests",
        "idle_test",
        "distutils",
        "ensurepip",
        "readline",
        "rlcompleter",
        "pydoc_data",
        "encodings",
        "msilib",
        "msvcrt",
        "winreg",
        "winsound",
        "nt",
        "sitecustomize",
        "usercustomize",
        "__main__",
    }
)
_SIGNATURE_LINE = re.compile(r"^[A-Za-z_][\w.\[\]]*\(.*\)\s*(->.*)?$|^[\w.]+\s*->")
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`'\"(*]|\s*$)")
_MIN_QUERY_CHARS = 12
_MAX_QUERY_CHARS = 300


@dataclass(frozen=True)
class CorpusStats:
    path: Path
    documents: int
    queries: int
    qrels: int
    modules_scanned: int
    modules_failed: int
    duplicate_bodies: int
    ambiguous_queries: int
    python_version: str
    packages: dict[str, str]  # extra packages walked -> their __version__
    fingerprint: str  # hash of the written files: equal for equal output

    def as_metadata(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _stdlib_modules(roots: Iterable[str] | None, packages: Iterable[str] = ()) -> Iterator[tuple[str, Any]]:
    """Import public stdlib modules (and their public submodules) in sorted order, skipping any that fail."""
    names = sorted(roots) if roots is not None else sorted(sys.stdlib_module_names)
    names += sorted(set(packages) - set(names))
    for name in names:
        if name.startswith("_") or name in _STDLIB_SKIP:
            continue
        yield from _walk_module(name)


def _quiet_import(name: str) -> Any | None:
    # Some modules print or warn on import (deprecations); none of that belongs in a pipeline's log.
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except (Exception, SystemExit):  # platform-specific modules fail here (msvcrt, ossaudiodev, ...)
            return None


def _walk_module(name: str) -> Iterator[tuple[str, Any]]:
    module = _quiet_import(name)
    if module is None:
        yield name, None
        return
    yield name, module
    path = getattr(module, "__path__", None)
    if not path:
        return
    subs = sorted(info.name for info in pkgutil.iter_modules(path))
    for sub in subs:
        if sub.startswith("_") or sub in _STDLIB_SKIP:
            continue
        yield from _walk_module(f"{name}.{sub}")


def _own_doc(obj: Any) -> str | None:
    # obj.__doc__ rather than inspect.getdoc: getdoc falls back to a base class's docstring, which would index the same
    # text under many names.
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    return inspect.cleandoc(doc)


def _defined_in(obj: Any, modname: str) -> bool:
    owner = getattr(obj, "__module__", None)
    # C accelerators and implementations live in private twins (_heapq for heapq, _io for io, _collections_abc for
    # collections.abc): count them as the public module's.
    return isinstance(owner, str) and (
        owner == modname or owner.lstrip("_").replace(".", "_") == modname.replace(".", "_")
    )


def _documented_objects(modname: str, module: Any) -> Iterator[tuple[str, str]]:
    """(dotted name, own docstring) for a module, its public classes and functions, and their public methods."""
    doc = _own_doc(module)
    if doc:
        yield modname, doc
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_"):
            continue
        if inspect.isclass(obj) and _defined_in(obj, modname):
            doc = _own_doc(obj)
            if doc:
                yield f"{modname}.{attr}", doc
            for meth_name, member in sorted(vars(obj).items()):
                if meth_name.startswith("_"):
                    continue
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                if not (inspect.isroutine(member) or isinstance(member, property)):
                    continue
                owner = getattr(member.fget if isinstance(member, property) else member, "__module__", None)
                if isinstance(owner, str) and not (_defined_in(member, modname) or owner == obj.__module__):
                    continue  # monkeypatched in by a third-party package (transformers adds Logger.info_once)
                doc = _own_doc(member)
                if doc:
                    yield f"{modname}.{attr}.{meth_name}", doc
        elif inspect.isroutine(obj) and _defined_in(obj, modname):
            doc = _own_doc(obj)
            if doc:
                yield f"{modname}.{attr}", doc


def split_summary(doc: str) -> tuple[str | None, str]:
    """Split a docstring into (summary sentence, the rest). The summary is None when there is no usable one.

    A leading C-style signature paragraph ("dumps(obj) -> str") is dropped first: it is not a natural-language query.
    """
    paragraphs = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    first = paragraphs[0]
    rest = paragraphs[1] if len(paragraphs) > 1 else ""
    if _SIGNATURE_LINE.match(first.splitlines()[0].strip()) and rest:
        return split_summary(rest)
    match = _SENTENCE_END.search(first)
    cut = match.end() if match else len(first)
    summary = " ".join(first[:cut].split())
    body = (first[cut:].strip() + ("\n\n" + rest if rest else "")).strip()
    if not (_MIN_QUERY_CHARS <= len(summary) <= _MAX_QUERY_CHARS) or len(summary.split()) < 3:
        return None, body
    return summary, body


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def build_stdlib_corpus(
    out_dir: Path,
    *,
    min_body_chars: int = 200,
    max_docs: int | None = None,
    modules: Iterable[str] | None = None,
    packages: Iterable[str] = (),
) -> CorpusStats:
    """Write the built-in known-item corpus (BEIR layout) made from Python standard-library docstrings.

    Every public module, class, function and method with its own docstring becomes a document titled with its dotted
    name (`json.dumps`, `collections.OrderedDict.move_to_end`) whose text is the docstring minus its summary sentence;
    the summary sentence is the query and the document its one relevant answer (grade 1). Objects whose remaining body
    is shorter than `min_body_chars` are left out. Identical bodies are indexed once (first dotted name in sorted
    order); a summary shared by several documents is dropped as a query (ambiguous) while the documents stay.
    `max_docs` keeps a deterministic, hash-spread sample (not the alphabetically first modules). `modules` restricts
    the walk to some top-level stdlib modules (tests); `packages` adds installed third-party packages (e.g.
    `("networkx", "click")`) when a larger corpus is wanted: the stdlib alone gives about 1.2k documents at
    min_body_chars=200. Output is byte-identical for the same Python build (and the same package versions).
    """
    packages = tuple(packages)
    if min_body_chars < 0:
        raise ValueError(f"min_body_chars must be >= 0, got {min_body_chars}")
    if max_docs is not None and max_docs <= 0:
        raise ValueError(f"max_docs must be positive, got {max_docs}")
    scanned = failed = 0
    seen_objects: set[str] = set()
    candidates: list[tuple[str, str | None, str]] = []  # (id, summary, body)
    for modname, module in _stdlib_modules(modules, packages):
        scanned += 1
        if module is None:
            failed += 1
            continue
        for doc_id, doc in _documented_objects(modname, module):
            if doc_id in seen_objects:
                continue
            seen_objects.add(doc_id)
            summary, body = split_summary(doc)
            if len(body) < min_body_chars:
                continue
            if summary is not None and _normalise(summary) in _normalise(body):
                summary = None  # the query would be a substring of its answer: not a known-item query
            candidates.append((doc_id, summary, body))

    candidates.sort(key=lambda c: c[0])
    bodies: set[str] = set()
    unique: list[tuple[str, str | None, str]] = []
    for cand in candidates:
        key = _normalise(cand[2])
        if key in bodies:
            continue
        bodies.add(key)
        unique.append(cand)
    duplicates = len(candidates) - len(unique)
    if max_docs is not None and len(unique) > max_docs:
        # Spread the sample over all modules: take the ids with the smallest hashes, then restore id order.
        unique = sorted(sorted(unique, key=lambda c: hashlib.sha256(c[0].encode()).hexdigest())[:max_docs])

    summary_counts = Counter(_normalise(s) for _, s, _ in unique if s is not None)
    ambiguous = sum(n for n in summary_counts.values() if n > 1)

    out_dir = Path(out_dir)
    n_queries = 0
    with atomic_dir(out_dir) as tmp:
        (tmp / "qrels").mkdir()
        with (
            open(tmp / "corpus.jsonl", "w", encoding="utf-8") as corpus_fh,
            open(tmp / "queries.jsonl", "w", encoding="utf-8") as queries_fh,
            open(tmp / "qrels" / "test.tsv", "w", encoding="utf-8") as qrels_fh,
        ):
            qrels_fh.write("query-id\tcorpus-id\tscore\n")
            for doc_id, summary, body in unique:
                corpus_fh.write(json.dumps({"_id": doc_id, "title": doc_id, "text": body}, ensure_ascii=False) + "\n")
                if summary is None or summary_counts[_normalise(summary)] > 1:
                    continue
                qid = f"q:{doc_id}"
                queries_fh.write(json.dumps({"_id": qid, "text": summary}, ensure_ascii=False) + "\n")
                qrels_fh.write(f"{qid}\t{doc_id}\t1\n")
                n_queries += 1
        fingerprint = corpus_fingerprint(tmp)
    return CorpusStats(
        path=out_dir,
        documents=len(unique),
        queries=n_queries,
        qrels=n_queries,
        modules_scanned=scanned,
        modules_failed=failed,
        duplicate_bodies=duplicates,
        ambiguous_queries=ambiguous,
        python_version=".".join(map(str, sys.version_info[:3])),
        packages={p: str(getattr(sys.modules.get(p), "__version__", "unknown")) for p in sorted(packages)},
        fingerprint=fingerprint,
    )
