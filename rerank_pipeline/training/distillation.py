"""Distillation warm start: teach a fresh scoring head the first stage's relevance signal on many corpus pairs.

A bi-encoder or plain encoder has no trained pair-scoring head, and a few thousand judged pairs are too few to
learn one from scratch. Before the judged pairs, the model is trained on (query, candidate) pairs whose soft labels
are the first stage's own scores: the training queries and pseudo-queries made from the corpus (titles, first
sentences), each with its first-stage top candidates and a few random documents. Each retriever's scores are
min-max normalised over the candidates, averaged, and normalised again, so the head starts out ranking like the
(fused) first stage and the judged pairs then refine it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from rerank_pipeline.components.score_fusion import min_max
from rerank_pipeline.rankings import Ranking
from rerank_pipeline.training.pairs import TrainingPairs


DISTILLED_DIR = "distilled"


def teacher_labels(candidates: Sequence[str], retriever_rankings: Sequence[Ranking]) -> list[float]:
    """Soft labels in [0, 1] for ``candidates`` from one ranking per retriever (e.g. BM25 and dense).

    A candidate a retriever did not return gets that retriever's lowest returned score (0 when it returned nothing).
    """
    if not candidates:
        return []
    per_retriever = []
    for ranking in retriever_rankings:
        scores = dict(ranking)
        floor = min(scores.values(), default=0.0)
        per_retriever.append(min_max([scores.get(doc_id, floor) for doc_id in candidates], constant=0.0))
    return min_max(np.mean(per_retriever, axis=0), constant=0.0).tolist()


def is_trained_cross_encoder(model) -> bool:
    """True when ``model`` (a ``CrossEncoder``) was loaded with a trained one-label sequence-classification head."""
    from rerank_pipeline.components.ranker.loading import untrained_head_reason

    config = model.model.config
    architectures = getattr(config, "architectures", None) or []
    return config.num_labels == 1 and bool(architectures) and untrained_head_reason(model.model) is None


def build_distillation_pairs(
    queries: Mapping[str, str],
    fused_rankings: Mapping[str, Ranking],
    retriever_rankings: Sequence[Mapping[str, Ranking]],
    document_text: Callable[[str], str],
    doc_ids: Sequence[str],
    depth: int,
    num_random: int,
    seed: int = 42,
) -> TrainingPairs:
    """Pairs (query, candidate, soft label) for every query: its fused top ``depth`` plus ``num_random`` documents
    drawn at random (seeded) from the rest of the corpus, labelled by :func:`teacher_labels`."""
    rng = random.Random(seed)
    pairs = TrainingPairs()
    for query_id, query in queries.items():
        candidates = [doc_id for doc_id, _ in fused_rankings.get(query_id, [])[:depth]]
        taken = set(candidates)
        wanted = min(len(candidates) + num_random, len(doc_ids))
        while len(candidates) < wanted:
            doc_id = doc_ids[rng.randrange(len(doc_ids))]
            if doc_id not in taken:
                candidates.append(doc_id)
                taken.add(doc_id)
        labels = teacher_labels(candidates, [rankings.get(query_id, []) for rankings in retriever_rankings])
        for doc_id, label in zip(candidates, labels):
            pairs.add(query_id, query, document_text(doc_id), label)
    pairs.self_supervised_pairs = len(pairs)
    return pairs


def distilled_model_dir(output_dir: str | Path) -> Path:
    """Where the warm-started model is kept, so a resumed run goes straight to the judged stage."""
    return Path(output_dir) / DISTILLED_DIR
