"""The sweep behind the hybrid fusion defaults (rrf_k, rrf_weights in corpus.yaml): nDCG@10 of RRF over a grid.

    python -m bench.rrf_sweep [--data-dir D] [--markdown]

Reads what the pipeline last built under the data directory (the current corpus, dense embeddings and sparse index
records: run `make run` first), scores every judged query once per system (top 100), then fuses those runs for every
(k, dense weight) of the grid. Queries are also split in two halves by a hash of their id: a default picked on one
half should hold on the other, or it is noise. Results and the choice are recorded in docs/retrieval_defaults.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from neuronforge.corpus import load_qrels, load_queries, qrels_splits
from neuronforge.records import RecordStore
from neuronforge.retrieval import evaluate, ndcg_at_k, reciprocal_rank_fusion
from neuronforge.search import Searcher

KS = (0, 1, 5, 10, 20, 30, 40, 60, 80, 100, 200)
DENSE_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # sparse weight = 1 - dense weight (equal weights = original RRF)


def half(qid: str) -> int:
    return hashlib.sha256(qid.encode()).digest()[0] & 1


def sweep(root: Path, dense_model: str | None = None, sparse_model: str | None = None) -> dict:
    store = RecordStore(root)
    corpus = store.current("corpus", "default")
    source = Path(corpus["path"])
    splits = qrels_splits(source)
    if not splits:
        raise SystemExit(f"{source} has no qrels: nothing to sweep on")
    qrels = load_qrels(source, "test" if "test" in splits else splits[0])
    queries = {q: t for q, t in load_queries(source).items() if q in qrels}
    searcher = Searcher.current(root, dense_model=dense_model, sparse_model=sparse_model)
    qids, texts = list(queries), list(queries.values())
    dense = searcher.dense(texts, 100, qids)
    sparse = searcher.sparse(texts, 100, qids)
    halves = [{q: j for q, j in qrels.items() if half(q) == h} for h in (0, 1)]
    grid = []
    for k in KS:
        for w in DENSE_WEIGHTS:
            fused = reciprocal_rank_fusion([dense, sparse], k=k, top=100, weights=[w, 1 - w])
            grid.append(
                {
                    "k": k,
                    "dense_weight": w,
                    "ndcg@10": ndcg_at_k(fused, qrels),
                    "ndcg@10 half A": ndcg_at_k(fused, halves[0]),
                    "ndcg@10 half B": ndcg_at_k(fused, halves[1]),
                }
            )
    return {
        "corpus": str(source),
        "corpus_fingerprint": corpus.key,
        "dense": {
            "records": {r.partition: r.key for r in searcher.dense_records},
            "compile_key": searcher.dense_records[0]["compile_key"],
        },
        "sparse": {
            "records": {r.partition: r.key for r in searcher.sparse_records},
            "compile_key": searcher.sparse_records[0]["compile_key"],
        },
        "queries": len(qids),
        "halves": [sum(1 for q in qrels if half(q) == h) for h in (0, 1)],
        "systems": {"dense": evaluate(dense, qrels), "sparse": evaluate(sparse, qrels)},
        "grid": grid,
    }


def markdown(result: dict) -> str:
    by = {(c["k"], c["dense_weight"]): c for c in result["grid"]}
    lines = ["| k \\ dense weight | " + " | ".join(f"{w:.1f}" for w in DENSE_WEIGHTS) + " |"]
    lines.append("|---|" + "---|" * len(DENSE_WEIGHTS))
    best = max(result["grid"], key=lambda c: c["ndcg@10"])
    for k in KS:
        cells = []
        for w in DENSE_WEIGHTS:
            value = f"{by[(k, w)]['ndcg@10']:.4f}"
            cells.append(f"**{value}**" if by[(k, w)] is best else value)
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rrf_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="default: NEURONFORGE_HOME or ./.neuronforge")
    parser.add_argument("--dense-model", help="registry name (default: the first with embeddings)")
    parser.add_argument("--sparse-model", help="registry name (default: the first with an index)")
    parser.add_argument("--markdown", action="store_true", help="also print the grid as a markdown table")
    args = parser.parse_args(argv)
    from neuronforge.paths import data_dir

    result = sweep(args.data_dir or data_dir(), args.dense_model, args.sparse_model)
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(markdown(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
