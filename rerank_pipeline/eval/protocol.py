"""The R-k reranking protocol of sentence-transformers' ``CrossEncoderRerankingEvaluator`` over a RetrievalDataset.

Per judged query: the first ``rerank_k`` first-stage candidates are scored and reordered. With
``always_rerank_positives`` (default) every positive joins the reranked set (positives first, then the other
candidates), so the ceiling is 1.0; without it only the retrieved positives count. The *base* metrics come from
the first-stage order with unretrieved positives appended (0 when no positive was retrieved). MAP is average
precision over the reranked list; MRR@k and nDCG@k (binary gains) as in sentence-transformers; a query with no
positive in the reranked set scores 0. The numbers equal sentence-transformers' for the same samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, ndcg_score
from tqdm.auto import tqdm

from rerank_pipeline.components.pair_ranking import predict_named
from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.rankings import Rankings, ranked_ids

logger = logging.getLogger(__name__)

METRIC_NAMES = ("map", "mrr@{k}", "ndcg@{k}")


def metric_names(at_k: int = 10) -> list[str]:
    """``["map", "mrr@10", "ndcg@10"]`` for ``at_k=10``."""
    return [name.format(k=at_k) for name in METRIC_NAMES]


def query_metrics(is_relevant: Sequence[int], scores: np.ndarray, at_k: int) -> tuple[float, float, float]:
    """(MRR@k, nDCG@k, AP) of one scored list, computed exactly as sentence-transformers does."""
    order = np.argsort(scores)[::-1]
    mrr = 0.0
    for rank, index in enumerate(order[0:at_k]):
        if is_relevant[index]:
            mrr = 1 / (rank + 1)
            break
    # sklearn refuses a one-document list; its nDCG is simply whether that document is relevant
    ndcg = ndcg_score([is_relevant], [scores], k=at_k) if len(scores) > 1 else float(bool(is_relevant[0]))
    ap = average_precision_score(is_relevant, scores)
    return mrr, float(ndcg), float(ap)


@dataclass
class ProtocolSample:
    """One query's reranking task: ``doc_ids`` in scoring order, their 0/1 labels, and the base metrics."""

    query_id: str
    query: str
    doc_ids: list[str]
    is_relevant: list[int]
    first_stage_order: list[int]
    base: tuple[float, float, float]
    num_positives: int


def build_sample(
    query_id: str,
    query: str,
    positive_keys: list[str],
    positive_ids: list[str],
    candidate_keys: list[str],
    candidate_ids: list[str],
    always_rerank_positives: bool,
    at_k: int,
) -> ProtocolSample:
    """Mirror sentence-transformers' sample handling on keys (doc ids, or texts with ``match="text"``)."""
    if candidate_keys:
        base_is_relevant = [int(key in positive_keys) for key in candidate_keys]
        if sum(base_is_relevant) == 0:
            base = (0.0, 0.0, 0.0)
        else:
            base_is_relevant += [1] * (len(positive_keys) - sum(base_is_relevant))
            base_scores = np.array(range(len(base_is_relevant), 0, -1))
            base = query_metrics(base_is_relevant, base_scores, at_k)
    else:
        base = (0.0, 0.0, 0.0)
    if always_rerank_positives:
        others = [(key, doc_id) for key, doc_id in zip(candidate_keys, candidate_ids) if key not in positive_keys]
        doc_ids = list(positive_ids) + [doc_id for _, doc_id in others]
        is_relevant = [1] * len(positive_ids) + [0] * len(others)
        # positions in first-stage order: retrieved docs by rank, unretrieved positives after them
        rank_of = {}
        for rank, key in enumerate(candidate_keys):
            rank_of.setdefault(key, rank)
        keys = list(positive_keys) + [key for key, _ in others]
        fallback = len(candidate_keys)
        positions = []
        for index, key in enumerate(keys):
            positions.append(rank_of.get(key, fallback + index) if index < len(positive_keys) else rank_of[key])
        first_stage_order = sorted(range(len(keys)), key=lambda i: (positions[i], i))
    else:
        doc_ids = list(candidate_ids)
        is_relevant = [int(key in positive_keys) for key in candidate_keys]
        first_stage_order = list(range(len(doc_ids)))
    return ProtocolSample(query_id, query, doc_ids, is_relevant, first_stage_order, base, len(positive_keys))


