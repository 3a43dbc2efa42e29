"""Score fusion of the reranker with the first stage, and the dev-split choice of its weight."""

from __future__ import annotations

import numpy as np
import pytest
from haystack import Document

from rerank_pipeline.components.score_fusion import (
    RerankerScoreFusion,
    fuse_scores,
    load_fusion_weight,
    min_max,
    save_fusion_settings,
)
from rerank_pipeline.components.pair_ranking import ScorerRanker
from rerank_pipeline.eval.scorers import CachedScorer
from rerank_pipeline.reranking import rerank
from rerank_pipeline.training.fusion_tuning import choose_fusion_weight, fusion_curve


def test_fuse_scores_interpolates_between_first_stage_and_reranker():
    reranker, first = [0.0, 5.0, 10.0], [3.0, 2.0, 1.0]
    assert np.allclose(fuse_scores(reranker, first, 1.0), [0.0, 0.5, 1.0])
    assert np.allclose(fuse_scores(reranker, first, 0.0), [1.0, 0.5, 0.0])
    assert np.allclose(min_max([2.0, 2.0]), [0.5, 0.5])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        fuse_scores(reranker, first, 1.5)


def test_fusion_component_orders_by_fused_score_and_round_trips(tmp_path):
    first_stage = [Document(id="a", content="A", score=3.0), Document(id="b", content="B", score=2.0), Document(id="c", content="C", score=1.0)]
    reranked = [Document(id="c", content="C", score=0.9), Document(id="b", content="B", score=0.5), Document(id="a", content="A", score=0.1)]
    assert [d.id for d in RerankerScoreFusion(weight=1.0).run(reranked, first_stage)["documents"]] == ["c", "b", "a"]
    assert [d.id for d in RerankerScoreFusion(weight=0.0).run(reranked, first_stage)["documents"]] == ["a", "b", "c"]
    fused = RerankerScoreFusion(weight=0.5, top_k=2).run(reranked, first_stage)["documents"]
    assert len(fused) == 2 and fused[0].meta["first_stage_score"] in (1.0, 2.0, 3.0)
    component = RerankerScoreFusion.from_dict(RerankerScoreFusion(weight=0.3, top_k=5).to_dict())
    assert (component.weight, component.top_k) == (0.3, 5)
    with pytest.raises(FileNotFoundError, match="fusion.json"):
        RerankerScoreFusion.from_model_folder(tmp_path)
    save_fusion_settings(tmp_path, 0.7, first_stage="hybrid")
    assert load_fusion_weight(tmp_path) == 0.7 and RerankerScoreFusion.from_model_folder(tmp_path).weight == 0.7


class CountingScorer:
    """Scores a pair by how many query words the document holds; counts the pairs it is asked for."""

    def __init__(self):
        self.calls = 0

    def predict(self, pairs, batch_size=64, show_progress_bar=False):
        self.calls += len(pairs)
        return np.array([sum(word in document.split() for word in query.split()) for query, document in pairs], dtype=float)


def test_dev_curve_picks_the_weight_that_helps_and_scores_each_pair_once():
    corpus = {"good": "shock wave", "half": "shock", "bad": "heat"}
    queries = {"q": "shock wave"}
    qrels = {"q": {"good": 2}}
    rankings = {"q": [("bad", 3.0), ("half", 2.0), ("good", 1.0)]}  # the first stage has it backwards
    counting = CountingScorer()
    scorer = CachedScorer(counting)
    scored = rerank(ScorerRanker(scorer), queries, rankings, corpus.__getitem__, depth=3)
    rerank(ScorerRanker(scorer), queries, rankings, corpus.__getitem__, depth=3)
    assert counting.calls == 3 and (scorer.scored, scorer.reused) == (3, 3)
    curve = fusion_curve(scored, qrels)
    assert curve[1.0]["ndcg@10"] == pytest.approx(1.0) and curve[0.0]["ndcg@10"] < 1.0
    assert choose_fusion_weight(curve) == min(w for w, m in curve.items() if m["ndcg@10"] == pytest.approx(1.0))
    assert choose_fusion_weight({0.0: {"ndcg@10": 0.5}, 1.0: {"ndcg@10": 0.5}}) == 0.0  # ties fall back to the first stage


def test_failed_fusion_save_leaves_no_temporary_file(tmp_path):
    save_fusion_settings(tmp_path, 0.7)
    with pytest.raises(TypeError):
        save_fusion_settings(tmp_path, 0.3, scorer=object())  # not JSON-serializable
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fusion.json"]
    assert load_fusion_weight(tmp_path) == 0.7
