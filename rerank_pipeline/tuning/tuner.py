"""``tune``: measure the reranker's configurations on the user's judgements and choose the one to serve.

Every configuration is measured as the pipeline it would be served as (:func:`~rerank_pipeline.pipelines.
build_pipeline` over the index folder): its quality by the functions ``rerank-pipeline eval --pipeline`` runs on
it, and its latency as single queries through it, one at a time, warm. Quality runs share one score cache (keyed
by each configuration's model fingerprint, so only runs of the same window and engine share scores): a depth sweep
scores the deepest list once. Latency is always measured with the cache off.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haystack import Pipeline
from tqdm.auto import tqdm

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.tuning.choice import (
    DEFAULT_ALPHA,
    DEFAULT_EPSILON,
    DEFAULT_METRIC,
    Measurement,
    choose,
    judge,
    pareto_front,
)
from rerank_pipeline.tuning.grid import (
    DEFAULT_DEPTHS,
    DEFAULT_WINDOWS,
    STAGES,
    Configuration,
    full_grid,
    price,
    stage_configurations,
    windows_for,
)

logger = logging.getLogger(__name__)

DEFAULT_LATENCY_QUERIES = 20
DEFAULT_REFERENCE_DEPTH = 100
DEFAULT_TARGET_PRECISION = 0.5
QUALITY_CACHE_ENTRIES = 5_000_000
"""Bound of the score cache the quality runs share (about 240 bytes a pair held)."""


@dataclass
class TuneResult:
    """Every configuration ``tune`` measured, the reference, the chosen one and why, and the pipeline serving it."""

    dataset: str
    split: str
    queries: int
    model: str
    index_dir: str
    measurements: list[Measurement]
    reference: Measurement
    chosen: Measurement
    reason: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    pipeline: Pipeline
    calibration: Any = None
    chosen_from_pipeline: dict[str, float] = field(default_factory=dict)

    @property
    def pareto(self) -> list[Measurement]:
        """The configurations no other beats on both p50 and the deciding metric."""
        return pareto_front(self.measurements, self.settings["metric"])

    def save(self, folder: str | Path, overwrite: bool = False) -> list[Path]:
        """Write ``pipeline.yml``, ``tune.json``, ``tune.csv``, ``tune.md``, ``tune.png`` (and the calibration files)
        into ``folder`` as a whole (see :func:`~rerank_pipeline.tuning.report.write_tune_report`)."""
        from rerank_pipeline.tuning.report import write_tune_report

        return write_tune_report(self, folder, overwrite=overwrite)


def open_or_build_index(dataset: RetrievalDataset, index_dir: str | Path, first_stage: str = "bm25",
                        embedding_model: str | None = None, log: Callable[[str], None] = logger.info) -> Path:
    """The index in ``index_dir``; when the folder holds none, ``first_stage`` is built there from the collection.

    :raises ValueError: the index holds a different number of documents than the collection's corpus.
    """
    from rerank_pipeline.components.index_folder import read_settings
    from rerank_pipeline.first_stage import build_first_stage, open_first_stage

    index_dir = Path(index_dir).expanduser().resolve()
    if read_settings(str(index_dir)) is None:
        log(f"{index_dir}: no index there; building a {first_stage} index of {len(dataset.corpus)} documents")
        stage = build_first_stage(first_stage, embedding_model=embedding_model)
        stage.index_dir = str(index_dir)
        stage.index(dataset.documents(), total=len(dataset.corpus))
        return index_dir
    stage = open_first_stage(index_dir)
    held = stage.sides[0].store.count_documents()
    if held != len(dataset.corpus):
        raise ValueError(f"{index_dir} holds {held} documents but {dataset.name}'s corpus has {len(dataset.corpus)}: "
                         "index this collection (rerank-pipeline index --beir-dir ...) or pass another --index-dir")
    return index_dir


def tune(
    dataset: RetrievalDataset | str | Path,
    index_dir: str | Path,
    model: str,
    *,
    split: str = "test",
    max_queries: int | None = None,
    first_stage: str = "bm25",
    embedding_model: str | None = None,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    engines: Sequence[Any] | None = None,
    reference_depth: int = DEFAULT_REFERENCE_DEPTH,
    top_k: int = 10,
    fusion: str = "model",
    ranker_options: Mapping[str, Any] | None = None,
    metric: str = DEFAULT_METRIC,
    alpha: float = DEFAULT_ALPHA,
    epsilon: float = DEFAULT_EPSILON,
    budget_ms: float | None = None,
    latency_queries: int = DEFAULT_LATENCY_QUERIES,
    full: bool = False,
    calibration: str | None = "platt",
    target_precision: float = DEFAULT_TARGET_PRECISION,
    calibrated_scores: bool = False,
    device: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] = logger.info,
) -> TuneResult:
    """Measure configurations of ``model`` over the first stage in ``index_dir`` on ``dataset``'s judgements, and
    choose one (see :mod:`rerank_pipeline.tuning.choice`).

    :param dataset: A BEIR folder, NanoBEIR name, Hugging Face id or :class:`RetrievalDataset` (``split``'s
        judgements, the first ``max_queries`` judged queries).
    :param index_dir: The first-stage index (built there with ``first_stage`` when the folder holds none).
    :param depths: Candidate depths to try; the reference reranks ``reference_depth`` (added when missing).
    :param windows: Token windows to try, up to the longest the model's positions take (the reference keeps
        the model's own window).
    :param engines: :class:`~rerank_pipeline.hardware.EngineConfiguration` s to try (default: what this machine
        supports, :func:`~rerank_pipeline.hardware.engine_configurations`); the first is the reference's.
    :param ranker_options: Further ``CrossEncoderRanker`` keywords every configuration shares (e.g.
        ``allow_untrained_head``).
    :param budget_ms: Choose the best quality within this p50 instead of the fastest that is not worse.
    :param latency_queries: Queries timed one by one for each configuration (the first judged ones).
    :param full: Measure every combination instead of the staged sweep.
    :param calibration: ``platt``, ``isotonic`` or ``None``: fit score -> probability of relevance for the chosen
        configuration (cross-validated by query) and report the threshold reaching ``target_precision``.
    :param calibrated_scores: Put the calibration into the written pipeline, so its ranker returns probabilities.
    :returns: A :class:`TuneResult`; ``save(folder)`` writes the pipeline and the report.
    :raises ValueError: a setting out of range, or a collection with fewer than 2 judged queries.
    """
    from rerank_pipeline.eval.experiment import limit_queries, load_collection
    from rerank_pipeline.hardware import cpu_description, cpu_flags, engine_configurations
    from rerank_pipeline.serving import DEFAULT_SCORE_CACHE

    if not 0 < alpha < 1 or epsilon < 0:
        raise ValueError(f"alpha must be in (0, 1) and epsilon >= 0 (got {alpha}, {epsilon})")
    if budget_ms is not None and not budget_ms > 0:
        raise ValueError(f"budget_ms must be > 0 (a p50 budget in milliseconds), got {budget_ms}")
    if latency_queries < 1 or reference_depth < 1 or any(depth < 1 for depth in depths):
        raise ValueError("latency_queries, reference_depth and every depth must be >= 1")
    dataset = limit_queries(load_collection(dataset, split=split), max_queries)
    if len(dataset.judged_queries()) < 2:
        raise ValueError(f"{dataset.name} has {len(dataset.judged_queries())} judged queries; tune needs at least 2 "
                         "for its paired tests")
    index_dir = open_or_build_index(dataset, index_dir, first_stage, embedding_model, log)
    engines = list(engines if engines is not None else engine_configurations(device))
    base_options = {**dict(ranker_options or {}), **({"device": device} if device else {})}
    load_before = os.getloadavg()[0]
    measurer = _Measurer(dataset, index_dir, model, top_k, fusion, base_options, latency_queries, progress)

    model_window, longest_window, seconds_per_pair = measurer.probe_reference(engines[0], reference_depth)
    reference_config = Configuration(reference_depth, model_window, engines[0])
    depths = sorted(set(depths) | {reference_depth})
    windows = windows_for(model_window, windows, longest_window)
    planned = full_grid(depths, windows, engines) if full else [
        *stage_configurations("depth", reference_config, reference_config, depths, windows, engines),
        *stage_configurations("window", reference_config, reference_config, depths, windows, engines),
        *stage_configurations("engine", reference_config, reference_config, depths, windows, engines)]
    queries = len(dataset.judged_queries())
    estimate = price(list(dict.fromkeys(planned)), queries, min(latency_queries, queries), seconds_per_pair, model_window)
    log(f"{dataset.name} ({split}): {queries} judged queries; {len(dict.fromkeys(planned))} configurations "
        f"{'(full grid)' if full else 'at most (staged: depth, then window, then engine)'}; estimated at most "
        f"{estimate / 60:.1f} min ({seconds_per_pair * 1000:.1f} ms a pair at the reference)")

    measured: dict[Configuration, Measurement] = {}
    reference: Measurement | None = None
    chosen_config = reference_config
    for stage in ("grid",) if full else STAGES:
        configurations = planned if full else stage_configurations(stage, reference_config, chosen_config, depths,
                                                                   windows, engines)
        todo = [configuration for configuration in dict.fromkeys(configurations) if configuration not in measured]
        if todo and not full:
            log(f"stage {stage}: {len(todo)} configurations, estimated at most "
                f"{price(todo, queries, min(latency_queries, queries), seconds_per_pair, model_window) / 60:.1f} min")
        for configuration in tqdm(todo, desc=f"tune: {stage}", unit="configuration", disable=not progress):
            log(f"measuring {configuration.label}")
            measured[configuration] = measurer.measure(configuration, stage)
        reference = measured[reference_config]
        for measurement in measured.values():
            judge(measurement, reference, metric, alpha, epsilon)
        chosen, _ = choose(list(measured.values()), reference, metric, None if budget_ms is None else budget_ms / 1000)
        chosen_config = chosen.configuration
    assert reference is not None
    measurements = list(measured.values())
    chosen, reason = choose(measurements, reference, metric, None if budget_ms is None else budget_ms / 1000)
    log(f"chosen: {chosen.configuration.label}: {reason}")

    calibration_result, calibration_error = None, None
    options: dict[str, Any] = {"score_cache": DEFAULT_SCORE_CACHE}  # served: repeated queries are not scored again
    if calibration:
        try:
            calibration_result = measurer.calibrate(chosen.configuration, calibration, target_precision)
        except ValueError as error:  # e.g. scores that do not rise with relevance: reported, the choice stands
            calibration_error = str(error)
            log(f"calibration not fitted: {error}" + ("; pipeline.yml returns uncalibrated scores"
                                                      if calibrated_scores else ""))
        if calibrated_scores and calibration_result is not None:
            options["score_calibration"] = calibration_result.calibration.to_dict()
    pipeline = measurer.pipeline(chosen.configuration, **options)
    chosen_from_pipeline = measurer.quality(pipeline)[0]
    machine = {"cpu": cpu_description(), "cpu_flags": sorted(cpu_flags()), "cores": os.cpu_count(),
               "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    settings = {"metric": metric, "alpha": alpha, "epsilon": epsilon, "budget_ms": budget_ms,
                "latency_queries": min(latency_queries, queries), "top_k": top_k, "fusion": fusion,
                "full_grid": full, "depths": depths, "windows": windows,
                "engines": [engine.label for engine in engines], "first_stage": first_stage,
                "ranker_options": base_options,
                "calibration": calibration, "calibration_error": calibration_error, "target_precision": target_precision,
                "calibrated_scores": calibrated_scores}
    return TuneResult(dataset=dataset.name, split=split, queries=queries, model=model, index_dir=str(index_dir),
                      measurements=measurements, reference=reference, chosen=chosen, reason=reason, settings=settings,
                      machine=machine, pipeline=pipeline, calibration=calibration_result,
                      chosen_from_pipeline=chosen_from_pipeline)


class _Measurer:
    """Builds a configuration's pipeline and measures it. Every quality run shares one score cache (its keys hold
    each configuration's model fingerprint, so only runs of the same window and engine share scores)."""

    def __init__(self, dataset: RetrievalDataset, index_dir: Path, model: str, top_k: int, fusion: str,
                 options: dict[str, Any], latency_queries: int, progress: bool) -> None:
        from rerank_pipeline.components.ranker.score_cache import ScoreCache

        self.dataset, self.index_dir, self.model = dataset, index_dir, model
        self.top_k, self.fusion, self.options, self.progress = top_k, fusion, options, progress
        self.qids = [qid for qid in dataset.judged_queries() if dataset.queries[qid].strip()]
        self.latency_texts = [dataset.queries[qid] for qid in self.qids[:latency_queries]]
        self.cache = ScoreCache(QUALITY_CACHE_ENTRIES)
        self._candidates: dict[int, list] = {}
        self._cut: dict[int, dict[tuple[str, str], int]] = {}  # window -> (query, text) -> tokens the window cut

    def pipeline(self, configuration: Configuration | None, engine: Any = None, depth: int = 1,
                 **options: Any) -> Pipeline:
        """The served pipeline of ``configuration`` (score cache off unless ``options`` say), with further ranker
        ``options``; without a configuration, ``engine`` at the model's own window and ``depth``."""
        from rerank_pipeline.pipelines import build_pipeline

        kwargs = configuration.ranker_kwargs() if configuration else {**engine.ranker_kwargs(), "max_length": None}
        depth = configuration.depth if configuration else depth
        return build_pipeline(self.index_dir, ranker_model=self.model, top_k=min(self.top_k, depth), candidates=depth,
                              ranker_options={**self.options, **kwargs, "score_cache": 0, **options},
                              fusion=self.fusion)

    def probe_reference(self, engine: Any, depth: int) -> tuple[int, int | None, float]:
        """The reference at the model's own window, loaded once: that window, the longest its positions take, and
        the seconds a pair costs, from one warm query (for the price printed before the run)."""
        pipeline = self.pipeline(None, engine, depth=depth)
        ranker = _ranker(pipeline)
        ranker.warm_up()
        seconds = self.latencies(pipeline, self.latency_texts[:1])[-1]
        return int(ranker.window), ranker.longest_window, seconds / depth

    def latencies(self, pipeline: Pipeline, texts: Sequence[str]) -> list[float]:
        """Seconds each query takes through ``pipeline`` alone, after one untimed query (warm)."""
        from rerank_pipeline.pipelines import search

        pipeline.warm_up()
        search(pipeline, texts[0])
        seconds = []
        for text in texts:
            started = time.perf_counter()
            search(pipeline, text)
            seconds.append(time.perf_counter() - started)
        return seconds

    def quality(self, pipeline: Pipeline) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(mean, per-query) full-ranking figures of ``pipeline``'s output, by the functions ``eval --pipeline``
        runs (its queries batched), with the shared score cache."""
        from rerank_pipeline.eval.end_to_end import evaluate_end_to_end, pipeline_rankings

        ranker = _ranker(pipeline)
        served_cache = ranker.score_cache
        ranker.set_score_cache(self.cache)
        try:
            final, fed_to_ranker = pipeline_rankings(pipeline, self.dataset, self.progress)
        finally:
            ranker.set_score_cache(served_cache)
        result = evaluate_end_to_end(self.dataset, fed_to_ranker, reranked_rankings=final)
        return dict(result.reranked), {qid: dict(row) for qid, row in result.per_query_reranked.items()}

    def candidates(self, depth: int) -> list[list[Any]]:
        """The first stage's documents for each judged query at ``depth`` (retrieved once a depth)."""
        if depth not in self._candidates:
            from rerank_pipeline.batch_run import run_batch
            from rerank_pipeline.first_stage import open_first_stage
            from rerank_pipeline.pipelines import output_component

            first_stage = open_first_stage(self.index_dir).pipeline(depth)
            name = output_component(first_stage)
            outputs = run_batch(first_stage, [self.dataset.queries[qid] for qid in self.qids])
            self._candidates[depth] = [output[name]["documents"] for output in outputs]
        return self._candidates[depth]

    def truncation(self, ranker: Any, depth: int) -> dict[str, Any] | None:
        """How many candidates the configuration's window cut, and by how much (None for MaxP)."""
        from rerank_pipeline.eval.experiment import truncation_of

        if ranker.long_document != "truncate":
            return None
        pairs = [(self.dataset.queries[qid], text) for qid, documents in zip(self.qids, self.candidates(depth))
                 for text in map(ranker.document_text, documents) if text is not None]
        return truncation_of(ranker, pairs, self._cut.setdefault(ranker.window, {})).to_dict()

    def measure(self, configuration: Configuration, stage: str) -> Measurement:
        """Quality (cache shared), truncation (tokenizer only), then latency (cache off) of ``configuration``."""
        pipeline = self.pipeline(configuration)
        metrics, per_query = self.quality(pipeline)
        truncation = self.truncation(_ranker(pipeline), configuration.depth)
        before = os.getloadavg()[0]
        latencies = self.latencies(pipeline, self.latency_texts)
        return Measurement(configuration, stage, metrics, per_query, latencies, load=(before, os.getloadavg()[0]),
                           details={"truncation": truncation})

    def calibrate(self, configuration: Configuration, method: str, target_precision: float):
        """Fit ``method`` (cross-validated by query) on the raw logits of every candidate pair the configuration
        reranks, relevant when judged so (:func:`~rerank_pipeline.calibration.fit_calibration`)."""
        import numpy as np

        from rerank_pipeline.calibration import fit_calibration

        ranker = _ranker(self.pipeline(configuration))
        ranker.set_score_cache(self.cache)
        texts = [self.dataset.queries[qid] for qid in self.qids]
        scored = ranker.run_batch(texts, self.candidates(configuration.depth), top_k=None, scale_score=False)
        logits, labels, groups = [], [], []
        for qid, documents in zip(self.qids, scored["documents"]):
            for document in documents:
                logits.append(document.score)
                labels.append(int(self.dataset.qrels[qid].get(document.id, 0) > 0))
                groups.append(qid)
        return fit_calibration(np.asarray(logits), np.asarray(labels), groups, method=method,
                               target_precision=target_precision)


def _ranker(pipeline: Pipeline):
    return pipeline.get_component("ranker")