@dataclass
class ProtocolResult:
    """Metrics of one dataset under the protocol.

    ``metrics`` holds ``map``, ``mrr@k``, ``ndcg@k`` (reranked) and ``base_*`` (first-stage order);
    ``per_query`` the same per query id; ``reranked`` each query's scored list, best first (doc id, score).
    """

    name: str
    rerank_k: int
    at_k: int
    always_rerank_positives: bool
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    reranked: dict[str, list[tuple[str, float]]]
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """``NanoMSMARCO_R100``: the prefix of this dataset's keys."""
        return f"{self.name}_R{self.rerank_k}"

    def prefixed(self) -> dict[str, float]:
        """Keys as sentence-transformers writes them, e.g. ``NanoMSMARCO_R100_ndcg@10``."""
        return {f"{self.prefix}_{key}": value for key, value in self.metrics.items()}

    def model_card(self) -> dict[str, str]:
        """Model-card strings ``"0.6323 (+0.0918)"``: reranked value and gain over the base order."""
        return model_card_strings(self.metrics, self.at_k)

    def paired_tests(self, comparisons: int = 1) -> dict:
        """metric -> :class:`~rerank_pipeline.eval.significance.PairedTest` of reranked against the base order
        (not run, saying why, with fewer than 2 queries)."""
        from rerank_pipeline.eval.significance import compare_or_not_run

        base = {qid: {name: row["base_" + name] for name in metric_names(self.at_k)} for qid, row in self.per_query.items()}
        reranked = {qid: {name: row[name] for name in metric_names(self.at_k)} for qid, row in self.per_query.items()}
        return compare_or_not_run(base, reranked, metric_names(self.at_k), comparisons)


def model_card_strings(metrics: Mapping[str, float], at_k: int = 10) -> dict[str, str]:
    """``{"map": "0.5676 (+0.1123)", ...}`` from reranked and ``base_`` values."""
    return {
        name: f"{metrics[name]:.4f} ({metrics[name] - metrics['base_' + name]:+.4f})"
        for name in metric_names(at_k)
        if "base_" + name in metrics
    }


def _document_key(dataset: RetrievalDataset, match: str):
    if match == "id":
        return lambda doc_id: doc_id
    if match == "text":
        return dataset.document_text
    raise ValueError(f"match must be 'id' or 'text', got {match!r}")


def build_samples(
    dataset: RetrievalDataset,
    rankings: Rankings | None = None,
    rerank_k: int = 100,
    at_k: int = 10,
    always_rerank_positives: bool = True,
    match: str = "id",
) -> list[ProtocolSample]:
    """One :class:`ProtocolSample` per judged query (a query with a positive), in qrels order.

    ``rankings`` defaults to the dataset's published ones; a judged query without a ranking, or a ranking
    naming an unknown document, raises ``ValueError``. ``match="text"`` compares documents by text as
    sentence-transformers does (differs from ids only when the corpus holds duplicate texts).
    """
    if rerank_k < 1:
        raise ValueError(f"rerank_k must be >= 1, got {rerank_k}")
    rankings = rankings if rankings is not None else dataset.rankings
    if rankings is None:
        raise ValueError(f"{dataset.name}: no first-stage rankings given and the dataset publishes none")
    judged = dataset.judged_queries()
    if not judged:
        raise ValueError(f"{dataset.name}: no judged queries (no query has a relevant document)")
    missing = [qid for qid in judged if qid not in rankings]
    if missing:
        raise ValueError(f"{dataset.name}: {len(missing)} judged queries have no first-stage ranking, e.g. {missing[:5]}")
    key_of = _document_key(dataset, match)
    samples = []
    for qid, query in judged.items():
        candidate_ids = ranked_ids(rankings[qid])[:rerank_k]
        unknown = [doc_id for doc_id in candidate_ids if doc_id not in dataset.corpus]
        if unknown:
            raise ValueError(f"{dataset.name}: the ranking of query {qid!r} names unknown documents {unknown[:5]}")
        positive_ids = dataset.positives(qid)
        samples.append(
            build_sample(
                qid, query,
                [key_of(doc_id) for doc_id in positive_ids], positive_ids,
                [key_of(doc_id) for doc_id in candidate_ids], candidate_ids,
                always_rerank_positives, at_k,
            )
        )
    return samples


