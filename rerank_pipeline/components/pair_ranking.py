"""Ranking documents by a (query, document) pair score: the one implementation behind every ranker component.

:func:`rank_documents` is what :class:`~rerank_pipeline.components.CrossEncoderRanker` runs after scoring, and what
:class:`ScorerRanker` runs for any other scorer (a bi-encoder, the identity, a cache in front of a model), so
serving, ``eval`` and training order candidates the same way: best score first, ties in input (first-stage) order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
from haystack import Document, component
from haystack.utils.misc import _deduplicate_documents  # Haystack's own rule (highest incoming score kept); no public twin

logger = logging.getLogger(__name__)

PairScores = Callable[[list[str], list[str], list[str]], np.ndarray]
"""``(queries, document_texts, document_ids) -> scores``, one entry a pair."""


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, document) pairs; a higher score ranks the document higher.

    A scorer with ``takes_pair_names = True`` also takes ``names=`` (each pair's document id, for its warnings).
    """

    def predict(
        self, pairs: Sequence[tuple[str, str]], batch_size: int = ..., show_progress_bar: bool = ...
    ) -> np.ndarray: ...


def predict_named(scorer: Scorer, pairs, names: Sequence[str], batch_size: int | None = None,
                  show_progress_bar: bool = False) -> np.ndarray:
    """``scorer.predict(pairs)``, giving it each pair's document id (``names``) when it takes them."""
    options: dict[str, Any] = {"names": list(names)} if getattr(scorer, "takes_pair_names", False) else {}
    if batch_size is not None:
        options["batch_size"] = batch_size
    return scorer.predict(pairs, show_progress_bar=show_progress_bar, **options)


def rank_documents(
    queries: Sequence[str],
    candidates: Sequence[Sequence[Document]],
    score_pairs: PairScores,
    document_text: Callable[[Document], str | None] = lambda document: document.content,
    top_k: int | None = None,
    score_threshold: float | None = None,
    shown_score: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[list[Document]]:
    """Each query's candidates scored (all pairs in one ``score_pairs`` call) and sorted best first.

    Candidates are de-duplicated by id first (the copy with the highest incoming score is kept); a document whose
    ``document_text`` is None is skipped (logged). Equal scores keep the input order. Returns copies with ``score``
    set, at most ``top_k`` a query, those below ``score_threshold`` dropped.

    ``shown_score`` (a non-decreasing map, e.g. a :class:`~rerank_pipeline.calibration.Calibration`) turns the
    scores into the ``Document.score`` returned and compared with ``score_threshold``; documents are still ordered
    by the scores ``score_pairs`` gave, so ties the map creates never reorder them.

    :raises ValueError: a blank query or ``top_k <= 0``.
    """
    for query in queries:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("a ranker needs a non-empty query string")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be > 0, got {top_k}")
    candidates = [_deduplicate_documents(list(documents)) if documents else [] for documents in candidates]
    kept: list[tuple[int, Document]] = []
    texts: list[str] = []
    for index, documents in enumerate(candidates):
        for document in documents:
            text = document_text(document)
            if text is not None:
                kept.append((index, document))
                texts.append(text)
    skipped = sum(map(len, candidates)) - len(kept)
    if skipped:
        logger.warning("skipped %d document(s) without text", skipped)
    ranked: list[list[tuple[float, Document]]] = [[] for _ in queries]
    if kept:
        scores = np.asarray(score_pairs([queries[index] for index, _ in kept], texts, [document.id for _, document in kept]))
        if scores.shape[0] != len(kept):
            raise RuntimeError(f"the scorer returned {scores.shape[0]} scores for {len(kept)} pairs")
        shown = np.asarray(shown_score(scores)) if shown_score is not None else scores
        for (index, document), score, order in zip(kept, shown, scores):
            ranked[index].append((float(order), replace(document, score=float(score))))
    results = []
    for scored in ranked:
        scored.sort(key=lambda item: item[0], reverse=True)
        documents = [document for _, document in scored]
        if score_threshold is not None:
            documents = [document for document in documents if document.score >= score_threshold]
        results.append(documents[:top_k] if top_k is not None else documents)
    return results


@component
class ScorerRanker:
    """Rank documents with any :class:`Scorer` (``predict(pairs) -> scores``), by :func:`rank_documents`.

    What ``eval`` and training put where a served pipeline has its ``CrossEncoderRanker``: the same ranking, over a
    bi-encoder, the identity or a cache of pair scores. In-process only (it holds a Python object, no ``to_dict``).

    Usage:
        ranker = ScorerRanker(BiEncoderScorer("sentence-transformers/all-MiniLM-L6-v2"))
        ranker.run_batch(query=["q1", "q2"], documents=[docs1, docs2])["documents"]
    """

    def __init__(self, scorer: Scorer, top_k: int | None = None, batch_size: int | None = None,
                 show_progress_bar: bool = False) -> None:
        """:param scorer: Scores the pairs. :param top_k: Documents returned a query (None: all)."""
        if not isinstance(scorer, Scorer):
            raise TypeError(f"scorer must have predict(pairs, ...), got {type(scorer).__name__}")
        self.scorer = scorer
        self.top_k = top_k
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar

    def _scores(self, queries: list[str], texts: list[str], names: list[str]) -> np.ndarray:
        return predict_named(self.scorer, list(zip(queries, texts)), names, self.batch_size, self.show_progress_bar)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """``documents`` ordered by the scorer, best first."""
        return {"documents": self.run_batch([query], [documents], top_k)["documents"][0]}

    def run_batch(self, query: list[str], documents: list[list[Document]], top_k: int | None = None) -> dict[str, list[list[Document]]]:
        """:meth:`run` for many queries, their pairs scored in one ``predict`` call."""
        if len(query) != len(documents):
            raise ValueError(f"run_batch got {len(query)} queries and {len(documents)} document lists")
        return {"documents": rank_documents(query, documents, self._scores, top_k=self.top_k if top_k is None else top_k)}
