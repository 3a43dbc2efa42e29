"""Train a cross-encoder reranker on a user's own corpus and judgements (small-data recipe).

Entry points: :func:`train_reranker` (the whole recipe) and the ``rerank-pipeline train`` command.
"""

from typing import TYPE_CHECKING

from rerank_pipeline._lazy import lazy_exports

# Imported on first use (PEP 562), so that ``rerank_pipeline.training.config`` (the CLI's defaults) loads
# without torch and sentence-transformers.
_EXPORTS = {
    "BeforeAfter": "report",
    "build_training_pairs": "pairs",
    "CandidateSource": "candidates",
    "evaluate_before_after": "report",
    "load_judgement_file": "judgements",
    "load_training_collection": "judgements",
    "mine_hard_negatives": "negatives",
    "OutputExistsError": "trainer",
    "pseudo_query": "self_supervised",
    "PseudoQuery": "self_supervised",
    "sample_pseudo_queries": "self_supervised",
    "split_dev": "judgements",
    "train_reranker": "trainer",
    "TrainingConfig": "config",
    "TrainingPairs": "pairs",
    "TrainingResult": "trainer",
}
# written out for static tools (a computed __all__ is invisible to them); kept equal to _EXPORTS by tests
__all__ = [
    "BeforeAfter", "CandidateSource", "OutputExistsError", "PseudoQuery", "TrainingConfig", "TrainingPairs",
    "TrainingResult", "build_training_pairs", "evaluate_before_after", "load_judgement_file",
    "load_training_collection", "mine_hard_negatives", "pseudo_query", "sample_pseudo_queries", "split_dev",
    "train_reranker",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; the same names as _EXPORTS (tests/test_exports.py)
    from rerank_pipeline.training.candidates import CandidateSource as CandidateSource
    from rerank_pipeline.training.config import TrainingConfig as TrainingConfig
    from rerank_pipeline.training.judgements import (
        load_judgement_file as load_judgement_file,
        load_training_collection as load_training_collection,
        split_dev as split_dev,
    )
    from rerank_pipeline.training.negatives import mine_hard_negatives as mine_hard_negatives
    from rerank_pipeline.training.pairs import (
        TrainingPairs as TrainingPairs,
        build_training_pairs as build_training_pairs,
    )
    from rerank_pipeline.training.report import (
        BeforeAfter as BeforeAfter,
        evaluate_before_after as evaluate_before_after,
    )
    from rerank_pipeline.training.self_supervised import (
        PseudoQuery as PseudoQuery,
        pseudo_query as pseudo_query,
        sample_pseudo_queries as sample_pseudo_queries,
    )
    from rerank_pipeline.training.trainer import (
        OutputExistsError as OutputExistsError,
        TrainingResult as TrainingResult,
        train_reranker as train_reranker,
    )
