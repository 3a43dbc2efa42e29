"""Haystack components of rerank-pipeline."""
