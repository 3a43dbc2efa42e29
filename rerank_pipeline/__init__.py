"""rerank-pipeline: cross-encoder reranking behind first-stage retrieval, for Haystack."""

__version__ = "0.1.0"
