"""Full-ranking metrics (ir_measures, graded qrels) before and after reranking the top k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.components.pair_ranking import ScorerRanker
from rerank_pipeline.components.score_fusion import FusionChoice
from rerank_pipeline.eval import IdentityScorer, evaluate_end_to_end, full_ranking_metrics, retrieve_rankings
from rerank_pipeline.reranking import rerank
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


def reranked_by(dataset, scorer, rerank_k=10):
    return rerank(ScorerRanker(scorer), dataset.queries, dataset.rankings, dataset.document_text, rerank_k)


def test_rerank_keeps_the_tail_and_moves_positives_up():
    dataset = make_dataset()
    reranked = reranked_by(dataset, Oracle(dataset)).ranking()
    for qid, ranking in reranked.items():
        ids = [doc_id for doc_id, _ in ranking]
        assert ids[10:] == dataset.rankings[qid][10:]
        assert sorted(ids[:10]) == sorted(dataset.rankings[qid][:10])
        positives_in_head = [d for d in dataset.rankings[qid][:10] if d in dataset.qrels[qid]]
        assert ids[: len(positives_in_head)] == positives_in_head
        scores = [score for _, score in ranking]
        assert scores == sorted(scores, reverse=True)
    identity = reranked_by(dataset, IdentityScorer()).ranking()
    assert {q: [d for d, _ in r] for q, r in identity.items()} == dataset.rankings
    fused = reranked_by(dataset, Oracle(dataset)).ranking(FusionChoice("rrf").component(depth=10))
    assert {q: [d for d, _ in r] for q, r in fused.items()} != dataset.rankings


def test_weight_zero_reproduces_the_first_stage_even_when_its_scores_tie():
    """Fused ties break by first-stage rank: w = 0 is the first stage, whatever order the reranker gave."""
    dataset = make_dataset()
    tied = {qid: [(doc_id, 1.0) for doc_id in ranking] for qid, ranking in dataset.rankings.items()}  # all scores equal
    reranked = rerank(ScorerRanker(Oracle(dataset)), dataset.queries, tied, dataset.document_text, 10)
    assert any([d.id for d in reranked.reranked[q]] != dataset.rankings[q][:10] for q in dataset.rankings)
    assert {q: [d for d, _ in r] for q, r in reranked.fused(0.0).items()} == dataset.rankings


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
