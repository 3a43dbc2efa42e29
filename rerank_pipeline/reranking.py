"""Rerank-and-fuse over first-stage rankings, with the served pipeline's own components.

``eval`` and training hold first-stage :data:`~rerank_pipeline.rankings.Rankings` rather than a running pipeline;
:func:`rerank` feeds them, as documents, through a ranker component's ``run_batch`` (``CrossEncoderRanker``, or a
:class:`~rerank_pipeline.components.pair_ranking.ScorerRanker` over any scorer) and :meth:`Reranked.ranking` through
the fusion component a served pipeline puts after it (``RerankerScoreFusion`` or ``ReciprocalRankFusion``). One
scoring serves every fusion weight a training run tries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from haystack import Document

from rerank_pipeline.components.score_fusion import RerankerScoreFusion
from rerank_pipeline.rankings import Rankings, as_documents, from_documents


@dataclass
class Reranked:
    """Per query: the first-stage head (documents with first-stage scores, best first), the ranker's order of it,
    and the ids of the first-stage tail below the head (kept in order under it)."""

    first_stage: dict[str, list[Document]]
    reranked: dict[str, list[Document]]
    tail: dict[str, list[str]]

    def ranking(self, fusion=None) -> Rankings:
        """qid -> the head ordered by ``fusion`` (a fusion component, e.g. from
        :meth:`~rerank_pipeline.components.score_fusion.FusionChoice.component`; None: the ranker's order), then the
        tail, scored below the head."""
        qids = list(self.reranked)
        heads = [self.reranked[qid] for qid in qids]
        if isinstance(fusion, RerankerScoreFusion):
            heads = fusion.run_batch(heads, [self.first_stage[qid] for qid in qids])["documents"]
        elif fusion is not None:  # reciprocal rank fusion: the first stage's order, then the ranker's
            heads = fusion.run_batch([[self.first_stage[qid], self.reranked[qid]] for qid in qids])["documents"]
        rankings = {}
        for qid, head in zip(qids, heads):
            top = from_documents(head)
            floor = min((score for _, score in top), default=0.0)
            rankings[qid] = top + [(doc_id, floor - 1 - rank) for rank, doc_id in enumerate(self.tail[qid])]
        return rankings

    def fused(self, weight: float) -> Rankings:
        """:meth:`ranking` with a ``RerankerScoreFusion`` of ``weight`` (0: the first stage, 1: the ranker)."""
        return self.ranking(RerankerScoreFusion(weight=weight))


def rerank(
    ranker,
    queries: Mapping[str, str],
    rankings: Mapping[str, Sequence],
    text_of: Callable[[str], str],
    depth: int = 100,
) -> Reranked:
    """Rerank each query's top ``depth`` first-stage candidates with ``ranker`` (a component with
    ``run_batch(query, documents, top_k)``), all queries in one call; the rest keep their order below.

    ``rankings``: qid -> ``(doc_id, score)`` pairs (or bare ids, scored ``-rank``) best first.
    """
    qids = list(rankings)
    first_stage, tail = {}, {}
    for qid in qids:
        documents = as_documents(rankings[qid], text_of)
        first_stage[qid] = documents[:depth]
        tail[qid] = [document.id for document in documents[depth:]]
    asked = [qid for qid in qids if first_stage[qid] and queries[qid].strip()]  # a blank query keeps its order
    ranked = ranker.run_batch(query=[queries[qid] for qid in asked], documents=[first_stage[qid] for qid in asked],
                              top_k=None)["documents"] if asked else []
    reranked = dict(first_stage) | dict(zip(asked, ranked))
    return Reranked(first_stage=first_stage, reranked=reranked, tail=tail)

