"""Haystack components of rerank-pipeline."""

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
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
