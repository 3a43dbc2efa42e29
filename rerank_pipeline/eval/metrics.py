"""Full-ranking metrics with graded qrels, computed by ir_measures (nDCG@10, MRR@10, Recall@100, MAP)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ir_measures
import numpy as np

DEFAULT_MEASURES = {
    "ndcg@10": ir_measures.nDCG @ 10,
    "mrr@10": ir_measures.RR @ 10,
    "recall@100": ir_measures.R @ 100,
    "map": ir_measures.AP,
}
"""Report name -> ir_measures measure. nDCG uses the graded gains (linear, as trec_eval); the others count
gain >= 1 as relevant."""


def rank_run(ranked: Mapping[str, Sequence]) -> dict[str, dict[str, float]]:
    """qid -> doc ids (or (doc_id, score) pairs) best first  ->  qid -> {doc_id: score} with strictly decreasing scores (``depth - rank``).

    Scores derived from ranks keep every tool (ir_measures, trec_eval) reading exactly our order, ties included.
    A doc id repeated in a list keeps its best rank.
    """
    run = {}
    for qid, ranking in ranked.items():
        unique = list(dict.fromkeys(str(item[0]) if isinstance(item, (tuple, list)) else str(item) for item in ranking))
        run[qid] = {doc_id: float(len(unique) - rank) for rank, doc_id in enumerate(unique)}
    return run


def full_ranking_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    ranked: Mapping[str, Sequence],
    measures: Mapping[str, object] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean, per-query) metrics of ranked lists against graded qrels.

    Averages over every judged query (a query with a relevant document); a judged query missing from the run,
    or with an empty list, scores 0 (ir_measures alone would skip it).
    """
    measures = dict(measures or DEFAULT_MEASURES)
    judged = {qid: dict(rels) for qid, rels in qrels.items() if any(gain > 0 for gain in rels.values())}
    if not judged:
        raise ValueError("no judged queries: the qrels have no relevant document")
    run = {qid: scores for qid, scores in rank_run(ranked).items() if qid in judged and scores}
    names_of = {measure: name for name, measure in measures.items()}
    per_query = {qid: {name: 0.0 for name in measures} for qid in judged}
    for metric in ir_measures.iter_calc(list(measures.values()), judged, run):
        per_query[metric.query_id][names_of[metric.measure]] = float(metric.value)
    mean = {name: float(np.mean([row[name] for row in per_query.values()])) for name in measures}
    return mean, per_query


def relevance_kind(qrels: Mapping[str, Mapping[str, int]]) -> str:
    """``"graded"`` when some judgement has a gain above 1, else ``"binary"``: the label every table carries."""
    return "graded" if any(gain > 1 for rels in qrels.values() for gain in rels.values()) else "binary"
