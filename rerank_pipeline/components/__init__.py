"""Haystack components of rerank-pipeline."""

from typing import TYPE_CHECKING

from haystack.core.serialization import allow_deserialization_module

from rerank_pipeline._lazy import lazy_exports

# Haystack 3 rebuilds components only from allow-listed modules: a Pipeline YAML naming ours must load once
# this package is imported (elsewhere, e.g. Hayhooks: HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline).
allow_deserialization_module("rerank_pipeline.components")

# Imported on first use (PEP 562): a BM25-only pipeline does not pay for transformers (the ranker's import).
_EXPORTS = {
    "Analyzer": "bm25",
    "EmbeddedBM25DocumentStore": "bm25",
    "EmbeddedBM25Retriever": "bm25",
    "FAISSDocumentStore": "faiss_store",
    "FAISSEmbeddingRetriever": "faiss_store",
    "CrossEncoderRanker": "ranker",
    "RerankerScoreFusion": "score_fusion",
    "ReciprocalRankFusion": "rrf",
}
# written out for static tools (a computed __all__ is invisible to them); kept equal to _EXPORTS by tests
__all__ = [
    "Analyzer", "EmbeddedBM25DocumentStore", "EmbeddedBM25Retriever", "FAISSDocumentStore", "FAISSEmbeddingRetriever",
    "CrossEncoderRanker", "RerankerScoreFusion", "ReciprocalRankFusion",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; the same names as _EXPORTS (tests/test_exports.py)
    from rerank_pipeline.components.bm25 import (
        Analyzer as Analyzer,
        EmbeddedBM25DocumentStore as EmbeddedBM25DocumentStore,
        EmbeddedBM25Retriever as EmbeddedBM25Retriever,
    )
    from rerank_pipeline.components.faiss_store import (
        FAISSDocumentStore as FAISSDocumentStore,
        FAISSEmbeddingRetriever as FAISSEmbeddingRetriever,
    )
    from rerank_pipeline.components.ranker import CrossEncoderRanker as CrossEncoderRanker
    from rerank_pipeline.components.rrf import ReciprocalRankFusion as ReciprocalRankFusion
    from rerank_pipeline.components.score_fusion import RerankerScoreFusion as RerankerScoreFusion
