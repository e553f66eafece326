"""The corpus the retrieval stages read: a user's files, or the embedded default built from stdlib docstrings.

Configured once in corpus.yaml (or NEURONFORGE_CORPUS): `CorpusResource.configured()` is what the definitions use,
so the default job, the launchpad default, the schedules and corpus_sensor all see the same corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from neuronforge.corpus.config import DEFAULT_RRF_K, DEFAULT_RRF_WEIGHTS, load_corpus_config
from neuronforge.partitions import DEFAULT_PARTITIONS, partition_keys


class CorpusResource(dg.ConfigurableResource):
    """Where the corpus comes from and how it is read, chunked, judged and fused (settings: corpus.yaml)."""

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
    partitions: int = Field(
        default=DEFAULT_PARTITIONS,
        description="Hash buckets of the document id the corpus stages are partitioned into (neuronforge.partitions).",
    )
    ndcg_floor: float = Field(default=0.3, description="The retrieval check fails below this nDCG@10.")
    rrf_k: int = Field(default=DEFAULT_RRF_K, description="Reciprocal rank fusion constant: sum of w / (k + rank).")
    rrf_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_RRF_WEIGHTS),
        description="Fusion weight per system: 'dense', 'sparse' or a model name (a model name wins over its kind).",
    )

    @classmethod
    def configured(cls) -> CorpusResource:
        """The resource corpus.yaml (or NEURONFORGE_CORPUS) describes."""
        return cls(**load_corpus_config().resource_fields())

    def source_path(self) -> Path | None:
        if self.source is None:
            return None
        path = Path(self.source).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"corpus source {path} does not exist; set `source:` in corpus.yaml (or NEURONFORGE_CORPUS) to a BEIR "
                "folder, a .jsonl/.parquet file or a folder of .txt/.md files, or to `builtin` for the built-in corpus"
            )
        return path

    def policy(self):
        from neuronforge.corpus import BadInputPolicy

        return BadInputPolicy(mode=self.bad_input, max_doc_bytes=self.max_doc_bytes)  # type: ignore[arg-type]

    def fusion_weight(self, kind: str, model: str) -> float:
        """The RRF weight of one system: its model's own weight, else its kind's, else 1."""
        return float(self.rrf_weights.get(model, self.rrf_weights.get(kind, 1.0)))

    def partition_keys(self) -> list[str]:
        """The keys of the corpus partitions ("0-of-4", ...), in bucket order."""
        return partition_keys(self.partitions)

    def plan_shards(self, source: Path, tokenizer: Any, sequence_length: int, partition: str | None = None):
        """The embedding shards of `source` (of one partition's documents, given its key) for an encoder's tokenizer
        and sequence length, read with this resource's bad-input policy and cut with its chunk_overlap and
        shard_chunks (neuronforge.shards.plan_corpus_shards)."""
        from neuronforge.partitions import Partition
        from neuronforge.shards import plan_corpus_shards

        return plan_corpus_shards(
            source,
            self.policy(),
            tokenizer,
            sequence_length,
            self.chunk_overlap,
            self.shard_chunks,
            partition=Partition.parse(partition) if partition is not None else None,
        )
