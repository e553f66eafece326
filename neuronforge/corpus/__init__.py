"""Corpora: streaming readers with a bad-input policy, BEIR queries and qrels, tokenizer chunking, the built-in stdlib
corpus, and fingerprints.

    files         which files of a source count (`document_files`, `corpus_files`): the one walk the readers, the
                  fingerprints and the corpus sensor share; `CorpusError`
    readers       `iter_documents` over a BEIR folder, .jsonl / .parquet files or a folder of .txt/.md files, with
                  `BadInputPolicy` (skip or fail) and `BadInputReport` (counts, file and line of each bad record)
    beir          `load_queries`, `qrels_splits`, `load_qrels`
    chunking      `Chunk`, `content_budget`, `chunk_document`, `iter_chunks` (token windows that fit a sequence length)
    stdlib        `build_stdlib_corpus`: the embedded default, a known-item set made of stdlib docstrings
    fingerprints  `file_fingerprints`, `corpus_fingerprint`, `changed_files`, `corpus_stat_signature`

Plain Python (pyarrow only inside the Parquet reader): no Dagster here.
"""

from neuronforge.corpus.beir import load_qrels, load_queries, qrels_splits
from neuronforge.corpus.chunking import Chunk, chunk_document, content_budget, iter_chunks
from neuronforge.corpus.files import CorpusError, corpus_files, document_files
from neuronforge.corpus.fingerprints import changed_files, corpus_fingerprint, corpus_stat_signature, file_fingerprints
from neuronforge.corpus.readers import BadInputPolicy, BadInputReport, BadRecord, Document, iter_documents
from neuronforge.corpus.stdlib import CorpusStats, build_stdlib_corpus, split_summary

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
    "corpus_files",
    "corpus_fingerprint",
    "corpus_stat_signature",
    "document_files",
    "file_fingerprints",
    "iter_chunks",
    "iter_documents",
    "load_qrels",
    "load_queries",
    "qrels_splits",
    "split_summary",
]
