"""BEIR evaluation data beside a corpus: queries (`queries.jsonl`) and relevance judgements (`qrels/<split>.tsv`)."""

from __future__ import annotations

import json
from pathlib import Path

from neuronforge.corpus.files import QRELS_DIR, QUERIES_FILE, CorpusError, qrels_files

__all__ = ["load_qrels", "load_queries", "qrels_splits"]


def load_queries(folder: Path) -> dict[str, str]:
    """Queries of a BEIR folder (or a queries .jsonl file): id -> text."""
    path = Path(folder)
    if path.is_dir():
        path = path / QUERIES_FILE
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
    return sorted(p.stem for p in qrels_files(folder))


def load_qrels(folder: Path, split: str = "test") -> dict[str, dict[str, int]]:
    """Relevance judgments of a BEIR folder: query id -> {doc id: grade}.

    Reads `qrels/<split>.tsv` (header `query-id corpus-id score`, tab separated); 4-column TREC lines
    (`qid 0 docid grade`) are accepted too.
    """
    folder = Path(folder)
    path = folder / QRELS_DIR / f"{split}.tsv"
    if not path.is_file():
        present = qrels_splits(folder)
        raise CorpusError(
            f"{path} not found; splits present in {folder / QRELS_DIR}: {present or 'none'}. "
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
