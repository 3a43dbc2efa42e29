"""rerank-pipeline: cross-encoder reranking behind first-stage retrieval, for Haystack.

The Python API at the top level (imported on first use, so ``import rerank_pipeline`` and the CLI stay cheap):
the components (:class:`CrossEncoderRanker`, :class:`RerankerScoreFusion`, :class:`ReciprocalRankFusion`), the
pipeline helpers (:func:`build_pipeline`, :func:`load_pipeline`, :func:`search`), the collections
(:class:`RetrievalDataset`, :func:`load_beir`) and evaluation (:func:`evaluate`, its :class:`Evaluation`) and tuning (:func:`tune`, its :class:`TuneResult`). The full sets are in :mod:`rerank_pipeline.components`,
:mod:`rerank_pipeline.eval` and :mod:`rerank_pipeline.training`.
"""

from typing import TYPE_CHECKING

from rerank_pipeline._lazy import lazy_exports

__version__ = "0.1.0"

# name -> submodule of rerank_pipeline that defines (or re-exports) it. A new public name goes in all three places:
# here, __all__ and the TYPE_CHECKING block.
_EXPORTS = {
    "CrossEncoderRanker": "components",
    "ReciprocalRankFusion": "components",
    "RerankerScoreFusion": "components",
    "build_pipeline": "pipelines",
    "load_pipeline": "pipelines",
    "search": "pipelines",
    "RetrievalDataset": "datasets",
    "load_beir": "datasets",
    "evaluate": "eval.experiment",
    "Evaluation": "eval.experiment",
    "tune": "tuning.tuner",
    "TuneResult": "tuning.tuner",
}
# written out for static tools (a computed __all__ is invisible to them); kept equal to _EXPORTS by tests
__all__ = [
    "__version__", "CrossEncoderRanker", "ReciprocalRankFusion", "RerankerScoreFusion", "build_pipeline",
    "load_pipeline", "search", "RetrievalDataset", "load_beir", "evaluate", "Evaluation",
    "tune", "TuneResult",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; the same names as _EXPORTS (tests/test_exports.py)
    from rerank_pipeline.components import (
        CrossEncoderRanker as CrossEncoderRanker,
        ReciprocalRankFusion as ReciprocalRankFusion,
        RerankerScoreFusion as RerankerScoreFusion,
    )
    from rerank_pipeline.datasets import (
        RetrievalDataset as RetrievalDataset,
        load_beir as load_beir,
    )
    from rerank_pipeline.eval.experiment import (
        Evaluation as Evaluation,
        evaluate as evaluate,
    )
    from rerank_pipeline.pipelines import (
        build_pipeline as build_pipeline,
        load_pipeline as load_pipeline,
        search as search,
    )
    from rerank_pipeline.tuning.tuner import (
        TuneResult as TuneResult,
        tune as tune,
    )
