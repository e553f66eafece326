"""The built-in corpus: a known-item retrieval set (BEIR layout) made from the docstrings of the Python standard library.

The summary sentence of a docstring is the query, the rest of the docstring is the document, so the query never
appears verbatim in its answer.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronforge.artifacts import atomic_dir
from neuronforge.corpus.fingerprints import corpus_fingerprint

__all__ = ["CorpusStats", "build_stdlib_corpus", "split_summary"]

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
