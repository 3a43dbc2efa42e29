"""Hard negatives mined from our own first-stage rankings: never a judged positive."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from rerank_pipeline.rankings import Ranking


def mine_hard_negatives(
    rankings: Mapping[str, Ranking],
    qrels: Mapping[str, Mapping[str, int]],
    num_negatives: int,
    rank_range: tuple[int, int] = (3, 50),
    false_negative_margin: float | None = None,
    seed: int = 42,
) -> dict[str, list[str]]:
    """Pick ``num_negatives`` documents per query from first-stage ranks ``rank_range`` (1-based, inclusive).

    A document judged relevant for the query (gain > 0) is never a negative. With ``false_negative_margin``
    set, a candidate whose min-max normalised score is at least ``(1 - margin)`` times the best-scored
    positive's is skipped as a likely unjudged positive. Candidates are sampled at random (seeded) among
    those left; the output keeps rank order.
    """
    low, high = rank_range
    rng = random.Random(seed)
    negatives: dict[str, list[str]] = {}
    for query_id, ranking in rankings.items():
        judged = qrels.get(query_id, {})
        positives = {doc_id for doc_id, gain in judged.items() if gain > 0}
        candidates = [(doc_id, score) for doc_id, score in ranking[low - 1 : high] if doc_id not in positives]
        if false_negative_margin is not None and ranking:
            scores = [score for _, score in ranking]
            top, bottom = max(scores), min(scores)
            spread = (top - bottom) or 1.0
            positive_scores = [(score - bottom) / spread for doc_id, score in ranking if doc_id in positives]
            if positive_scores:
                ceiling = (1 - false_negative_margin) * max(positive_scores)
                candidates = [(d, s) for d, s in candidates if (s - bottom) / spread < ceiling]
        chosen = set(rng.sample(range(len(candidates)), min(num_negatives, len(candidates))))
        negatives[query_id] = [doc_id for index, (doc_id, _) in enumerate(candidates) if index in chosen]
    return negatives


def sample_random_negatives(
    rankings: Mapping[str, Ranking],
    qrels: Mapping[str, Mapping[str, int]],
    doc_ids: Sequence[str],
    num_negatives: int,
    exclude_top: int = 100,
    seed: int = 42,
) -> dict[str, list[str]]:
    """``num_negatives`` easy negatives per query: documents drawn at random from outside the first stage's top
    ``exclude_top``, never a judged positive. They give a freshly initialised scoring head a signal it can pick up
    quickly (topic versus no topic) before the hard negatives teach the fine distinctions."""
    rng = random.Random(seed)
    negatives: dict[str, list[str]] = {}
    for query_id, ranking in rankings.items():
        excluded = {doc_id for doc_id, _ in ranking[:exclude_top]}
        excluded |= {doc_id for doc_id, gain in qrels.get(query_id, {}).items() if gain > 0}
        chosen: list[str] = []
        attempts = 0
        while len(chosen) < num_negatives and attempts < 20 * max(num_negatives, 1):
            attempts += 1
            doc_id = doc_ids[rng.randrange(len(doc_ids))]
            if doc_id not in excluded and doc_id not in chosen:
                chosen.append(doc_id)
        negatives[query_id] = chosen
    return negatives
