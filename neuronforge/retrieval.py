"""Retrieval metrics (BEIR / pytrec_eval semantics), run fusion, and exact dense search.

A *run* maps query id -> {doc id: score}; *qrels* map query id -> {doc id: graded relevance}.

Metric conventions (those of trec_eval, which BEIR calls through pytrec_eval):
- a run is ranked by score descending, ties broken by doc id descending (trec_eval's order, so our numbers match
  BEIR's on tied scores);
- gain is the relevance grade itself (not 2**grade - 1), discount log2(rank + 1), ideal DCG from the qrels' grades;
- a document is relevant when its grade is > 0 (recall, MRR);
- queries absent from the qrels, or with no relevant document, are skipped; a judged query with no results in the run
  scores 0 (trec_eval -c), unlike BEIR, which silently drops it and so inflates the average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

__all__ = [
    "RowGroups",
    "dense_search",
    "evaluate",
    "mrr_at_k",
    "ndcg_at_k",
    "normalized_score_sum",
    "rank",
    "recall_at_k",
    "reciprocal_rank_fusion",
    "run_from_results",
    "top_k_indices",
]


# ---------------------------------------------------------------------------------------------- shared search core


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, ordered by (-score, index): exact and deterministic on ties.

    argpartition finds the k-th largest value in O(n); every score above it is in, and ties *at* it are filled with
    the lowest indices (argpartition alone would pick an arbitrary subset of a tie).
    """
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        candidates = np.arange(n)
    else:
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: k - above.size]
        candidates = np.concatenate([above, ties])
    # lexsort: last key is primary.
    return candidates[np.lexsort((candidates, -scores[candidates]))]


class RowGroups:
    """Rows (chunks) grouped by document, for MAX aggregation of chunk scores into document scores.

    `row_doc[i]` is the index in `doc_ids` of row i's document. Rows of one document need not be adjacent: `order`
    lists the rows document by document and `starts` says where each document begins (empty when rows already are
    one per document, or grouped, and no gather is needed).
    """

    def __init__(self, doc_ids: Sequence[str], row_doc: np.ndarray):
        self.doc_ids = doc_ids
        self.row_doc = np.asarray(row_doc)
        n_docs = len(doc_ids)
        if self.row_doc.size and (self.row_doc.min() < 0 or self.row_doc.max() >= n_docs):
            raise ValueError(f"row_doc points outside the {n_docs} document ids")
        self.one_row_per_doc = self.row_doc.size == n_docs and bool(np.all(self.row_doc == np.arange(n_docs)))
        grouped = bool(np.all(np.diff(self.row_doc) >= 0))
        self.order = None if grouped else np.argsort(self.row_doc, kind="stable")
        sorted_doc = self.row_doc if grouped else self.row_doc[self.order]
        self.starts = np.searchsorted(sorted_doc, np.arange(n_docs))
        if np.unique(sorted_doc).size != n_docs:
            raise ValueError("every document id needs at least one row")

    @classmethod
    def from_row_ids(cls, row_ids: Sequence[str]) -> RowGroups:
        """Group rows by their document id; documents are numbered in order of first appearance."""
        index: dict[str, int] = {}
        row_doc = np.fromiter((index.setdefault(i, len(index)) for i in row_ids), dtype=np.int64, count=len(row_ids))
        return cls(list(index), row_doc)

    def doc_scores(self, row_scores: np.ndarray) -> np.ndarray:
        """Per-document score = max over the document's rows (works on [rows] or [queries, rows])."""
        if self.one_row_per_doc or not len(self.doc_ids):
            return row_scores
        grouped = row_scores if self.order is None else np.take(row_scores, self.order, axis=-1)
        return np.maximum.reduceat(grouped, self.starts, axis=-1)


def dense_search(
    doc_matrix: np.ndarray,
    doc_ids: Sequence[str],
    query_vecs: np.ndarray,
    k: int,
    *,
    query_ids: Sequence[str] | None = None,
    block: int = 256,
) -> Run:
    """Exact top-k by dot product (= cosine for unit-norm vectors) of every query against every row.

    Rows are chunks: `doc_ids[i]` is the document of row i, and a document scores the max over its chunks. Queries
    are scored `block` at a time so memory stays at block x rows floats.
    """
    doc_matrix = np.asarray(doc_matrix, dtype=np.float32)
    query_vecs = np.atleast_2d(np.asarray(query_vecs, dtype=np.float32))
    if doc_matrix.ndim != 2 or doc_matrix.shape[0] != len(doc_ids):
        raise ValueError(f"doc_matrix {doc_matrix.shape} needs one row per doc id ({len(doc_ids)} ids)")
    if query_vecs.shape[1] != doc_matrix.shape[1]:
        raise ValueError(
            f"query dimension {query_vecs.shape[1]} != document dimension {doc_matrix.shape[1]}: "
            "queries and documents must come from the same model"
        )
    if query_ids is None:
        query_ids = [str(i) for i in range(query_vecs.shape[0])]
    if len(query_ids) != query_vecs.shape[0]:
        raise ValueError(f"{len(query_ids)} query ids for {query_vecs.shape[0]} query vectors")
    groups = RowGroups.from_row_ids(doc_ids)
    run: Run = {}
    for lo in range(0, query_vecs.shape[0], block):
        scores = groups.doc_scores(query_vecs[lo : lo + block] @ doc_matrix.T)
        for offset, row in enumerate(scores):
            top = top_k_indices(row, k)
            run[query_ids[lo + offset]] = {groups.doc_ids[j]: float(row[j]) for j in top}
    return run


