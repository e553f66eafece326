"""The corpus the retrieval stages read: a user's files, or the embedded default built from stdlib docstrings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field


class CorpusResource(dg.ConfigurableResource):
    """Where the corpus comes from and how it is read, chunked and judged."""

    source: str | None = Field(
        default=None,
        description="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv), a .jsonl or .parquet file, or a folder "
        "of .txt/.md files. None: the embedded default, built offline from the Python standard library's docstrings.",
    )
    min_body_chars: int = Field(default=200, description="Embedded default: shortest docstring body kept.")
    bad_input: str = Field(default="skip", description="'skip' (count and report bad records) or 'fail'.")
    max_doc_bytes: int = Field(default=1_000_000, description="Larger documents are bad input.")
    chunk_overlap: int = Field(default=16, description="Tokens shared by consecutive chunks of a document.")
    shard_chunks: int = Field(default=512, description="Chunks per embedding shard (the unit of resume).")
    ndcg_floor: float = Field(default=0.3, description="The retrieval check fails below this nDCG@10.")

    def source_path(self) -> Path | None:
        if self.source is None:
            return None
        path = Path(self.source).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"CorpusResource.source {self.source!r} does not exist; point it at a BEIR folder, a .jsonl/.parquet "
                "file or a folder of .txt/.md files (or leave it unset for the built-in corpus)"
            )
        return path

    def policy(self):
        from neuronforge.corpus import BadInputPolicy

        return BadInputPolicy(mode=self.bad_input, max_doc_bytes=self.max_doc_bytes)  # type: ignore[arg-type]

    def plan_shards(self, source: Path, tokenizer: Any, sequence_length: int):
        """The embedding shards of `source` for an encoder's tokenizer and sequence length, read with this resource's
        bad-input policy and cut with its chunk_overlap and shard_chunks (neuronforge.shards.plan_corpus_shards)."""
        from neuronforge.shards import plan_corpus_shards

        return plan_corpus_shards(
            source, self.policy(), tokenizer, sequence_length, self.chunk_overlap, self.shard_chunks
        )
