"""Which files of a corpus source count: the one walk the readers, the fingerprints and the corpus sensor share.

A source is a BEIR folder, a folder of document files, or one document file. Three questions used to get three
answers (the readers' own walk, `file_fingerprints` hashing every non-hidden file, the sensor's stat signature
stat-ing every file, hidden ones included), so editing a file no stage reads (`notes.csv`, a README beside a BEIR
`corpus.jsonl`) changed the fingerprint and triggered a corpus refresh. `document_files` and `corpus_files` below
are now the only walk.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BEIR_CORPUS",
    "DOCUMENT_SUFFIXES",
    "JSONL_SUFFIXES",
    "QRELS_DIR",
    "QUERIES_FILE",
    "TEXT_SUFFIXES",
    "CorpusError",
    "corpus_files",
    "document_files",
    "qrels_files",
    "relative_name",
]

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DOCUMENT_SUFFIXES = (*TEXT_SUFFIXES, *JSONL_SUFFIXES, ".parquet")
BEIR_CORPUS = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"


class CorpusError(RuntimeError):
    """A corpus source cannot be read, or a bad record was met with BadInputPolicy(mode="fail")."""


def relative_name(source: Path, path: Path) -> str:
    """How a file of `source` is named in documents, reports and fingerprints: its POSIX path relative to the source
    folder, or the file name when the source is that file."""
    return path.name if path == source else path.relative_to(source).as_posix()


def _is_hidden(source: Path, path: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(source).parts)


def document_files(source: Path) -> list[Path]:
    """The files `iter_documents` reads, in reading order.

    - a BEIR folder (one holding `corpus.jsonl`): that file only;
    - another folder: every .jsonl/.ndjson/.parquet/.txt/.md file below it, hidden files and folders excluded, sorted
      by path (so adding a file leaves the documents of the others, and their embedding shards, unchanged), except
      a top-level `queries.jsonl` (the evaluation queries, never documents); an empty list when there is none;
    - a file: the file itself (the reader rejects an unsupported type).

    Raises CorpusError when the source does not exist.
    """
    source = Path(source)
    if source.is_dir():
        if (source / BEIR_CORPUS).is_file():
            return [source / BEIR_CORPUS]
        return [
            p
            for p in sorted(source.rglob("*"))
            if p.is_file()
            and p.suffix.lower() in DOCUMENT_SUFFIXES
            and not _is_hidden(source, p)
            and p != source / QUERIES_FILE
        ]
    if not source.exists():
        raise CorpusError(f"corpus source {source} does not exist; check the path in the run config.")
    return [source]


def qrels_files(folder: Path) -> list[Path]:
    """The relevance-judgement files of a folder, `qrels/<split>.tsv` (what `qrels_splits` lists), sorted by path.

    Hidden files are not splits: a folder copied from a Mac carries AppleDouble `qrels/._test.tsv` resource forks.
    """
    return sorted(p for p in (Path(folder) / QRELS_DIR).glob("*.tsv") if not p.name.startswith("."))


def corpus_files(source: Path) -> dict[str, Path]:
    """Exactly the files whose content the corpus stages depend on, by `relative_name`, sorted by name.

    That is the `document_files` (what corpus, corpus_embeddings and sparse_index read) plus, for a folder, what
    evaluation reads: `queries.jsonl` and every `qrels/*.tsv` that `qrels_splits` lists (retrieval_eval scores
    against them and the corpus asset reports their counts, so an edited judgement must refresh the evaluation).
    Anything else in the folder (notes, READMEs or other .jsonl files beside a BEIR `corpus.jsonl`, files of other
    types, hidden document files) is not a corpus file: adding or editing it changes neither `file_fingerprints` /
    `corpus_fingerprint` nor `corpus_stat_signature`, so it triggers no refresh. A single-file source is just that
    file. Raises CorpusError when the source does not exist.
    """
    source = Path(source)
    paths = document_files(source)
    if source.is_dir():
        queries = source / QUERIES_FILE
        if queries.is_file():
            paths.append(queries)
        paths.extend(p for p in qrels_files(source) if p.is_file())
    return {relative_name(source, p): p for p in sorted(set(paths), key=lambda p: relative_name(source, p))}
