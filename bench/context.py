"""What every section shares: run sizes, the bench cache (corpus, exported artifacts), corpus chunks and logging.

First-time costs stay out of the timed regions: the stdlib corpus is built once into the cache, artifacts are exported
with the pipeline's own `export_artifact` into `<cache>/artifacts/<model>/<compile key>` (reused while the compile key
holds), and the SmolLM2 GGUF conversion is the pipeline's cached one under NEURONFORGE_HOME/cache/converted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronforge.corpus import Chunk, Document

LOG = logging.getLogger("bench")

DENSE_MODEL = "all_minilm_l6_v2"
SPARSE_MODEL = "splade_tiny"
CHAT_MODEL = "smollm2_135m_instruct"


@dataclass(frozen=True)
class Sizes:
    """How much work each section does. `default` takes ~6 min on an idle 2-core machine with warm caches and stays
    under 10 min on a first run (exports, GGUF conversion) with other test runs competing; `quick` is a smoke run. Document counts are deterministic samples of the built-in corpus (~1.2k documents,
    ~2.2k chunks of <= 128 tokens); None means all of it."""

    encode_rounds: int
    encode_chunks: int  # chunks per round (the same slice for every contender of a round)
    retrieval_docs: int | None  # documents for the fp32-vs-int8 nDCG check (None: all)
    search_docs: int | None  # documents SPLADE-encoded and indexed for the search rows (None: all)
    search_queries: int
    chat_rounds: int
    chat_new_tokens: int
    scaling_base_docs: int
    scaling_multiples: tuple[int, ...]
    pipeline_docs: int | None
    dp_docs: int  # documents encoded by each data-parallel contender (the same shards for each)
    dp_rounds: int
    dp_sim_replicas: tuple[int, ...]  # replica counts on the simulated 24-core Neuron host
    scale_docs: tuple[int, ...] = (1_000_000,)  # synthetic corpus sizes of the search-scale section
    scale_queries: int = 500
    dense_scale_rows: int = 1_000_000


DEFAULT = Sizes(
    encode_rounds=5,
    encode_chunks=96,
    retrieval_docs=300,
    search_docs=600,
    search_queries=300,
    chat_rounds=3,
    chat_new_tokens=32,
    scaling_base_docs=20,
    scaling_multiples=(1, 4, 16),
    pipeline_docs=100,
    dp_docs=150,
    dp_rounds=2,
    dp_sim_replicas=(1, 2, 4, 8, 12, 16, 24),
)
QUICK = Sizes(
    encode_rounds=3,
    encode_chunks=64,
    retrieval_docs=150,
    search_docs=200,
    search_queries=100,
    chat_rounds=2,
    chat_new_tokens=24,
    scaling_base_docs=12,
    scaling_multiples=(1, 4, 16),
    pipeline_docs=40,
    dp_docs=120,
    dp_rounds=1,
    dp_sim_replicas=(1, 4, 24),
    scale_docs=(100_000,),
    scale_queries=100,
    dense_scale_rows=100_000,
)


def hash_sample(items: list[Any], n: int | None, key) -> list[Any]:
    """A deterministic sample spread over the whole list (smallest hashes), kept in the original order."""
    if n is None or n >= len(items):
        return list(items)
    chosen = set(sorted(range(len(items)), key=lambda i: hashlib.sha256(key(items[i]).encode()).hexdigest())[:n])
    return [item for i, item in enumerate(items) if i in chosen]


class BenchContext:
    def __init__(self, out_dir: Path, cache_dir: Path, sizes: Sizes):
        self.out_dir = out_dir
        self.cache_dir = cache_dir
        self.sizes = sizes
        self.setup_seconds: dict[str, float] = {}
        cache_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------------ registry

    @functools.cached_property
    def registry(self):
        from neuronforge.registry import load_registry

        return load_registry()

    def spec(self, name: str, **changes: Any):
        spec = self.registry.get(name)
        return dataclasses.replace(spec, **changes) if changes else spec

    # --------------------------------------------------------------------------------------------------- corpus

    @functools.cached_property
    def corpus_dir(self) -> Path:
        """The built-in stdlib corpus (BEIR layout), built once into the cache."""
        from neuronforge.corpus import build_stdlib_corpus
        from resources.corpus import CorpusResource

        folder = self.cache_dir / "corpus" / "stdlib"
        if not (folder / "corpus.jsonl").is_file():
            with self.setup("build stdlib corpus"):
                build_stdlib_corpus(folder, min_body_chars=CorpusResource().min_body_chars)
        return folder

    @functools.cached_property
    def documents(self) -> list[Document]:
        from neuronforge.corpus import iter_documents

        return list(iter_documents(self.corpus_dir))

    def chunks(self, tokenizer: Any, sequence_length: int, documents: list[Document] | None = None) -> list[Chunk]:
        """The documents chunked exactly as the pipeline's shards chunk them (token budget, overlap, title prefix)."""
        from neuronforge.corpus import chunk_document, content_budget
        from resources.corpus import CorpusResource

        budget = content_budget(tokenizer, sequence_length)
        overlap = CorpusResource().chunk_overlap
        out: list[Chunk] = []
        for doc in self.documents if documents is None else documents:
            out.extend(chunk_document(doc, tokenizer, budget, overlap))
        return out

    # ------------------------------------------------------------------------------------------------ artifacts

    def artifact(self, name: str, *, quantize: str = "none", backend: str | None = None) -> Path:
        """Export (or reuse) the model's artifact with the pipeline's own export_artifact, into the bench cache."""
        from neuronforge.backends import get_backend
        from neuronforge.export import export_artifact
        from neuronforge.sources import resolve

        spec = self.spec(name, quantize=quantize)
        backend = backend or ("torch" if spec.kind == "chat" else "onnx")
        with self.setup(f"export {name} ({backend}, quantize={quantize})"):
            artifact_dir, _, _ = export_artifact(
                spec, resolve(spec), get_backend(backend), self.cache_dir / "artifacts" / name, LOG
            )
        return artifact_dir

    def model_dir(self, name: str) -> Path:
        from neuronforge.sources import resolve

        return resolve(self.spec(name)).path

    # ------------------------------------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def setup(self, label: str) -> Iterator[None]:
        """Time untimed preparation (exports, corpus builds), reported apart from the measured figures."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.setup_seconds[label] = self.setup_seconds.get(label, 0.0) + time.perf_counter() - started
