"""Rankings: what a first stage returns, a ranker reorders and the metrics read.

``Rankings`` maps a query id to its ``Ranking``, ``[(doc_id, score), ...]`` best first. Published first-stage lists
that carry bare ids are read with :func:`as_ranking` (scores ``-rank``, so their order is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from haystack import Document

Ranking = list[tuple[str, float]]
Rankings = dict[str, Ranking]


def as_ranking(items: Sequence) -> Ranking:
    """``(doc_id, score)`` pairs or bare ids, best first -> a :data:`Ranking`; a bare id or a ``None`` score scores
    ``-rank`` (rank from 1), so the order is kept."""
    ranking = []
    for rank, item in enumerate(items, start=1):
        doc_id, score = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        ranking.append((str(doc_id), float(score) if score is not None else float(-rank)))
    return ranking


def ranked_ids(ranking: Sequence) -> list[str]:
    """Doc ids of a ranking given as ids or as ``(doc_id, score)`` pairs."""
    return [str(item[0]) if isinstance(item, (tuple, list)) else str(item) for item in ranking]


def as_documents(ranking: Sequence, text_of: Callable[[str], str]) -> list[Document]:
    """One query's ranking as Haystack documents (``content`` from ``text_of(doc_id)``, the ranking's ``score``),
    each id once (its first, best, place): the input a ranker component takes."""
    seen: dict[str, Document] = {}
    for doc_id, score in as_ranking(ranking):
        if doc_id not in seen:
            seen[doc_id] = Document(id=doc_id, content=text_of(doc_id), score=score)
    return list(seen.values())


def from_documents(documents: Sequence[Document]) -> Ranking:
    """A component's output documents (best first) as a :data:`Ranking` (a missing score counts 0)."""
    return [(document.id, float(document.score or 0.0)) for document in documents]


def cut(rankings: Mapping[str, Sequence], depth: int) -> Rankings:
    """Every ranking cut to its first ``depth`` entries."""
    return {qid: as_ranking(ranking)[:depth] for qid, ranking in rankings.items()}
