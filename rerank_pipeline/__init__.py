"""rerank-pipeline: cross-encoder reranking behind first-stage retrieval, for Haystack."""

from typing import TYPE_CHECKING

from rerank_pipeline._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rerank_pipeline.eval.experiment import Evaluation, evaluate

# Imported on first use (PEP 562): ``import rerank_pipeline`` stays cheap.
_EXPORTS = {"evaluate": "eval.experiment", "Evaluation": "eval.experiment"}
__all__ = ["Evaluation", "__version__", "evaluate"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