def score_samples(
    samples: list[ProtocolSample],
    dataset: RetrievalDataset,
    scorer,
    batch_size: int = 64,
    show_progress_bar: bool = False,
) -> list[np.ndarray | None]:
    """Score all pairs in one ``scorer.predict`` call; ``None`` for samples without a positive (not scored).

    Pairs go in the sentence-transformers order, or in first-stage order for a scorer with
    ``keeps_input_order`` (the identity); scores come back in each sample's ``doc_ids`` order.
    """
    keeps_order = getattr(scorer, "keeps_input_order", False)
    pairs, names, spans = [], [], []
    for sample in samples:
        if sum(sample.is_relevant) == 0:
            spans.append(None)
            continue
        order = sample.first_stage_order if keeps_order else range(len(sample.doc_ids))
        spans.append((len(pairs), order))
        pairs.extend((sample.query, dataset.document_text(sample.doc_ids[index])) for index in order)
        names.extend(sample.doc_ids[index] for index in order)
    scores = (
        np.asarray(predict_named(scorer, pairs, names, batch_size, show_progress_bar), dtype=np.float64)
        if pairs else np.zeros(0)
    )
    if len(scores) != len(pairs):
        raise RuntimeError(f"scorer returned {len(scores)} scores for {len(pairs)} pairs")
    per_sample = []
    for span in spans:
        if span is None:
            per_sample.append(None)
            continue
        offset, order = span
        sample_scores = np.empty(len(order), dtype=np.float64)
        sample_scores[list(order)] = scores[offset : offset + len(order)]
        per_sample.append(sample_scores)
    return per_sample


