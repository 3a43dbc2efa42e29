"""First-stage candidates for training: our own first stage indexed once over the training corpus."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.rankings import Rankings, cut

logger = logging.getLogger(__name__)

class CandidateSource:
    """Rankings ``{qid: [(doc_id, score), ...]}`` (best first) for any queries, from one indexed first stage.

    Build with :meth:`build` (``bm25``, ``dense`` or ``hybrid`` from :func:`rerank_pipeline.first_stage.build_first_stage`)
    or wrap precomputed rankings with :meth:`from_rankings` (tests, cached runs).
    """

    def __init__(self, first_stage=None, rankings: Mapping[str, Sequence[tuple[str, float]]] | None = None, name: str = "first stage"):
        if first_stage is None and rankings is None:
            raise ValueError("CandidateSource needs a first stage or precomputed rankings")
        self.first_stage = first_stage
        self.rankings = {qid: list(ranking) for qid, ranking in (rankings or {}).items()}
        self.name = name

    @classmethod
    def build(
        cls, dataset: RetrievalDataset, kind: str = "hybrid", embedding_model: str | None = None, index_dir: str | None = None, **options
    ) -> CandidateSource:
        """Index ``dataset``'s corpus with our first stage of ``kind``."""
        from rerank_pipeline.first_stage import build_first_stage

        started = time.perf_counter()
        first_stage = build_first_stage(kind, index_dir=index_dir, embedding_model=embedding_model, **options)
        first_stage.index(dataset.documents())
        logger.info("indexed %d documents for the %s first stage in %.1fs", len(dataset.corpus), kind, time.perf_counter() - started)
        return cls(first_stage=first_stage, name=kind)

    @classmethod
    def from_rankings(cls, rankings: Mapping[str, Sequence[tuple[str, float]]], name: str = "precomputed") -> CandidateSource:
        """Serve fixed rankings; asking for a query without one raises ``KeyError``."""
        return cls(rankings=rankings, name=name)

    def retrieve(self, queries: Mapping[str, str], top_k: int = 100) -> Rankings:
        """Top ``top_k`` candidates of every query."""
        if self.first_stage is None:
            missing = [qid for qid in queries if qid not in self.rankings]
            if missing:
                raise KeyError(f"no precomputed ranking for queries {missing[:5]}")
            return {qid: self.rankings[qid][:top_k] for qid in queries}
        if not queries:
            return {}
        return self.first_stage.retrieve(dict(queries), top_k=top_k)

    def retrieve_with_side_rankings(
        self, queries: Mapping[str, str], top_k: int, side_top_k: int
    ) -> tuple[Rankings, list[Rankings]]:
        """:meth:`FirstStage.retrieve_with_side_rankings <rerank_pipeline.first_stage.FirstStage.retrieve_with_side_rankings>`
        (precomputed rankings count as one side)."""
        if self.first_stage is not None:
            return self.first_stage.retrieve_with_side_rankings(dict(queries), top_k, side_top_k)
        rankings = self.retrieve(queries, top_k=max(top_k, side_top_k))
        return cut(rankings, top_k), [cut(rankings, side_top_k)]
