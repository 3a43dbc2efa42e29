"""Paired significance tests (scipy) and the training fusion guard that uses them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from haystack import Document
from scipy import stats

from rerank_pipeline.eval.significance import compare_per_query, format_delta, paired_test
from rerank_pipeline.reranking import Reranked
from rerank_pipeline.training.fusion_tuning import guard_fusion_weight


def test_a_clear_gain_is_significant_and_noise_is_not():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, size=60)
    better = paired_test(base, base + 0.1 + rng.normal(0, 0.02, size=60))
    assert better.delta == pytest.approx(0.1, abs=0.01) and better.significant()
    noise = paired_test(base, base + rng.normal(0, 0.05, size=60))
    assert not noise.significant(0.01)


def test_t_test_is_scipys_and_randomization_agrees_and_bonferroni_multiplies():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=40), rng.uniform(size=40)
    single = paired_test(a, b)
    assert single.t_test_p == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-12)
    assert abs(single.permutation_p - single.t_test_p) < 0.05  # both test the same null on well-behaved data
    corrected = paired_test(a, b, comparisons=3)
    assert corrected.t_test_p == pytest.approx(min(1.0, 3 * single.t_test_p)) and corrected.comparisons == 3
    assert paired_test(a, a).t_test_p == 1.0 and paired_test(a, a).permutation_p == 1.0
    read_back = np.round(a, 6) + np.where(np.arange(40) % 2, 1e-16, -1e-16)  # equal figures, float noise apart
    assert paired_test(np.round(a, 6), read_back).t_test_p == 1.0
    assert format_delta(single).startswith(f"{b.mean():.4f} ({b.mean() - a.mean():+.4f}) p=")


def test_queries_must_match():
    with pytest.raises(ValueError, match="same queries"):
        compare_per_query({"q1": {"m": 1.0}, "q2": {"m": 0.0}}, {"q1": {"m": 1.0}, "q3": {"m": 0.0}})
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([1.0], [0.0])


def scored_queries(n: int, reranker_finds_positive: bool) -> tuple[dict, dict]:
    """``n`` queries, 5 candidates each, the positive at first-stage rank 3; the reranker puts it first or last."""
    scored, qrels = {}, {}
    for q in range(n):
        doc_ids = [f"q{q}d{i}" for i in range(5)]
        reranker = np.array([0.0, 0.1, 1.0, 0.2, 0.3]) if reranker_finds_positive else np.array([0.5, 0.4, 0.0, 0.3, 0.2])
        first_stage = [Document(id=doc_id, content=doc_id, score=score) for doc_id, score in zip(doc_ids, [5.0, 4, 3, 2, 1])]
        order = np.argsort(-reranker, kind="stable")
        scored[f"q{q}"] = (first_stage, [replace(first_stage[i], score=float(reranker[i])) for i in order])
        qrels[f"q{q}"] = {f"q{q}d2": 1}
    return Reranked({q: f for q, (f, _) in scored.items()}, {q: r for q, (_, r) in scored.items()},
                    {q: [] for q in scored}), qrels


def test_guard_serves_the_tuned_weight_only_when_fusion_is_shown_better():
    scored, qrels = scored_queries(30, reranker_finds_positive=True)
    served = guard_fusion_weight(scored, qrels, tuned_weight=0.7)
    assert served.served_weight == 0.7 and not served.fallback and served.fused_test.significant()
    assert "serves w = 0.7" in served.sentence()
    # on 4 queries even a perfect gain cannot be told from chance by the randomization test: w = 0 is served
    few, few_qrels = scored_queries(4, reranker_finds_positive=True)
    fallback = guard_fusion_weight(few, few_qrels, tuned_weight=0.7)
    assert fallback.served_weight == 0.0 and fallback.fallback and fallback.fused_test.delta > 0
    assert "serves the first stage (w = 0)" in fallback.sentence() and "not significantly better" in fallback.sentence()
    worse, worse_qrels = scored_queries(30, reranker_finds_positive=False)
    assert guard_fusion_weight(worse, worse_qrels, tuned_weight=1.0).served_weight == 0.0
