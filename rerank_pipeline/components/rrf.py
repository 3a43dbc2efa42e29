"""Reciprocal rank fusion (RRF): the one fusion of rankings used in serving, evaluation and training.

A document scores ``sum(1 / (rrf_k + rank))`` over the rankings it appears in (rank from 1), each ranking cut to
its first ``fusion_depth`` entries; ties go to the smaller id, so the order never depends on input order.
"""

# no ``from __future__ import annotations``: Haystack must see ``Variadic`` itself to accept several senders
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.component.types import Variadic

RRF_K = 60
FUSION_DEPTH = 100


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]], rrf_k: int = RRF_K, top_k: int | None = None
) -> list[tuple[Hashable, float]]:
    """Fuse rankings of ids (best first) into ``[(id, rrf_score)]``, best first, at most ``top_k``."""
    scores: dict[Hashable, float] = defaultdict(float)
    for ranking in rankings:
        for rank, item in enumerate(dict.fromkeys(ranking), start=1):
            scores[item] += 1.0 / (rrf_k + rank)
    fused = sorted(scores.items(), key=lambda entry: (-entry[1], entry[0]))
    return fused if top_k is None else fused[:top_k]


@component
class ReciprocalRankFusion:
    """Join the document lists of several retrievers by reciprocal rank fusion (the hybrid first stage).

    Each input list is cut to ``max(top_k, fusion_depth)`` documents; the output carries the RRF ``score``.

    Usage:
        pipeline.add_component("joiner", ReciprocalRankFusion(rrf_k=60, fusion_depth=100, top_k=100))
        pipeline.connect("bm25_retriever.documents", "joiner.documents")
        pipeline.connect("dense_retriever.documents", "joiner.documents")
    """

    def __init__(self, rrf_k: int = RRF_K, fusion_depth: int = FUSION_DEPTH, top_k: int | None = None) -> None:
        """:param rrf_k: RRF's ``k``. :param fusion_depth: Documents of each input fused. :param top_k: Documents out."""
        for name, value in (("rrf_k", rrf_k), ("fusion_depth", fusion_depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        self.rrf_k = rrf_k
        self.fusion_depth = fusion_depth
        self.top_k = top_k

    def fuse(self, documents: Sequence[Sequence[Document]], top_k: int | None = None) -> list[Document]:
        """Fused list of one query (``documents``: one list per retriever, best first)."""
        top_k = self.top_k if top_k is None else top_k
        depth = max(top_k or 0, self.fusion_depth)
        by_id = {document.id: document for ranking in documents for document in ranking[:depth]}
        fused = reciprocal_rank_fusion([[d.id for d in ranking[:depth]] for ranking in documents], self.rrf_k, top_k)
        return [replace(by_id[doc_id], score=score) for doc_id, score in fused]

    @component.output_types(documents=list[Document])
    def run(self, documents: Variadic[list[Document]], top_k: int | None = None) -> dict[str, list[Document]]:
        """``{"documents": [...]}``: the inputs fused, best first."""
        return {"documents": self.fuse(list(documents), top_k)}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: Variadic[list[Document]], top_k: int | None = None) -> dict[str, list[Document]]:
        """Same as :meth:`run` (pure computation)."""
        return self.run(documents, top_k)

    def run_batch(self, documents: list[list[list[Document]]], top_k: int | None = None) -> dict[str, list[list[Document]]]:
        """:meth:`run` for many queries at once: ``documents[q]`` holds query ``q``'s input lists."""
        return {"documents": [self.fuse(lists, top_k) for lists in documents]}

    def to_dict(self) -> dict[str, Any]:
        """Serialize the init parameters."""
        return default_to_dict(self, rrf_k=self.rrf_k, fusion_depth=self.fusion_depth, top_k=self.top_k)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReciprocalRankFusion":
        """Inverse of :meth:`to_dict`."""
        return default_from_dict(cls, data)
