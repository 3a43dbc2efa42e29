"""Haystack components of rerank-pipeline."""

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