def run_from_results(query_ids: Sequence[str], results: Sequence[Sequence[tuple[str, float]]]) -> Run:
    """Turn per-query [(doc id, score), ...] lists (as SparseIndex.search_many returns) into a run."""
    if len(query_ids) != len(results):
        raise ValueError(f"{len(query_ids)} query ids for {len(results)} result lists")
    return {qid: dict(hits) for qid, hits in zip(query_ids, results, strict=True)}


# ------------------------------------------------------------------------------------------------------- metrics


def rank(results: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (trec_eval's order)."""
    return [doc for doc, _ in sorted(results.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _judged(qrels: Qrels) -> Iterable[tuple[str, Mapping[str, int]]]:
    for qid in sorted(qrels):
        judgments = qrels[qid]
        if any(grade > 0 for grade in judgments.values()):
            yield qid, judgments


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _ndcg(ranked: list[str], judgments: Mapping[str, int], k: int) -> float:
    dcg = sum(max(judgments.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in judgments.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def ndcg_at_k(run: Mapping[str, Mapping[str, float]], qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k over judged queries (linear gain = grade, log2 discount, ideal from the qrels)."""
    return _mean([_ndcg(rank(run.get(qid, {})), j, k) for qid, j in _judged(qrels)])


def recall_at_k(run: Mapping[str, Mapping[str, float]], qrels: Qrels, k: int = 100) -> float:
    """Mean fraction of a query's relevant documents found in its top k."""
    values = []
    for qid, judgments in _judged(qrels):
        relevant = {doc for doc, grade in judgments.items() if grade > 0}
        values.append(len(relevant.intersection(rank(run.get(qid, {}))[:k])) / len(relevant))
    return _mean(values)


def mrr_at_k(run: Mapping[str, Mapping[str, float]], qrels: Qrels, k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant document within the top k (0 when none is)."""
    values = []
    for qid, judgments in _judged(qrels):
        ranked = rank(run.get(qid, {}))[:k]
        values.append(next((1.0 / (i + 1) for i, doc in enumerate(ranked) if judgments.get(doc, 0) > 0), 0.0))
    return _mean(values)


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Qrels) -> dict[str, float | int]:
    """The headline numbers of a run: nDCG@10, Recall@100, MRR@10 and how many queries were scored."""
    return {
        "ndcg@10": ndcg_at_k(run, qrels, 10),
        "recall@100": recall_at_k(run, qrels, 100),
        "mrr@10": mrr_at_k(run, qrels, 10),
        "queries": sum(1 for _ in _judged(qrels)),
    }


# -------------------------------------------------------------------------------------------------------- fusion


def _ordered(results: Mapping[str, float]) -> list[tuple[str, float]]:
    # Fusion output order: score descending, ties by doc id ascending (reads naturally; metrics re-rank anyway).
    return sorted(results.items(), key=lambda item: (-item[1], item[0]))


def reciprocal_rank_fusion(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    k: int = 60,
    top: int = 100,
    weights: Sequence[float] | None = None,
) -> Run:
    """RRF (Cormack et al. 2009): score(d) = sum over runs of weight / (k + rank of d in that run), rank from 1.

    Only ranks matter, so runs with incomparable scores (dense cosine, SPLADE dot products, BM25) fuse safely.
    `weights` (default all 1: the original RRF) lets a stronger system count for more.
    """
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    weights = [1.0] * len(runs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    if any(w < 0 for w in weights):
        raise ValueError(f"RRF weights must be >= 0, got {weights}")
    fused: Run = {}
    for qid in sorted({q for run in runs for q in run}):
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights, strict=True):
            for position, (doc, _) in enumerate(_ordered(run.get(qid, {}))):
                scores[doc] = scores.get(doc, 0.0) + weight / (k + position + 1)
        fused[qid] = dict(_ordered(scores)[:top])
    return fused


def normalized_score_sum(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    weights: Sequence[float] | None = None,
    top: int = 100,
) -> Run:
    """Weighted sum of min-max normalised scores, per query (a document missing from a run gets 0 from it).

    A run whose scores for a query are all equal maps them to 1.0 (each is that run's best).
    """
    weights = [1.0] * len(runs) if weights is None else list(weights)
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    fused: Run = {}
    for qid in sorted({q for run in runs for q in run}):
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights, strict=True):
            results = run.get(qid, {})
            if not results:
                continue
            lo, hi = min(results.values()), max(results.values())
            for doc, score in results.items():
                norm = (score - lo) / (hi - lo) if hi > lo else 1.0
                scores[doc] = scores.get(doc, 0.0) + weight * norm
        fused[qid] = dict(_ordered(scores)[:top])
    return fused
