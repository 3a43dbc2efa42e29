"""End to end: candidates from our own first stage, full-ranking metrics before and after reranking."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rerank_pipeline.components.score_fusion import FusionChoice
from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval.metrics import DEFAULT_MEASURES, full_ranking_metrics, relevance_kind
from rerank_pipeline.rankings import Rankings, from_documents, ranked_ids

logger = logging.getLogger(__name__)


def retrieve_rankings(
    dataset: RetrievalDataset,
    kind: str,
    top_k: int = 100,
    index_dir: str | None = None,
    embedding_model: str | None = None,
    **options,
) -> Rankings:
    """Index the dataset's corpus with our first stage (``bm25``, ``dense``, ``hybrid``, ``elasticsearch``)
    and retrieve ``top_k`` candidates for every query: qid -> [(doc_id, score)] best first.

    The documents go to the first stage one at a time (:meth:`RetrievalDataset.documents`). An embedded BM25 first
    stage streams them into an index folder, ``index_dir`` when it is new or empty, else a temporary folder removed
    on return, so memory never holds the corpus (an ``index_dir`` that already holds an index is updated as
    :meth:`FirstStage.index` does, documents in memory). Dense and hybrid first stages hold the documents while
    they embed them.
    """
    from rerank_pipeline.first_stage import build_first_stage
    from rerank_pipeline.options import canonical_first_stage

    with ExitStack() as cleanup:
        if index_dir is None and canonical_first_stage(kind) == "bm25":
            scratch = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rerank-eval-bm25-"))
            index_dir = str(Path(scratch) / "index")
        first_stage = build_first_stage(kind, index_dir=index_dir, embedding_model=embedding_model, **options)
        first_stage.index(dataset.documents(), total=len(dataset.corpus))
        return first_stage.retrieve(dict(dataset.queries), top_k=top_k)


def pipeline_rankings(pipeline, dataset: RetrievalDataset, progress: bool = False) -> tuple[Rankings, Rankings | None]:
    """Run a Haystack pipeline (query in, documents out) on every judged query of ``dataset``, batched where its
    components allow: (the ranking it outputs, the ranking its first stage fed the ranker, or None when it has no
    ranker). qid -> [(doc_id, score)] best first."""
    from rerank_pipeline.batch_run import run_batch
    from rerank_pipeline.pipelines import output_component, ranker_input_component

    qids = [qid for qid in dataset.judged_queries() if dataset.queries[qid].strip()]
    final, first_stage = output_component(pipeline), ranker_input_component(pipeline)
    outputs = run_batch(pipeline, [dataset.queries[qid] for qid in qids], progress=progress)

    def ranking(name: str) -> Rankings:
        rankings = {qid: [] for qid in dataset.judged_queries()}  # a blank query finds nothing
        for qid, output in zip(qids, outputs):
            rankings[qid] = from_documents(output[name]["documents"])
        return rankings

    return ranking(final), (ranking(first_stage) if first_stage else None)


def as_ranker(scorer, batch_size: int | None = None, show_progress_bar: bool = False):
    """A ranker component for ``scorer``: itself when it is one (``run_batch``), else a
    :class:`~rerank_pipeline.components.pair_ranking.ScorerRanker` over its ``predict``."""
    from rerank_pipeline.components.pair_ranking import ScorerRanker

    if hasattr(scorer, "run_batch"):
        return scorer
    return ScorerRanker(scorer, batch_size=batch_size, show_progress_bar=show_progress_bar)


@dataclass(frozen=True)
class Truncation:
    """How many reranked candidates a cross-encoder's window cut (``long_document="truncate"``), and by how many
    document tokens (:meth:`CrossEncoderRanker.truncated_tokens`)."""

    window: int
    candidates: int
    truncated: int
    tokens_cut_mean: float
    """Mean over the truncated candidates (0 when none is)."""
    tokens_cut_max: int
    tokens_cut_total: int

    @classmethod
    def from_counts(cls, counts: Sequence[int], window: int) -> Truncation:
        """The figures of one count a candidate (document tokens cut; 0: it fit)."""
        cut = [count for count in counts if count > 0]
        return cls(window=window, candidates=len(counts), truncated=len(cut),
                   tokens_cut_mean=sum(cut) / len(cut) if cut else 0.0, tokens_cut_max=max(cut, default=0),
                   tokens_cut_total=sum(cut))

    @property
    def share(self) -> float:
        """Truncated candidates over all (0 when there are none)."""
        return self.truncated / self.candidates if self.candidates else 0.0

    def to_dict(self) -> dict[str, float | int]:
        """The figures, ``share`` included (``metrics.json``'s ``end_to_end.<collection>.truncation``)."""
        return {**asdict(self), "share": self.share}

    def line(self) -> str:
        """e.g. ``truncation: 812 of 2,250 candidates (36.1%) cut by the 512-token window; tokens cut mean 143,
        max 2,011``."""
        return (f"truncation: {self.truncated:,} of {self.candidates:,} candidates ({self.share:.1%}) cut by the "
                f"{self.window}-token window; tokens cut mean {self.tokens_cut_mean:,.0f}, max {self.tokens_cut_max:,}")


@dataclass
class EndToEndResult:
    """Full-ranking metrics of the first stage alone and after reranking its top ``rerank_k``."""

    name: str
    rerank_k: int
    fusion: str | None
    first_stage: dict[str, float]
    reranked: dict[str, float] | None
    per_query_first_stage: dict[str, dict[str, float]]
    per_query_reranked: dict[str, dict[str, float]] | None
    first_stage_run: dict[str, list[str]]
    reranked_run: dict[str, list[tuple[str, float]]] | None
    timings: dict[str, float] = field(default_factory=dict)
    relevance: str = "graded"
    fusion_weight: float | None = None
    truncation: Truncation | None = None

    @property
    def fusion_label(self) -> str | None:
        """How the reranked top was ordered, e.g. ``fusion.json w=0.3`` or ``rrf`` (None: the reranker alone)."""
        return f"fusion.json w={self.fusion_weight:g}" if self.fusion == "model" else self.fusion

    def paired_tests(self, comparisons: int = 1) -> dict:
        """metric -> :class:`~rerank_pipeline.eval.significance.PairedTest` of reranked against the first stage
        (empty when nothing was reranked; not run, saying why, with fewer than 2 queries)."""
        from rerank_pipeline.eval.significance import compare_or_not_run

        if self.per_query_reranked is None:
            return {}
        return compare_or_not_run(self.per_query_first_stage, self.per_query_reranked, comparisons=comparisons)


def evaluate_end_to_end(
    dataset: RetrievalDataset,
    first_stage_rankings: Rankings,
    scorer=None,
    rerank_k: int = 100,
    fusion: FusionChoice | None = None,
    measures: Mapping[str, object] | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
    reranked_rankings: Rankings | None = None,
) -> EndToEndResult:
    """nDCG@10, MRR@10, Recall@100 and MAP (ir_measures, graded qrels) of ``first_stage_rankings`` and, when a
    ``scorer`` is given, of the same lists with the top ``rerank_k`` reranked by it (a ranker component, or any
    scorer through :func:`as_ranker`) and fused by ``fusion``'s component (:func:`rerank_pipeline.reranking.rerank`,
    the served pipeline's ranking and fusion).

    ``first_stage_rankings``: qid -> doc ids or (doc_id, score) pairs, best first. Averages over judged queries.
    ``reranked_rankings`` (instead of a ``scorer``): the reranked lists, already computed (``eval --pipeline``).

    :raises ValueError: a judged query has no first-stage ranking.
    """
    from rerank_pipeline.reranking import rerank

    measures = measures or DEFAULT_MEASURES
    judged = dataset.judged_queries()
    missing = [qid for qid in judged if qid not in first_stage_rankings]
    if missing:
        raise ValueError(f"{dataset.name}: {len(missing)} judged queries have no first-stage ranking, e.g. {missing[:5]}")
    first_stage_run = {qid: ranked_ids(first_stage_rankings[qid]) for qid in judged}
    started = time.perf_counter()
    first_mean, first_per_query = full_ranking_metrics(dataset.qrels, first_stage_run, measures)
    timings = {"metrics_s": time.perf_counter() - started}
    reranked_run = reranked_mean = reranked_per_query = None
    fusion = fusion if fusion is not None and fusion.method != "none" else None
    if reranked_rankings is not None:
        reranked_run = {qid: list(reranked_rankings.get(qid, [])) for qid in judged}
    elif scorer is not None:
        scoring = time.perf_counter()
        reranked = rerank(as_ranker(scorer, batch_size, show_progress_bar), dataset.queries,
                          {qid: first_stage_rankings[qid] for qid in judged}, dataset.document_text, rerank_k)
        reranked_run = reranked.ranking(fusion.component(depth=rerank_k) if fusion else None)
        timings["score_s"] = time.perf_counter() - scoring
    if reranked_run is not None:
        measuring = time.perf_counter()
        reranked_mean, reranked_per_query = full_ranking_metrics(
            dataset.qrels, {qid: ranked_ids(ranking) for qid, ranking in reranked_run.items()}, measures
        )
        timings["metrics_s"] += time.perf_counter() - measuring
    return EndToEndResult(
        name=dataset.name, rerank_k=rerank_k, fusion=fusion.method if fusion else None,
        fusion_weight=fusion.weight if fusion and fusion.method == "model" else None,
        first_stage=first_mean, reranked=reranked_mean,
        per_query_first_stage=first_per_query, per_query_reranked=reranked_per_query,
        first_stage_run=first_stage_run, reranked_run=reranked_run,
        timings={**timings, "total_s": time.perf_counter() - started}, relevance=relevance_kind(dataset.qrels),
    )
