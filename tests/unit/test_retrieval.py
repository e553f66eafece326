"""Retrieval metrics against hand-computed values, fusion, and exact dense search."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest

from neuronforge.retrieval import (
    RowGroups,
    dense_search,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    normalized_score_sum,
    rank,
    recall_at_k,
    reciprocal_rank_fusion,
    run_from_results,
    top_k_indices,
)

# q1: graded judgments, ranked d3 (0), d1 (2), d4 (unjudged), d2 (1).
# q2: judged, but absent from the run -> scores 0 everywhere.
# q3: in the run, not in the qrels -> skipped.
# q4: judged only with grade 0 -> no relevant document -> skipped.
QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d5": 1}, "q4": {"d1": 0}}
RUN = {
    "q1": {"d3": 4.0, "d1": 3.0, "d4": 2.0, "d2": 1.0},
    "q3": {"d1": 1.0},
    "q4": {"d1": 1.0},
}


def test_ndcg_by_hand():
    # DCG@10 = 0/log2(2) + 2/log2(3) + 0/log2(4) + 1/log2(5); ideal = 2/log2(2) + 1/log2(3).
    q1 = (2 / log2(3) + 1 / log2(5)) / (2 + 1 / log2(3))
    assert q1 == pytest.approx(0.643323, abs=1e-6)
    assert ndcg_at_k(RUN, QRELS, k=10) == pytest.approx((q1 + 0.0) / 2)
    # Cut at 2: DCG = 2/log2(3); the ideal is cut at 2 too (both relevant docs fit).
    assert ndcg_at_k(RUN, QRELS, k=2) == pytest.approx((2 / log2(3)) / (2 + 1 / log2(3)) / 2)
    # Cut at 1: the only result is d3 (grade 0).
    assert ndcg_at_k(RUN, QRELS, k=1) == 0.0
    perfect = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d5": 9.0}}
    assert ndcg_at_k(perfect, QRELS) == pytest.approx(1.0)


def test_recall_and_mrr_by_hand():
    # q1 has 2 relevant docs: top 3 = d3, d1, d4 finds one; top 4 finds both. q2 finds none.
    assert recall_at_k(RUN, QRELS, k=3) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(RUN, QRELS, k=100) == pytest.approx((1 + 0) / 2)
    # First relevant doc of q1 is at rank 2.
    assert mrr_at_k(RUN, QRELS, k=10) == pytest.approx((1 / 2 + 0) / 2)
    assert mrr_at_k(RUN, QRELS, k=1) == 0.0
    assert evaluate(RUN, QRELS) == {
        "ndcg@10": pytest.approx(ndcg_at_k(RUN, QRELS, 10)),
        "recall@100": pytest.approx(0.5),
        "mrr@10": pytest.approx(0.25),
        "queries": 2,
    }
    assert evaluate({}, {}) == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "queries": 0}


def test_ties_follow_trec_eval_order():
    # Equal scores rank by doc id descending (as trec_eval / pytrec_eval do): "b" before "a".
    assert rank({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]
    assert mrr_at_k({"q": {"a": 1.0, "b": 1.0}}, {"q": {"a": 1}}) == pytest.approx(0.5)


RUN_A = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
RUN_B = {"q": {"c": 10.0, "a": 5.0}, "only_b": {"x": 1.0}}


def test_reciprocal_rank_fusion_by_hand():
    fused = reciprocal_rank_fusion([RUN_A, RUN_B], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62}
    assert list(fused["q"]) == ["a", "c", "b"]
    assert fused["q"] == pytest.approx(expected)
    assert fused["only_b"] == pytest.approx({"x": 1 / 61})  # a query in one run only
    assert list(reciprocal_rank_fusion([RUN_A, RUN_B], k=60, top=2)["q"]) == ["a", "c"]
    # k = 0: a gets 1/1 + 1/2, c gets 1/3 + 1/1, b gets 1/2.
    assert reciprocal_rank_fusion([RUN_A, RUN_B], k=0)["q"] == pytest.approx({"a": 1.5, "c": 4 / 3, "b": 0.5})
    # Fusion ranks by each run's order, not its raw scores: scaling one run changes nothing.
    scaled = {"q": {d: s * 1000 for d, s in RUN_B["q"].items()}}
    assert reciprocal_rank_fusion([RUN_A, scaled])["q"] == reciprocal_rank_fusion([RUN_A, RUN_B])["q"]


def test_weighted_reciprocal_rank_fusion_by_hand():
    # A: a 1st, b 2nd, c 3rd; B: c 1st, a 2nd. Weights 0.6 / 0.4, k = 10.
    fused = reciprocal_rank_fusion([RUN_A, RUN_B], k=10, weights=[0.6, 0.4])
    assert fused["q"] == pytest.approx({"a": 0.6 / 11 + 0.4 / 12, "c": 0.6 / 13 + 0.4 / 11, "b": 0.6 / 12})
    assert list(fused["q"]) == ["a", "c", "b"]
    # A heavy enough second weight flips the order: c first.
    assert list(reciprocal_rank_fusion([RUN_A, RUN_B], k=10, weights=[0.2, 0.8])["q"])[0] == "c"
    assert reciprocal_rank_fusion([RUN_A, RUN_B], weights=[1, 1]) == reciprocal_rank_fusion([RUN_A, RUN_B])
    with pytest.raises(ValueError, match="1 weights for 2 runs"):
        reciprocal_rank_fusion([RUN_A, RUN_B], weights=[1.0])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        reciprocal_rank_fusion([RUN_A, RUN_B], weights=[1.0, -1.0])


def test_normalized_score_sum_by_hand():
    # Min-max per query: A -> a 1, b 0.5, c 0; B -> c 1, a 0. Weights 1 and 2.
    fused = normalized_score_sum([RUN_A, RUN_B], weights=[1.0, 2.0])
    assert fused["q"] == pytest.approx({"c": 2.0, "a": 1.0, "b": 0.5})
    assert list(fused["q"]) == ["c", "a", "b"]
    assert normalized_score_sum([RUN_A, RUN_B])["q"] == pytest.approx({"a": 1.0, "c": 1.0, "b": 0.5})
    # A single result (max == min) counts as that run's best.
    assert fused["only_b"] == {"x": 2.0}
    with pytest.raises(ValueError, match="2 weights for 1 runs"):
        normalized_score_sum([RUN_A], weights=[1.0, 1.0])


def test_top_k_indices_is_exact_and_tie_stable():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5])
    assert top_k_indices(scores, 3).tolist() == [1, 3, 2]
    assert top_k_indices(scores, 4).tolist() == [1, 3, 2, 4]
    assert top_k_indices(scores, 100).tolist() == [1, 3, 2, 4, 5, 0, 6]
    assert top_k_indices(scores, 0).size == 0 and top_k_indices(np.array([]), 3).size == 0


def test_row_groups_take_the_max_over_chunks():
    groups = RowGroups.from_row_ids(["b", "a", "b", "c", "a"])
    assert groups.doc_ids == ["b", "a", "c"]
    scores = np.array([[1.0, 5.0, 3.0, 2.0, 4.0], [0.0, -1.0, -2.0, 7.0, -3.0]])
    np.testing.assert_array_equal(groups.doc_scores(scores), [[3.0, 5.0, 2.0], [0.0, -1.0, 7.0]])


def test_dense_search_equals_brute_force():
    rng = np.random.default_rng(3)
    docs = rng.standard_normal((300, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"d{i % 120}" for i in range(300)]  # 120 documents, 2-3 chunks each, interleaved
    run = dense_search(docs, ids, queries, k=10, query_ids=[f"q{i}" for i in range(7)], block=3)
    assert list(run) == [f"q{i}" for i in range(7)]
    for i in range(7):
        sims = docs @ queries[i]
        best: dict[str, float] = {}
        for doc, score in zip(ids, sims, strict=True):
            best[doc] = max(best.get(doc, -np.inf), float(score))
        want = sorted(best.items(), key=lambda item: -item[1])[:10]
        got = list(run[f"q{i}"].items())
        assert [d for d, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    everything = dense_search(docs, ids, queries[:1], k=1000)
    assert list(everything) == ["0"] and len(everything["0"]) == 120


def test_dense_search_ties_and_errors():
    docs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    run = dense_search(docs, ["x", "y", "z"], np.array([1.0, 0.0], dtype=np.float32), k=1)
    assert run == {"0": {"x": 1.0}}  # tie: the first row wins
    with pytest.raises(ValueError, match="same model"):
        dense_search(docs, ["x", "y", "z"], np.ones((1, 3), dtype=np.float32), k=1)
    with pytest.raises(ValueError, match="one row per doc id"):
        dense_search(docs, ["x"], np.ones((1, 2), dtype=np.float32), k=1)


def test_run_from_results():
    assert run_from_results(["q1", "q2"], [[("a", 2.0), ("b", 1.0)], []]) == {"q1": {"a": 2.0, "b": 1.0}, "q2": {}}
    with pytest.raises(ValueError):
        run_from_results(["q1"], [])
