"""Choose the reranker/first-stage fusion weight on the dev split, over one scoring of its candidates
(:class:`~rerank_pipeline.reranking.Reranked`, fused by the served ``RerankerScoreFusion``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rerank_pipeline.eval.metrics import full_ranking_metrics
from rerank_pipeline.eval.significance import DEFAULT_ALPHA, PairedTest, compare_per_query
from rerank_pipeline.reranking import Reranked

DEFAULT_WEIGHT_GRID = tuple(round(step / 10, 1) for step in range(11))


def fusion_curve(
    reranked: Reranked, qrels: Mapping[str, Mapping[str, int]], grid: Sequence[float] = DEFAULT_WEIGHT_GRID
) -> dict[float, dict[str, float]]:
    """Full-ranking metrics (ir_measures) of the fused ranking (:meth:`Reranked.fused`) for every weight in ``grid``."""
    judged = {query_id: qrels[query_id] for query_id in reranked.reranked if query_id in qrels}
    return {float(weight): full_ranking_metrics(judged, reranked.fused(weight))[0] for weight in grid}


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
    reranked: Reranked, qrels: Mapping[str, Mapping[str, int]], tuned_weight: float,
    alpha: float = DEFAULT_ALPHA, metric: str = "ndcg@10",
) -> FusionGuard:
    """Serve ``tuned_weight`` only when the fused ranking is better than the first stage on dev: a positive mean
    gain in ``metric`` that both paired tests find significant at ``alpha``; otherwise serve w = 0."""
    judged = {query_id: qrels[query_id] for query_id in reranked.reranked if query_id in qrels}
    per_query = {w: full_ranking_metrics(judged, reranked.fused(w))[1] for w in (0.0, 1.0, tuned_weight)}
    reranker = compare_per_query(per_query[0.0], per_query[1.0], [metric], comparisons=2)[metric]
    fused = compare_per_query(per_query[0.0], per_query[tuned_weight], [metric], comparisons=2)[metric]
    better = tuned_weight != 0.0 and fused.delta > 0 and fused.significant(alpha)
    return FusionGuard(tuned_weight=tuned_weight, served_weight=tuned_weight if better else 0.0,
                       reranker_test=reranker, fused_test=fused, alpha=alpha, metric=metric)
