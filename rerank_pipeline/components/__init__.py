"""Haystack components of rerank-pipeline."""

from haystack.core.serialization import allow_deserialization_module

# Haystack 3 rebuilds components only from allow-listed modules: a Pipeline YAML naming ours must load once
# this package is imported (elsewhere, e.g. Hayhooks: HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline).
allow_deserialization_module("rerank_pipeline.components")

from rerank_pipeline.components.bm25 import Analyzer, EmbeddedBM25DocumentStore, EmbeddedBM25Retriever  # noqa: E402
from rerank_pipeline.components.faiss_store import FAISSDocumentStore, FAISSEmbeddingRetriever  # noqa: E402
from rerank_pipeline.components.ranker import CrossEncoderRanker  # noqa: E402
from rerank_pipeline.components.score_fusion import RerankerScoreFusion  # noqa: E402

__all__ = [
    "Analyzer",
    "EmbeddedBM25DocumentStore",
    "EmbeddedBM25Retriever",
    "FAISSDocumentStore",
    "FAISSEmbeddingRetriever",
    "CrossEncoderRanker",
    "RerankerScoreFusion",
]
