"""Train a cross-encoder reranker on a user's own corpus and judgements (small-data recipe).

Entry points: :func:`train_reranker` (the whole recipe) and the ``rerank-pipeline train`` command.
"""

from rerank_pipeline.training.candidates import CandidateSource
from rerank_pipeline.training.config import TrainingConfig
from rerank_pipeline.training.judgements import load_judgement_file, load_training_collection, split_dev
from rerank_pipeline.training.negatives import mine_hard_negatives
from rerank_pipeline.training.pairs import TrainingPairs, build_training_pairs
from rerank_pipeline.training.report import BeforeAfter, evaluate_before_after
from rerank_pipeline.training.self_supervised import PseudoQuery, pseudo_query, sample_pseudo_queries
from rerank_pipeline.training.trainer import OutputExistsError, TrainingResult, train_reranker

__all__ = [
    "BeforeAfter",
    "CandidateSource",
    "OutputExistsError",
    "PseudoQuery",
    "TrainingConfig",
    "TrainingPairs",
    "TrainingResult",
    "build_training_pairs",
    "evaluate_before_after",
    "load_judgement_file",
    "load_training_collection",
    "mine_hard_negatives",
    "pseudo_query",
    "sample_pseudo_queries",
    "split_dev",
    "train_reranker",
]
