"""Train a cross-encoder reranker on a user's own corpus and judgements (small-data recipe).

Entry points: :func:`train_reranker` (the whole recipe) and the ``rerank-pipeline train`` command.
"""

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
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
