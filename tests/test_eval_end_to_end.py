"""Full-ranking metrics (ir_measures, graded qrels) before and after reranking the top k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval import IdentityScorer, evaluate_end_to_end, full_ranking_metrics, rerank_rankings, retrieve_rankings
from test_eval_protocol import make_dataset


def test_graded_ndcg_and_missing_queries_score_zero():
    qrels = {"a": {"d1": 3, "d2": 1}, "b": {"d9": 1}, "c": {"d5": 0}}
    mean, per_query = full_ranking_metrics(qrels, {"a": ["d2", "x", "d1"]})
    # trec_eval's nDCG: linear gains (the qrels grade), log2 discount
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert per_query["a"]["ndcg@10"] == pytest.approx(dcg / ideal)
    assert per_query["a"]["mrr@10"] == 1.0 and per_query["a"]["recall@100"] == 1.0
    assert per_query["a"]["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert per_query["b"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0, "map": 0.0}
    assert "c" not in per_query  # no relevant document: not judged
    assert mean["ndcg@10"] == pytest.approx(dcg / ideal / 2)


def test_rank_order_is_kept_even_with_tied_scores():
    qrels = {"a": {"z": 1}}
    # scores tie: trec_eval alone would break the tie by doc id ("z" first); we evaluate the list order
    _, per_query = full_ranking_metrics(qrels, {"a": [("a1", 1.0), ("z", 1.0)]})
    assert per_query["a"]["mrr@10"] == 0.5


class Oracle:
    def __init__(self, dataset: RetrievalDataset):
        self.positive = {(dataset.queries[q], dataset.document_text(d)) for q in dataset.qrels for d in dataset.positives(q)}

    def predict(self, pairs, batch_size=None, show_progress_bar=False):
        return np.array([1.0 if pair in self.positive else 0.0 for pair in pairs])


def test_rerank_keeps_the_tail_and_moves_positives_up():
    dataset = make_dataset()
    reranked = rerank_rankings(dataset, dataset.rankings, Oracle(dataset), rerank_k=10)
    for qid, ranking in reranked.items():
        ids = [doc_id for doc_id, _ in ranking]
        assert ids[10:] == dataset.rankings[qid][10:]
        assert sorted(ids[:10]) == sorted(dataset.rankings[qid][:10])
        positives_in_head = [d for d in dataset.rankings[qid][:10] if d in dataset.qrels[qid]]
        assert ids[: len(positives_in_head)] == positives_in_head
        scores = [score for _, score in ranking]
        assert scores == sorted(scores, reverse=True)
    identity = rerank_rankings(dataset, dataset.rankings, IdentityScorer(), rerank_k=10)
    assert {q: [d for d, _ in r] for q, r in identity.items()} == dataset.rankings
    fused = rerank_rankings(dataset, dataset.rankings, Oracle(dataset), rerank_k=10, fusion="rrf")
    assert {q: [d for d, _ in r] for q, r in fused.items()} != dataset.rankings
    with pytest.raises(ValueError, match="fusion"):
        rerank_rankings(dataset, dataset.rankings, Oracle(dataset), fusion="sum")


def test_evaluate_end_to_end_before_and_after():
    dataset = make_dataset()
    result = evaluate_end_to_end(dataset, dataset.rankings, Oracle(dataset), rerank_k=20)
    assert result.reranked["ndcg@10"] > result.first_stage["ndcg@10"]
    assert result.reranked["recall@100"] == pytest.approx(result.first_stage["recall@100"])  # same candidates
    assert set(result.per_query_first_stage) == set(dataset.judged_queries())
    only_first = evaluate_end_to_end(dataset, dataset.rankings, None)
    assert only_first.reranked is None and only_first.first_stage == result.first_stage
    with pytest.raises(ValueError, match="no first-stage ranking"):
        evaluate_end_to_end(dataset, {"q1": ["d1"]}, None)


def test_retrieve_rankings_with_our_bm25():
    dataset = make_dataset(n_docs=40)
    rankings = retrieve_rankings(dataset, "bm25", top_k=15)
    assert set(dataset.queries) <= set(rankings)
    assert all(len(ranking) <= 15 and all(doc_id in dataset.corpus for doc_id, _ in ranking) for ranking in rankings.values())
    result = evaluate_end_to_end(dataset, rankings, IdentityScorer(), rerank_k=15)
    assert result.reranked == pytest.approx(result.first_stage)
