"""Streaming corpus readers with a bad-input policy: one record at a time, never the whole corpus in memory.

Sources `iter_documents` reads (which files, exactly: `neuronforge.corpus.files.document_files`):

- a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), e.g. SciFact or NFCorpus unzipped;
- a `.jsonl` file: one JSON object per line with `_id` (or `id`), `text` (or `contents`) and an optional `title`;
- a `.parquet` file with the same columns, read batch by batch with pyarrow;
- a folder of `.txt` / `.md` files: one document per file, id = POSIX path relative to the folder, no title.

Bad records (invalid UTF-8, malformed JSON, missing id, an id with control characters, duplicate id, empty text,
oversized) are skipped and counted in a `BadInputReport` with their file and line, or raise `CorpusError` naming file,
line, reason and fix, per `BadInputPolicy.mode` (the corpus configuration's `bad_input` setting). Blank lines are not
bad records, but they are counted.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from neuronforge.corpus.files import JSONL_SUFFIXES, TEXT_SUFFIXES, CorpusError, document_files, relative_name

__all__ = ["BadInputPolicy", "BadInputReport", "BadRecord", "CorpusError", "Document", "iter_documents"]

# JSON escapes (\uXXXX, 6 bytes for a 1-3 byte character) can make a line much larger than the text it holds: a line
# above this multiple of max_doc_bytes is rejected unread instead of parsed.
_JSON_LINE_FACTOR = 6
_JSON_LINE_SLACK = 64 * 1024
_DRAIN_BLOCK = 1 << 20


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
    "bad_id": "remove control characters (NUL, tab, newline, ESC, U+007F-U+009F) from the id or the file name",
    "duplicate_id": "make document ids unique (the first occurrence is kept when skipping)",
    "empty_text": "drop the record or give it a non-empty `text` field",
    "oversized": "split the document, or raise the corpus setting `max_doc_bytes:` (bytes of UTF-8 text)",
}
# What a user changes to skip bad records instead of failing: the corpus configuration's setting (corpus.yaml,
# CorpusResource.bad_input), not the library class behind it.
_SKIP_HINT = "or set `bad_input: skip` in the corpus configuration to skip and count such records"


@dataclass
class BadInputReport:
    """Counts of accepted and rejected records, with the first `max_examples` rejects and where they are."""

    max_examples: int = 20
    documents: int = 0
    blank_lines: int = 0  # skipped lines of JSONL files: not bad input, but counted so nothing goes unreported
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
        blank = f", {self.blank_lines} blank lines skipped" if self.blank_lines else ""
        if not self.bad:
            return f"{self.documents} documents, no bad input{blank}"
        reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))
        first = "; ".join(_where(r) + f" {r.reason}" for r in self.examples[:5])
        return f"{self.documents} documents, {self.bad} bad records skipped ({reasons}){blank}; first: {first}"

    def as_metadata(self) -> dict[str, Any]:
        """A JSON-friendly dict for Dagster metadata."""
        return {
            "documents": self.documents,
            "bad_records": self.bad,
            "blank_lines": self.blank_lines,
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
            f"{_where(record)}: bad input: {record.reason}{detail}. Fix: {_FIXES[record.reason]}; {_SKIP_HINT}."
        )
    report.add(record)


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
    files = document_files(source)
    if not files:
        raise CorpusError(
            f"{source} holds neither a BEIR corpus.jsonl nor any .jsonl/.parquet/.txt/.md file; point the corpus "
            "at a BEIR folder, a .jsonl/.parquet file or a folder of such files."
        )
    for path in files:
        yield from _iter_file(path, relative_name(source, path), policy, report)


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
    if (problem := id_problem(rel)) is not None:
        _reject(BadRecord(rel, None, "bad_id", problem), policy, report)
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
                report.blank_lines += 1
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _reject(BadRecord(rel, lineno, "invalid_utf8", f"byte {exc.start}: {exc.reason}"), policy, report)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                # The position says where in the line the JSON breaks (each record is one line).
                detail = f"{exc.msg} at column {exc.colno} (char {exc.pos})"
                _reject(BadRecord(rel, lineno, "malformed_json", detail), policy, report)
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
    if (problem := id_problem(doc_id)) is not None:
        # Ids travel into shard files, run metadata and the UI: a NUL or an escape sequence there is never intended.
        _reject(BadRecord(rel, line, "bad_id", problem), policy, report)
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


def id_problem(doc_id: str) -> str | None:
    """Why `doc_id` is not a usable document id (a control character, Unicode category Cc, or a lone surrogate from a
    JSON escape), or None."""
    for position, char in enumerate(doc_id):
        category = unicodedata.category(char)
        if category in ("Cc", "Cs"):
            what = "control character" if category == "Cc" else "lone surrogate"
            return f"id {doc_id!r} has {what} U+{ord(char):04X} at position {position}"
    return None


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
