"""Choose the reranker/first-stage fusion weight on the dev split, and build fused runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rerank_pipeline.components.score_fusion import fuse_scores
from rerank_pipeline.eval.metrics import full_ranking_metrics
from rerank_pipeline.eval.significance import DEFAULT_ALPHA, PairedTest, compare_per_query

DEFAULT_WEIGHT_GRID = tuple(round(step / 10, 1) for step in range(11))


@dataclass
class ScoredCandidates:
    """One query's top first-stage candidates with both scores, plus the first-stage tail (kept in order)."""

    doc_ids: list[str]
    first_stage_scores: np.ndarray
    reranker_scores: np.ndarray
    tail: list[str]


class CachedScorer:
    """Wrap a scorer so each (query, document) pair is scored once, however many evaluations ask for it."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.cache: dict[tuple[str, str], float] = {}

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64, show_progress_bar: bool = False, **kwargs) -> np.ndarray:
        """Scores of ``pairs``; only pairs not seen before reach the wrapped scorer."""
        keys = [(query, document) for query, document in pairs]
        missing = list(dict.fromkeys(key for key in keys if key not in self.cache))
        if missing:
            scores = self.scorer.predict(missing, batch_size=batch_size, show_progress_bar=show_progress_bar)
            self.cache.update(zip(missing, (float(score) for score in np.asarray(scores).reshape(-1))))
        return np.array([self.cache[key] for key in keys], dtype=np.float64)


def score_candidates(
    scorer,
    queries: Mapping[str, str],
    document_text,
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    depth: int = 100,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> dict[str, ScoredCandidates]:
    """Score each query's top ``depth`` candidates with ``scorer`` in one batched call."""
    pairs, spans = [], {}
    for query_id, ranking in rankings.items():
        head = list(ranking[:depth])
        spans[query_id] = (len(pairs), head, [doc_id for doc_id, _ in ranking[depth:]])
        pairs.extend((queries[query_id], document_text(doc_id)) for doc_id, _ in head)
    scores = np.asarray(scorer.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress_bar), dtype=np.float64)
    scored = {}
    for query_id, (offset, head, tail) in spans.items():
        scored[query_id] = ScoredCandidates(
            doc_ids=[doc_id for doc_id, _ in head],
            first_stage_scores=np.array([score for _, score in head], dtype=np.float64),
            reranker_scores=scores[offset : offset + len(head)],
            tail=tail,
        )
    return scored


def fused_ranking(scored: Mapping[str, ScoredCandidates], weight: float) -> dict[str, list[str]]:
    """qid -> doc ids: the scored head ordered by the fused score, then the first-stage tail."""
    ranked = {}
    for query_id, candidates in scored.items():
        fused = fuse_scores(candidates.reranker_scores, candidates.first_stage_scores, weight)
        order = np.argsort(-fused, kind="stable")
        ranked[query_id] = [candidates.doc_ids[index] for index in order] + candidates.tail
    return ranked


def fusion_curve(
    scored: Mapping[str, ScoredCandidates], qrels: Mapping[str, Mapping[str, int]], grid: Sequence[float] = DEFAULT_WEIGHT_GRID
) -> dict[float, dict[str, float]]:
    """Full-ranking metrics (ir_measures) of the fused ranking for every weight in ``grid``."""
    judged = {query_id: qrels[query_id] for query_id in scored if query_id in qrels}
    return {float(weight): full_ranking_metrics(judged, fused_ranking(scored, weight))[0] for weight in grid}


def choose_fusion_weight(curve: Mapping[float, Mapping[str, float]], metric: str = "ndcg@10") -> float:
    """The weight with the best dev ``metric``; ties go to the smaller weight (closer to the first stage)."""
    return min(curve, key=lambda weight: (-round(curve[weight][metric], 6), weight))


@dataclass
class FusionGuard:
    """The dev comparison behind the served weight: first stage vs reranker alone vs fused at the tuned weight,
    with paired tests against the first stage (Bonferroni over the two comparisons)."""

    tuned_weight: float
    served_weight: float
    reranker_test: PairedTest
    fused_test: PairedTest
    alpha: float
    metric: str = "ndcg@10"

    @property
    def fallback(self) -> bool:
        """True when the first stage is served because fusion was not shown better on dev."""
        return self.served_weight == 0.0 and self.tuned_weight != 0.0

    def to_dict(self) -> dict:
        return {"metric": self.metric, "alpha": self.alpha, "tuned_weight": self.tuned_weight,
                "served_weight": self.served_weight, "reranker_vs_first_stage": self.reranker_test.to_dict(),
                "fused_vs_first_stage": self.fused_test.to_dict()}

    def sentence(self) -> str:
        """One plain sentence on what is served and why, with the numbers."""
        fused = self.fused_test
        numbers = (f"dev {self.metric}: first stage {fused.mean_a:.4f}, reranker alone {self.reranker_test.mean_b:.4f} "
                   f"(p={self.reranker_test.t_test_p:.3f}/{self.reranker_test.permutation_p:.3f}), fused w={self.tuned_weight:g} "
                   f"{fused.mean_b:.4f} (p={fused.t_test_p:.3f}/{fused.permutation_p:.3f}; paired t-test/randomization, "
                   f"Bonferroni x{fused.comparisons}, {fused.queries} queries)")
        if self.tuned_weight == 0.0:
            return f"fusion.json serves the first stage (w = 0): no weight beat it on dev; {numbers}"
        if self.fallback:
            return (f"fusion.json serves the first stage (w = 0): the fused ranking is not significantly better than the "
                    f"first stage on dev (alpha {self.alpha:g}); {numbers}")
        return f"fusion.json serves w = {self.served_weight:g}: the fused ranking beats the first stage on dev; {numbers}"


def guard_fusion_weight(
    scored: Mapping[str, ScoredCandidates], qrels: Mapping[str, Mapping[str, int]], tuned_weight: float,
    alpha: float = DEFAULT_ALPHA, metric: str = "ndcg@10",
) -> FusionGuard:
    """Serve ``tuned_weight`` only when the fused ranking is better than the first stage on dev: a positive mean
    gain in ``metric`` that both paired tests find significant at ``alpha``; otherwise serve w = 0."""
    judged = {query_id: qrels[query_id] for query_id in scored if query_id in qrels}
    per_query = {w: full_ranking_metrics(judged, fused_ranking(scored, w))[1] for w in (0.0, 1.0, tuned_weight)}
    reranker = compare_per_query(per_query[0.0], per_query[1.0], [metric], comparisons=2)[metric]
    fused = compare_per_query(per_query[0.0], per_query[tuned_weight], [metric], comparisons=2)[metric]
    better = tuned_weight != 0.0 and fused.delta > 0 and fused.significant(alpha)
    return FusionGuard(tuned_weight=tuned_weight, served_weight=tuned_weight if better else 0.0,
                       reranker_test=reranker, fused_test=fused, alpha=alpha, metric=metric)
