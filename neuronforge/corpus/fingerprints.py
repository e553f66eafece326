"""Fingerprints of a corpus source: what the corpus stages were built from, and a cheap test for "did it change?".

All three walk `corpus_files` (neuronforge.corpus.files), so a file no stage reads never changes a fingerprint or
the stat signature, and never triggers a refresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from neuronforge.artifacts import sha256_file, stable_hash
from neuronforge.corpus.files import corpus_files

__all__ = ["changed_files", "corpus_fingerprint", "corpus_stat_signature", "file_fingerprints"]


def file_fingerprints(source: Path) -> dict[str, str]:
    """sha256 of every corpus file of a source (POSIX path relative to the source folder, or the file name).

    Only `corpus_files` count (documents, queries, qrels; not hidden or unread files). Compare two results with
    `changed_files` to find new/changed/removed files. Raises CorpusError when the source does not exist.
    """
    return {name: sha256_file(path) for name, path in corpus_files(Path(source)).items()}


def corpus_fingerprint(source: Path | None = None, *, fingerprints: Mapping[str, str] | None = None) -> str:
    """One short hash for the whole source: changes iff any corpus file is added, removed or altered."""
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


def corpus_stat_signature(source: Path) -> str:
    """Names, sizes and mtimes of the corpus files: a change here is when hashing the files is worth it."""
    entries = []
    for name, path in corpus_files(Path(source)).items():
        stat = path.stat()
        entries.append((name, stat.st_size, stat.st_mtime_ns))
    return stable_hash(entries)
