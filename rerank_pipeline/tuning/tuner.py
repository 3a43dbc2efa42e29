"""``tune``: measure the reranker's configurations on the user's judgements and choose the one to serve.

Every configuration is measured as the pipeline it would be served as (:func:`~rerank_pipeline.pipelines.
build_pipeline` over the index folder): its quality by :func:`~rerank_pipeline.eval.experiment.evaluate` on that
pipeline, exactly as ``rerank-pipeline eval --pipeline`` measures it, and its latency as single queries through it,
one at a time, warm. Pipelines of the same window and engine share one score cache while their quality is
measured, so a depth sweep scores the deepest list once; latency is always measured with the cache off.
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
    :param windows: Token windows to try below the model's own (the reference's).
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

    if not 0 < alpha < 1 or epsilon < 0:
        raise ValueError(f"alpha must be in (0, 1) and epsilon >= 0 (got {alpha}, {epsilon})")
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

    model_window = measurer.model_window(engines[0])
    reference_config = Configuration(reference_depth, model_window, engines[0])
    depths = sorted(set(depths) | {reference_depth})
    windows = windows_for(model_window, windows)
    seconds_per_pair = measurer.seconds_per_pair(reference_config)
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

    calibration_result = None
    options = {**base_options, **chosen.configuration.ranker_kwargs()}
    if calibration:
        calibration_result = measurer.calibrate(chosen.configuration, calibration, target_precision)
        if calibrated_scores:
            options["score_calibration"] = calibration_result.calibration.to_dict()
    from rerank_pipeline.pipelines import build_pipeline

    pipeline = build_pipeline(index_dir, ranker_model=model, top_k=top_k, candidates=chosen.configuration.depth,
                              ranker_options=options, fusion=fusion)
    chosen_from_pipeline = measurer.quality(pipeline, chosen.configuration)[0]
    machine = {"cpu": cpu_description(), "cpu_flags": sorted(cpu_flags()), "cores": os.cpu_count(),
               "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    settings = {"metric": metric, "alpha": alpha, "epsilon": epsilon, "budget_ms": budget_ms,
                "latency_queries": min(latency_queries, queries), "top_k": top_k, "fusion": fusion,
                "full_grid": full, "depths": depths, "windows": windows,
                "engines": [engine.label for engine in engines], "first_stage": first_stage,
                "ranker_options": base_options,
                "calibration": calibration, "target_precision": target_precision,
                "calibrated_scores": calibrated_scores}
    return TuneResult(dataset=dataset.name, split=split, queries=queries, model=model, index_dir=str(index_dir),
                      measurements=measurements, reference=reference, chosen=chosen, reason=reason, settings=settings,
                      machine=machine, pipeline=pipeline, calibration=calibration_result,
                      chosen_from_pipeline=chosen_from_pipeline)


class _Measurer:
    """Builds a configuration's pipeline and measures it; one score cache a (window, engine) for quality runs."""

    def __init__(self, dataset: RetrievalDataset, index_dir: Path, model: str, top_k: int, fusion: str,
                 options: dict[str, Any], latency_queries: int, progress: bool) -> None:
        self.dataset, self.index_dir, self.model = dataset, index_dir, model
        self.top_k, self.fusion, self.options, self.progress = top_k, fusion, options, progress
        judged = [qid for qid in dataset.judged_queries() if dataset.queries[qid].strip()]
        self.latency_texts = [dataset.queries[qid] for qid in judged[:latency_queries]]
        self.caches: dict[tuple[int, Any], Any] = {}

    def pipeline(self, configuration: Configuration | None, engine: Any = None) -> Pipeline:
        from rerank_pipeline.pipelines import build_pipeline

        kwargs = configuration.ranker_kwargs() if configuration else {**engine.ranker_kwargs(), "max_length": None}
        depth = configuration.depth if configuration else 1
        return build_pipeline(self.index_dir, ranker_model=self.model, top_k=min(self.top_k, depth),
                              candidates=depth, ranker_options={**self.options, **kwargs}, fusion=self.fusion)

    def model_window(self, engine: Any) -> int:
        """The model's own window (the reference's), read from a loaded ranker."""
        ranker = _ranker(self.pipeline(None, engine))
        ranker.warm_up()
        return int(ranker.window)

    def seconds_per_pair(self, reference: Configuration) -> float:
        """Seconds a pair costs at the reference, from one warm query (for the price printed before the run)."""
        pipeline = self.pipeline(reference)
        latencies = self.latencies(pipeline, self.latency_texts[:2])
        return latencies[-1] / reference.depth

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

    def quality(self, pipeline: Pipeline, configuration: Configuration) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(mean, per-query) full-ranking figures of ``pipeline``, as ``eval --pipeline`` measures it."""
        from rerank_pipeline.eval.experiment import evaluate

        _share_score_cache(_ranker(pipeline), self.caches, (configuration.window, configuration.engine))
        evaluation = evaluate(self.dataset, pipeline=pipeline, progress=self.progress, log=lambda line: None)
        result = evaluation.end_to_end[0]
        return dict(result.reranked), {qid: dict(row) for qid, row in result.per_query_reranked.items()}

    def measure(self, configuration: Configuration, stage: str) -> Measurement:
        pipeline = self.pipeline(configuration)
        metrics, per_query = self.quality(pipeline, configuration)
        _share_score_cache(_ranker(pipeline), None, None)
        before = os.getloadavg()[0]
        latencies = self.latencies(pipeline, self.latency_texts)
        return Measurement(configuration, stage, metrics, per_query, latencies, load=(before, os.getloadavg()[0]))

    def calibrate(self, configuration: Configuration, method: str, target_precision: float):
        """Fit ``method`` (cross-validated by query) on the raw scores of every candidate pair the configuration
        reranks, relevant when judged so (:func:`~rerank_pipeline.calibration.fit_calibration`)."""
        import numpy as np

        from rerank_pipeline.batch_run import run_batch
        from rerank_pipeline.calibration import fit_calibration
        from rerank_pipeline.first_stage import open_first_stage

        qids = [qid for qid in self.dataset.judged_queries() if self.dataset.queries[qid].strip()]
        texts = [self.dataset.queries[qid] for qid in qids]
        first_stage = open_first_stage(self.index_dir).pipeline(configuration.depth)
        from rerank_pipeline.pipelines import output_component

        candidates = [output[output_component(first_stage)]["documents"] for output in run_batch(first_stage, texts)]
        ranker = _ranker(self.pipeline(configuration))
        _share_score_cache(ranker, self.caches, (configuration.window, configuration.engine))
        scored = ranker.run_batch(texts, candidates, top_k=None, scale_score=False)["documents"]
        logits, labels, groups = [], [], []
        for qid, documents in zip(qids, scored):
            for document in documents:
                logits.append(document.score)
                labels.append(int(self.dataset.qrels[qid].get(document.id, 0) > 0))
                groups.append(qid)
        return fit_calibration(np.asarray(logits), np.asarray(labels), groups, method=method,
                               target_precision=target_precision)


def _ranker(pipeline: Pipeline):
    return pipeline.get_component("ranker")


def _share_score_cache(ranker: Any, caches: dict | None, key: Any) -> None:
    """Give ``ranker`` the score cache kept under ``key`` (made on first use), or none (``caches`` None)."""
    # TODO: wire to the ranker's score cache once merged.
    return
