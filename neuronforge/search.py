"""Search the latest materialized embeddings and sparse index: dense, sparse (SPLADE) or hybrid (RRF).

    neuronforge-search "how do I parse json" --mode hybrid -k 5

Reads the current stage records under the data directory (NEURONFORGE_HOME), so it always uses what the pipeline
last produced, through the same exported artifacts (and backends) the pipeline used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.records import RecordMissingError, RecordStore, StageRecord
from neuronforge.retrieval import dense_search, reciprocal_rank_fusion, run_from_results

Run = dict[str, dict[str, float]]
MODES = ("dense", "sparse", "hybrid")


class SearchError(RuntimeError):
    """Nothing to search yet, or an unknown model."""


class Searcher:
    """Query → top-k document ids over one dense embeddings record and/or one sparse index record.

    `Searcher(dense=record, sparse=record)` searches exactly those outputs (the retrieval evaluation passes the records
    its upstream materializations named); `Searcher.current(root)` takes each stage's current record (the CLI).
    """

    def __init__(self, *, dense: StageRecord | None = None, sparse: StageRecord | None = None):
        self.dense_record = dense
        self.sparse_record = sparse
        self._dense: tuple[Any, list[str], np.ndarray] | None = None
        self._sparse: tuple[Any, Any] | None = None
        self._snippets: dict[str, str] | None = None

    @classmethod
    def current(
        cls, root: Path | None = None, *, dense_model: str | None = None, sparse_model: str | None = None
    ) -> Searcher:
        """The latest finished embeddings and sparse index under `root` (default: the data directory)."""
        from neuronforge.paths import data_dir

        store = RecordStore(Path(root) if root else data_dir())
        dense_model = dense_model or next(iter(store.names("corpus_embeddings")), None)
        sparse_model = sparse_model or next(iter(store.names("sparse_index")), None)
        try:
            dense = store.current("corpus_embeddings", dense_model) if dense_model else None
            sparse = store.current("sparse_index", sparse_model) if sparse_model else None
        except RecordMissingError as exc:
            raise SearchError(str(exc)) from exc
        return cls(dense=dense, sparse=sparse)

    def _load_dense(self) -> tuple[Any, list[str], np.ndarray]:
        if self._dense is None:
            record = self.dense_record
            if record is None:
                raise SearchError("no dense corpus_embeddings to search; materialize a dense model's corpus_embeddings")
            from neuronforge.backends import load_encoder
            from neuronforge.shards import dense_matrix, read_shards

            table = read_shards(record.path_of("dir"), None, record["shards"])
            self._dense = (
                load_encoder(record.path_of("artifact_dir")),
                table.column("doc_id").to_pylist(),
                dense_matrix(table),
            )
        return self._dense

    def _load_sparse(self) -> tuple[Any, Any]:
        if self._sparse is None:
            record = self.sparse_record
            if record is None:
                raise SearchError("no sparse_index to search; materialize a sparse model's sparse_index")
            from neuronforge.backends import load_encoder
            from neuronforge.sparse_index import SparseIndex

            self._sparse = (load_encoder(record.path_of("artifact_dir")), SparseIndex.load(record.path_of("index_dir")))
        return self._sparse

    def cores_needed(self) -> int:
        """NeuronCores the models searched here run on (a Neuron artifact's tensor_parallel_size; else 1 slot)."""
        from neuronforge.artifacts import read_manifest

        needed = [1]
        for record in (self.dense_record, self.sparse_record):
            if record is not None:
                manifest = read_manifest(record.path_of("artifact_dir"))
                if manifest["backend"] == "neuron":
                    needed.append(int(manifest.get("options", {}).get("tensor_parallel_size", 1)))
        return max(needed)

    def dense(self, queries: Sequence[str], k: int = 10, query_ids: Sequence[str] | None = None) -> Run:
        encoder, doc_ids, matrix = self._load_dense()
        return dense_search(matrix, doc_ids, encoder.encode(list(queries)), k, query_ids=_ids(queries, query_ids))

    def sparse(self, queries: Sequence[str], k: int = 10, query_ids: Sequence[str] | None = None) -> Run:
        from neuronforge.sparse_index import to_csr

        encoder, index = self._load_sparse()
        matrix = to_csr(encoder.encode(list(queries)), encoder.max_active_dims)
        return run_from_results(_ids(queries, query_ids), index.search_many(matrix, k))

    def hybrid(self, queries: Sequence[str], k: int = 10, query_ids: Sequence[str] | None = None) -> Run:
        """Reciprocal rank fusion of the dense and sparse top-100s (ranks only: their scores are not comparable)."""
        depth = max(k, 100)
        runs = [self.dense(queries, depth, query_ids), self.sparse(queries, depth, query_ids)]
        return {qid: dict(list(hits.items())[:k]) for qid, hits in reciprocal_rank_fusion(runs, top=depth).items()}

    def search(self, query: str, mode: str = "hybrid", k: int = 10) -> list[tuple[str, float, str]]:
        if mode not in MODES:
            raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        run = getattr(self, mode)([query], k)
        snippets = self.snippets()
        return [(doc, score, snippets.get(doc, "")) for doc, score in run["0"].items()]

    def snippets(self, width: int = 160) -> dict[str, str]:
        """First chunk text of each document, from whichever encoded shards exist."""
        if self._snippets is None:
            from neuronforge.shards import read_shards

            record = self.dense_record or self.sparse_record
            if record is None:
                raise SearchError("nothing to search: no corpus_embeddings or sparse_index has been materialized")
            table = read_shards(record.path_of("dir"), ["doc_id", "chunk_index", "text"], record["shards"])
            self._snippets = {}
            columns = (table.column(c).to_pylist() for c in ("doc_id", "chunk_index", "text"))
            for doc, index, text in zip(*columns, strict=True):
                if index == 0:
                    self._snippets[doc] = " ".join(text.split())[:width]
        return self._snippets


def _ids(queries: Sequence[str], query_ids: Sequence[str] | None) -> list[str]:
    return list(query_ids) if query_ids is not None else [str(i) for i in range(len(queries))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuronforge-search", description=__doc__.split("\n\n")[0])
    parser.add_argument("query")
    parser.add_argument("--mode", choices=MODES, default="hybrid")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--dense-model", help="registry name (default: the first with embeddings)")
    parser.add_argument("--sparse-model", help="registry name (default: the first with an index)")
    parser.add_argument("--data-dir", type=Path, help="default: NEURONFORGE_HOME or ./.neuronforge")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    from neuronforge.devices import CoreAllocator, CoreLeaseError

    try:
        searcher = Searcher.current(args.data_dir, dense_model=args.dense_model, sparse_model=args.sparse_model)
        # Encoding the query runs the models here: lease their cores first (held until this process exits, as the
        # Neuron runtime holds them), so a pipeline step on the same host never gets a core this CLI's runtime has.
        with CoreAllocator().lease(searcher.cores_needed(), holder="neuronforge-search"):
            hits = searcher.search(args.query, args.mode, args.k)
    except (SearchError, CoreLeaseError) as exc:
        print(f"neuronforge-search: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"id": d, "score": s, "snippet": t} for d, s, t in hits], indent=2))
    else:
        for rank, (doc, score, snippet) in enumerate(hits, 1):
            print(f"{rank:>2}. {score:8.4f}  {doc}\n    {snippet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
