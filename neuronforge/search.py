"""Search the latest materialized embeddings and sparse index: dense, sparse (SPLADE) or hybrid (RRF).

    neuronforge-search "how do I parse json" --mode hybrid -k 5

Reads the stage pointers under the data directory (NEURONFORGE_HOME), so it always uses what the pipeline last
produced, through the same exported artifacts (and backends) the pipeline used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuronforge.retrieval import dense_search, reciprocal_rank_fusion, run_from_results

Run = dict[str, dict[str, float]]
MODES = ("dense", "sparse", "hybrid")


class SearchError(RuntimeError):
    """Nothing to search yet, or an unknown model."""


def _pointer(root: Path, stage: str, name: str) -> dict[str, Any]:
    path = root / "pointers" / stage / f"{name}.json"
    if not path.is_file():
        raise SearchError(f"no {stage} for {name!r} under {root}; run `make run` (or materialize {name}/{stage})")
    return json.loads(path.read_text())


def _models_with(root: Path, stage: str) -> list[str]:
    return sorted(p.stem for p in (root / "pointers" / stage).glob("*.json"))


class Searcher:
    """Query → top-k document ids over the latest dense embeddings and/or sparse index."""

    def __init__(self, root: Path | None = None, *, dense_model: str | None = None, sparse_model: str | None = None):
        from neuronforge.paths import data_dir

        self.root = Path(root) if root else data_dir()
        dense = _models_with(self.root, "corpus_embeddings")
        sparse = _models_with(self.root, "sparse_index")
        self.dense_model = dense_model or (dense[0] if dense else None)
        self.sparse_model = sparse_model or (sparse[0] if sparse else None)
        self._dense: tuple[Any, list[str], np.ndarray] | None = None
        self._sparse: tuple[Any, Any] | None = None
        self._snippets: dict[str, str] | None = None

    def _artifact(self, model: str) -> Path:
        return Path(_pointer(self.root, "export", model)["artifact_dir"])

    def _load_dense(self) -> tuple[Any, list[str], np.ndarray]:
        if self._dense is None:
            if self.dense_model is None:
                raise SearchError(f"no dense corpus_embeddings under {self.root}; run `make run` first")
            from neuronforge.backends import load_encoder
            from neuronforge.shards import dense_matrix, read_shards

            table = read_shards(Path(_pointer(self.root, "corpus_embeddings", self.dense_model)["dir"]))
            self._dense = (
                load_encoder(self._artifact(self.dense_model)),
                table.column("doc_id").to_pylist(),
                dense_matrix(table),
            )
        return self._dense

    def _load_sparse(self) -> tuple[Any, Any]:
        if self._sparse is None:
            if self.sparse_model is None:
                raise SearchError(f"no sparse_index under {self.root}; run `make run` first")
            from neuronforge.backends import load_encoder
            from neuronforge.sparse_index import SparseIndex

            pointer = _pointer(self.root, "sparse_index", self.sparse_model)
            self._sparse = (
                load_encoder(self._artifact(self.sparse_model)),
                SparseIndex.load(Path(pointer["index_dir"])),
            )
        return self._sparse

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

            if self.dense_model:
                shard_dir = Path(_pointer(self.root, "corpus_embeddings", self.dense_model)["dir"])
            else:
                shard_dir = Path(_pointer(self.root, "sparse_index", self.sparse_model or "")["shard_dir"])
            table = read_shards(shard_dir, ["doc_id", "chunk_index", "text"])
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
    try:
        searcher = Searcher(args.data_dir, dense_model=args.dense_model, sparse_model=args.sparse_model)
        hits = searcher.search(args.query, args.mode, args.k)
    except SearchError as exc:
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
