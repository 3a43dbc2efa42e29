"""Scorers: anything with ``predict(pairs, batch_size=..., show_progress_bar=...) -> np.ndarray``
(:class:`~rerank_pipeline.components.pair_ranking.Scorer`).

A sentence-transformers ``CrossEncoder``, our :class:`~rerank_pipeline.components.CrossEncoderRanker`, a
:class:`BiEncoderScorer` (cosine of a bi-encoder) or the :class:`IdentityScorer` (first-stage order) all fit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from rerank_pipeline.options import RERANKER_KINDS


class IdentityScorer:
    """Keeps the order the pairs come in: the harness hands each query's pairs in first-stage order.

    ``keeps_input_order`` tells the harness to feed pairs first-stage order first (unretrieved positives last),
    so "reranking" with this scorer reproduces the first stage.
    """

    keeps_input_order = True

    def predict(self, pairs, batch_size: int | None = None, show_progress_bar: bool = False, **kwargs) -> np.ndarray:
        """Scores ``0, -1, -2, ...``: strictly decreasing in input order."""
        return -np.arange(len(pairs), dtype=np.float64)


class BiEncoderScorer:
    """Cosine similarity of a sentence-transformers bi-encoder (e.g. all-MiniLM-L6-v2) as a reranker.

    Each distinct text is embedded once per call; document embeddings are cached across calls
    (``cache_documents=True``) since a fixed bi-encoder gives the same vector every time.
    """

    def __init__(self, model_name_or_path: str, batch_size: int = 64, device: str | None = None, cache_documents: bool = True):
        from sentence_transformers import SentenceTransformer

        self.model_name_or_path = str(model_name_or_path)
        self.model = SentenceTransformer(self.model_name_or_path, device=device)
        self.batch_size = batch_size
        self.cache_documents = cache_documents
        self._document_cache: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str], batch_size: int, show_progress_bar: bool) -> np.ndarray:
        if not texts:
            dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            return np.zeros((0, dimension() or 1), dtype=np.float32)
        return self.model.encode(
            texts, batch_size=batch_size, show_progress_bar=show_progress_bar,
            convert_to_numpy=True, normalize_embeddings=True,
        )

    def predict(self, pairs, batch_size: int | None = None, show_progress_bar: bool = False, **kwargs) -> np.ndarray:
        """Cosine similarity of each (query, document) pair."""
        if not len(pairs):
            return np.zeros(0, dtype=np.float32)
        batch_size = batch_size or self.batch_size
        queries = list(dict.fromkeys(query for query, _ in pairs))
        query_vectors = dict(zip(queries, self._embed(queries, batch_size, show_progress_bar)))
        documents = list(dict.fromkeys(document for _, document in pairs))
        cache = self._document_cache if self.cache_documents else {}
        new_documents = [document for document in documents if document not in cache]
        cache.update(zip(new_documents, self._embed(new_documents, batch_size, show_progress_bar)))
        left = np.stack([query_vectors[query] for query, _ in pairs])
        right = np.stack([cache[document] for _, document in pairs])
        return np.einsum("ij,ij->i", left, right)




def load_scorer(kind: str, model: str | None = None, batch_size: int = 64, device: str | None = None, **ranker_options):
    """Build a scorer by kind: ``cross-encoder`` (our CrossEncoderRanker when present, else sentence-transformers
    ``CrossEncoder``), ``bi-encoder`` (:class:`BiEncoderScorer`) or ``identity`` (no model).

    ``ranker_options`` (e.g. ``backend="openvino", quantize=True``) go to :class:`CrossEncoderRanker`."""
    if kind == "identity":
        return IdentityScorer()
    if kind not in RERANKER_KINDS:
        raise ValueError(f"unknown reranker kind {kind!r}; choose one of {RERANKER_KINDS}")
    if not model:
        raise ValueError(f"--model is required for the {kind} reranker")
    if kind == "bi-encoder":
        return BiEncoderScorer(model, batch_size=batch_size, device=device)
    try:
        from rerank_pipeline.components import CrossEncoderRanker  # noqa: PLC0415
    except ImportError:
        CrossEncoderRanker = None
    if CrossEncoderRanker is not None:
        ranker = CrossEncoderRanker(model=str(model), batch_size=batch_size, device=device, **ranker_options)
        if hasattr(ranker, "warm_up"):
            ranker.warm_up()
        return ranker
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(model), device=device)


class CachedScorer:
    """A scorer that scores each distinct (query, document) pair once and answers repeats from memory.

    ``eval`` scores the R-k protocol's pairs and then the full ranking's: the same top-k pairs, scored once.
    ``scored`` and ``reused`` count the pairs.
    """

    def __init__(self, scorer):
        self.scorer = scorer
        self.keeps_input_order = getattr(scorer, "keeps_input_order", False)
        self.takes_pair_names = getattr(scorer, "takes_pair_names", False)
        self._scores: dict[tuple[str, str], float] = {}
        self.scored = 0
        self.reused = 0
        self._recording: list[tuple[str, str]] | None = None

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, str]]]:
        """Collect every (query, document) pair asked for inside the ``with`` block, repeats included, in order."""
        asked: list[tuple[str, str]] = []
        self._recording = asked
        try:
            yield asked
        finally:
            self._recording = None

    def predict(self, pairs, batch_size: int | None = None, show_progress_bar: bool = False,
                names: Sequence[str] | None = None, **kwargs) -> np.ndarray:
        """Scores of ``pairs``; only the pairs never seen before reach the wrapped scorer (with their ``names``)."""
        keys = [(str(query), str(document)) for query, document in pairs]
        if self._recording is not None:
            self._recording.extend(keys)
        new = list(dict.fromkeys(key for key in keys if key not in self._scores))
        if new:
            options = {"show_progress_bar": show_progress_bar, **kwargs}
            if batch_size is not None:
                options["batch_size"] = batch_size
            if names is not None and self.takes_pair_names:
                name_of = {}
                for key, name in zip(keys, names):
                    name_of.setdefault(key, name)
                options["names"] = [name_of[key] for key in new]
            scores = np.asarray(self.scorer.predict(new, **options), dtype=np.float64)
            if scores.shape != (len(new),):
                raise RuntimeError(f"scorer returned scores of shape {scores.shape} for {len(new)} pairs")
            self._scores.update(zip(new, scores.tolist()))
        self.scored += len(new)
        self.reused += len(keys) - len(new)
        return np.asarray([self._scores[key] for key in keys], dtype=np.float64)
