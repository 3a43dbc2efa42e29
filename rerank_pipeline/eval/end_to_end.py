"""End to end: candidates from our own first stage, full-ranking metrics before and after reranking."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rerank_pipeline.components.rrf import RRF_K, reciprocal_rank_fusion
from rerank_pipeline.components.score_fusion import fuse_scores
from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval.metrics import DEFAULT_MEASURES, full_ranking_metrics, relevance_kind
from rerank_pipeline.eval.protocol import Rankings, ranked_ids
from rerank_pipeline.eval.scorers import predict_named

logger = logging.getLogger(__name__)

FUSIONS = (None, "model", "rrf")


def retrieve_rankings(
    dataset: RetrievalDataset,
    kind: str,
    top_k: int = 100,
    index_dir: str | None = None,
    embedding_model: str | None = None,
    **options,
) -> dict[str, list[tuple[str, float]]]:
    """Index the dataset's corpus with our first stage (``bm25``, ``dense``, ``hybrid``, ``elasticsearch``)
    and retrieve ``top_k`` candidates for every query: qid -> [(doc_id, score)] best first.

    The documents go to the first stage one at a time (:meth:`RetrievalDataset.documents`). An embedded BM25 first
    stage streams them into an index folder, ``index_dir`` when it is new or empty, else a temporary folder removed
    on return, so memory never holds the corpus (an ``index_dir`` that already holds an index is updated as
    :meth:`FirstStage.index` does, documents in memory). Dense and hybrid first stages hold the documents while
    they embed them.
    """
    from rerank_pipeline.first_stage import _canonical_kind, build_first_stage

    with ExitStack() as cleanup:
        if index_dir is None and _canonical_kind(kind) == "bm25":
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
            rankings[qid] = [(document.id, float(document.score or 0.0)) for document in output[name]["documents"]]
        return rankings

    return ranking(final), (ranking(first_stage) if first_stage else None)


def rerank_rankings(
    dataset: RetrievalDataset,
    rankings: Rankings,
    scorer,
    rerank_k: int = 100,
    fusion: str | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
    fusion_weight: float | None = None,
) -> dict[str, list[tuple[str, float]]]:
    """Reorder each query's top ``rerank_k`` by ``scorer`` (one batched predict call); the rest keep their order.

    ``fusion`` orders the top ``rerank_k`` as the served pipeline does: None by the reranker alone, ``"model"`` by
    :func:`~rerank_pipeline.components.score_fusion.fuse_scores` of reranker and first-stage scores with
    ``fusion_weight`` (a model's ``fusion.json``; ties keep the reranker's order, like ``RerankerScoreFusion``),
    ``"rrf"`` by :func:`~rerank_pipeline.components.rrf.reciprocal_rank_fusion` of the first-stage and reranker
    orders. ``rankings`` given as bare ids have first-stage scores ``-rank``. Returned scores are the reranker's
    (the fused ones when fused) for the top ``rerank_k``; the tail keeps its order below them.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
    if fusion == "model" and fusion_weight is None:
        raise ValueError("fusion 'model' needs the fusion_weight of the model's fusion.json")
    pairs, names, spans = [], [], {}
    lists = {qid: ranked_ids(ranking) for qid, ranking in rankings.items()}
    for qid, doc_ids in lists.items():
        head = list(dict.fromkeys(doc_ids))[:rerank_k]
        spans[qid] = (len(pairs), head)
        pairs.extend((dataset.queries[qid], dataset.document_text(doc_id)) for doc_id in head)
        names.extend(head)
    scores = (
        np.asarray(predict_named(scorer, pairs, names, batch_size, show_progress_bar), dtype=np.float64)
        if pairs else np.zeros(0)
    )
    if len(scores) != len(pairs):
        raise RuntimeError(f"scorer returned {len(scores)} scores for {len(pairs)} pairs")
    reranked = {}
    for qid, (offset, head) in spans.items():
        head_scores = scores[offset : offset + len(head)]
        by_reranker = np.argsort(-head_scores, kind="stable")
        if fusion == "rrf":
            top = reciprocal_rank_fusion([head, [head[i] for i in by_reranker]], RRF_K)
        else:
            if fusion == "model":
                first_stage = _first_stage_scores(rankings[qid])
                head_scores = fuse_scores(head_scores, [first_stage[doc_id] for doc_id in head], fusion_weight)
            order = by_reranker[np.argsort(-head_scores[by_reranker], kind="stable")]
            top = [(head[i], float(head_scores[i])) for i in order]
        seen = set(head)
        floor = min((score for _, score in top), default=0.0)
        tail_ids = [doc_id for doc_id in dict.fromkeys(lists[qid]) if doc_id not in seen]
        tail = [(doc_id, floor - 1 - rank) for rank, doc_id in enumerate(tail_ids)]
        reranked[qid] = top + tail
    return reranked


def _first_stage_scores(ranking) -> dict[str, float]:
    """doc id -> its first-stage score (first occurrence); a bare id, or a None score, scores ``-rank``."""
    scores: dict[str, float] = {}
    for rank, item in enumerate(ranking, start=1):
        doc_id, score = (str(item[0]), item[1]) if isinstance(item, (tuple, list)) else (str(item), None)
        scores.setdefault(doc_id, float(score) if score is not None else float(-rank))
    return scores


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
    fusion: str | None = None,
    measures: Mapping[str, object] | None = None,
    batch_size: int = 64,
    show_progress_bar: bool = False,
    reranked_rankings: Rankings | None = None,
    fusion_weight: float | None = None,
) -> EndToEndResult:
    """nDCG@10, MRR@10, Recall@100 and MAP (ir_measures, graded qrels) of ``first_stage_rankings`` and, when a
    ``scorer`` is given, of the same lists with the top ``rerank_k`` reranked (``fusion`` and ``fusion_weight``
    as in :func:`rerank_rankings`).

    ``first_stage_rankings``: qid -> doc ids or (doc_id, score) pairs, best first. Averages over judged queries.
    ``reranked_rankings`` (instead of a ``scorer``): the reranked lists, already computed (``eval --pipeline``).
    """
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
    if reranked_rankings is not None:
        reranked_run = {qid: list(reranked_rankings.get(qid, [])) for qid in judged}
    elif scorer is not None:
        scoring = time.perf_counter()
        reranked_run = rerank_rankings(  # the given rankings: their scores feed fusion "model"
            dataset, {qid: first_stage_rankings[qid] for qid in judged}, scorer, rerank_k, fusion, batch_size,
            show_progress_bar, fusion_weight,
        )
        timings["score_s"] = time.perf_counter() - scoring
    if reranked_run is not None:
        measuring = time.perf_counter()
        reranked_mean, reranked_per_query = full_ranking_metrics(
            dataset.qrels, {qid: ranked_ids(ranking) for qid, ranking in reranked_run.items()}, measures
        )
        timings["metrics_s"] += time.perf_counter() - measuring
    return EndToEndResult(
        name=dataset.name, rerank_k=rerank_k, fusion=fusion, fusion_weight=fusion_weight if fusion == "model" else None,
        first_stage=first_mean, reranked=reranked_mean,
        per_query_first_stage=first_per_query, per_query_reranked=reranked_per_query,
        first_stage_run=first_stage_run, reranked_run=reranked_run,
        timings={**timings, "total_s": time.perf_counter() - started}, relevance=relevance_kind(dataset.qrels),
    )