def rerank_protocol(
    dataset: RetrievalDataset,
    rankings: Rankings | None,
    scorer,
    rerank_k: int = 100,
    at_k: int = 10,
    always_rerank_positives: bool = True,
    batch_size: int = 64,
    show_progress_bar: bool = False,
    name: str | None = None,
    match: str = "id",
) -> ProtocolResult:
    """Run the R``rerank_k`` protocol on one dataset; see the module docstring for the exact semantics.

    ``rankings``: qid -> doc ids (or (doc_id, score) pairs) best first; ``None`` uses ``dataset.rankings``.
    ``scorer``: anything with ``predict(pairs, batch_size=, show_progress_bar=)``.
    """
    started = time.perf_counter()
    samples = build_samples(dataset, rankings, rerank_k, at_k, always_rerank_positives, match)
    built = time.perf_counter()
    sample_scores = score_samples(samples, dataset, scorer, batch_size, show_progress_bar)
    scored = time.perf_counter()
    names = metric_names(at_k)
    per_query: dict[str, dict[str, float]] = {}
    reranked: dict[str, list[tuple[str, float]]] = {}
    for sample, scores in tqdm(
        list(zip(samples, sample_scores)), desc=f"Metrics {dataset.name}", disable=not show_progress_bar, leave=False
    ):
        if scores is None:
            mrr, ndcg, ap = 0.0, 0.0, 0.0
            reranked[sample.query_id] = []
        else:
            mrr, ndcg, ap = query_metrics(sample.is_relevant, scores, at_k)
            order = np.argsort(scores)[::-1]
            reranked[sample.query_id] = [(sample.doc_ids[i], float(scores[i])) for i in order]
        base_mrr, base_ndcg, base_ap = sample.base
        per_query[sample.query_id] = {
            names[0]: float(ap), names[1]: float(mrr), names[2]: float(ndcg),
            "base_" + names[0]: float(base_ap), "base_" + names[1]: float(base_mrr), "base_" + names[2]: float(base_ndcg),
        }
    metrics = {key: float(np.mean([row[key] for row in per_query.values()])) for key in next(iter(per_query.values()))}
    positives = [sample.num_positives for sample in samples]
    negatives = [len(sample.is_relevant) - sum(sample.is_relevant) for sample in samples]
    stats = {
        "queries": len(samples), "pairs_scored": sum(len(s.doc_ids) for s, sc in zip(samples, sample_scores) if sc is not None),
        "positives_min": float(np.min(positives)), "positives_mean": float(np.mean(positives)), "positives_max": float(np.max(positives)),
        "negatives_min": float(np.min(negatives)), "negatives_mean": float(np.mean(negatives)), "negatives_max": float(np.max(negatives)),
    }
    finished = time.perf_counter()
    timings = {"build_s": built - started, "score_s": scored - built, "metrics_s": finished - scored, "total_s": finished - started}
    result = ProtocolResult(
        name=name or dataset.name, rerank_k=rerank_k, at_k=at_k, always_rerank_positives=always_rerank_positives,
        metrics=metrics, per_query=per_query, reranked=reranked, stats=stats, timings=timings,
    )
    logger.info("%s: %s", result.prefix, result.model_card())
    return result


@dataclass
class SuiteResult:
    """Several datasets under one protocol, plus the aggregate (``NanoBEIR_R100_mean_ndcg@10``)."""

    results: list[ProtocolResult]
    suite_name: str = "NanoBEIR"
    aggregate_key: str = "mean"
    with_aggregate: bool = True

    @property
    def prefix(self) -> str:
        return f"{self.suite_name}_R{self.results[0].rerank_k}_{self.aggregate_key}"

    @property
    def aggregate(self) -> dict[str, float]:
        """Mean over datasets of every metric (reranked and base)."""
        keys = list(self.results[0].metrics)
        return {key: float(np.mean([result.metrics[key] for result in self.results])) for key in keys}

    def flat(self) -> dict[str, float]:
        """All keys as sentence-transformers' ``CrossEncoderNanoBEIREvaluator`` returns them."""
        flat: dict[str, float] = {}
        for result in self.results:
            flat.update(result.prefixed())
        if self.with_aggregate:
            flat.update({f"{self.prefix}_{key}": value for key, value in self.aggregate.items()})
        return flat

    def model_card(self) -> dict[str, str]:
        return model_card_strings(self.aggregate, self.results[0].at_k)


def rerank_protocol_suite(
    items: Sequence[tuple[RetrievalDataset, Rankings | None]],
    scorer,
    suite_name: str = "NanoBEIR",
    aggregate_key: str = "mean",
    show_progress_bar: bool = False,
    with_aggregate: bool = True,
    **protocol_options,
) -> SuiteResult:
    """:func:`rerank_protocol` on each (dataset, rankings) pair, with means over datasets
    (``{suite_name}_R{k}_{aggregate_key}_*`` keys unless ``with_aggregate=False``)."""
    if not items:
        raise ValueError("no datasets to evaluate")
    results = [
        rerank_protocol(dataset, rankings, scorer, show_progress_bar=show_progress_bar, **protocol_options)
        for dataset, rankings in tqdm(items, desc="Datasets", disable=not show_progress_bar or len(items) < 2)
    ]
    return SuiteResult(results, suite_name, aggregate_key, with_aggregate)
