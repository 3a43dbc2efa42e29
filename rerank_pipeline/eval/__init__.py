"""Evaluation harness: the R-k reranking protocol of the seed model cards, end-to-end metrics, reports.

- :func:`rerank_protocol` / :func:`rerank_protocol_suite`: sentence-transformers' reranking protocol
  (``NanoMSMARCO_R100_ndcg@10``, ``NanoBEIR_R100_mean_ndcg@10``) on any RetrievalDataset and rankings.
- :class:`RerankingEvaluator`: the same as a sentence-transformers evaluator for ``CrossEncoderTrainer``.
- :func:`evaluate_end_to_end`: nDCG@10 / MRR@10 / Recall@100 / MAP (ir_measures) before and after reranking.
- Scorers: :class:`IdentityScorer`, :class:`BiEncoderScorer`, :func:`load_scorer`.
- :mod:`rerank_pipeline.eval.reports`: tables, JSON/CSV, TREC runs, chart.
"""

from rerank_pipeline.eval.end_to_end import (
    EndToEndResult,
    evaluate_end_to_end,
    pipeline_rankings,
    as_ranker,
    retrieve_rankings,
)
from rerank_pipeline.eval.evaluator import RerankingEvaluator
from rerank_pipeline.eval.metrics import DEFAULT_MEASURES, full_ranking_metrics
from rerank_pipeline.eval.protocol import (
    ProtocolResult,
    SuiteResult,
    build_samples,
    model_card_strings,
    rerank_protocol,
    rerank_protocol_suite,
)
from rerank_pipeline.components.pair_ranking import Scorer, ScorerRanker
from rerank_pipeline.eval.scorers import BiEncoderScorer, CachedScorer, IdentityScorer, load_scorer

__all__ = [
    "as_ranker",
    "BiEncoderScorer",
    "CachedScorer",
    "DEFAULT_MEASURES",
    "EndToEndResult",
    "IdentityScorer",
    "ProtocolResult",
    "RerankingEvaluator",
    "Scorer",
    "ScorerRanker",
    "SuiteResult",
    "build_samples",
    "evaluate_end_to_end",
    "full_ranking_metrics",
    "load_scorer",
    "model_card_strings",
    "pipeline_rankings",
    "rerank_protocol",
    "rerank_protocol_suite",
    "retrieve_rankings",
]
