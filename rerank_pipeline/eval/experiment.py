"""Evaluation as a Python call: :func:`evaluate` a system on collections, get an :class:`Evaluation` back.

A system is a Haystack pipeline (an object or a YAML file, e.g. from ``rerank-pipeline export``) or a first stage
plus reranker settings. :func:`evaluate` retrieves with our first stage (or the collection's published lists),
reranks with the served components (:mod:`rerank_pipeline.reranking`), and measures the R-k protocol of
sentence-transformers and the full ranking (ir_measures). ``rerank-pipeline eval`` is argument parsing and printing
over it. Usage::

    from rerank_pipeline import evaluate

    bm25 = evaluate("../shared/datasets/cranfield", first_stage="bm25", split="test")
    hybrid = evaluate("../shared/datasets/cranfield", first_stage="hybrid", embedding_model=MINILM, split="test")
    hybrid.compare(bm25)["cranfield"]["ndcg@10"].t_test_p
    hybrid.to_frame()          # per query, one row a metric
    hybrid.save("runs/hybrid")  # metrics.json, metrics.csv, per_query.csv, TREC runs, chart.png
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_pipeline.datasets import NANOBEIR_NAMES, RetrievalDataset
from rerank_pipeline.options import EVAL_FIRST_STAGES, RankerOptions

logger = logging.getLogger(__name__)

NANOBEIR_SETS = {f"Nano{name}" for name in NANOBEIR_NAMES.values()}
REPORT_MARKER = "metrics.json"
"""A folder holding it is an earlier report, which :meth:`Evaluation.save` may replace as a whole."""


@dataclass
class Evaluation:
    """What one system measured on each collection: the R-k protocol (one :class:`SuiteResult` per
    ``always_rerank_positives`` setting) and the full ranking (one :class:`EndToEndResult` a collection)."""

    name: str
    datasets: list[RetrievalDataset]
    protocol: dict[str, Any]
    end_to_end: list[Any]
    reranked: bool
    settings: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    pairs_scored: int | None = None
    pairs_reused: int | None = None

    @property
    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """collection -> ``first_stage`` / ``reranked`` / ``R{k} <setting>`` -> metric -> mean."""
        metrics: dict[str, dict[str, dict[str, float]]] = {}
        for result in self.end_to_end:
            metrics.setdefault(result.name, {})["first_stage"] = dict(result.first_stage)
            if result.reranked is not None:
                metrics[result.name]["reranked"] = dict(result.reranked)
        for label, suite in self.protocol.items():
            for result in suite.results:
                metrics.setdefault(result.name, {})[f"R{result.rerank_k} {label}"] = dict(result.metrics)
        return metrics

    def per_query(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """The final ranking's figures per query: ranking (``full ranking``, ``R100 always_rerank_positives``) ->
        collection -> query id -> metric -> value (the reranked list, or the first stage when nothing was reranked)."""
        from rerank_pipeline.eval.compare import final_rankings

        return final_rankings(self.protocol, self.end_to_end, self.reranked)

    def compare(self, other: Evaluation, comparisons: int = 1) -> dict[str, dict[str, Any]]:
        """collection -> metric -> :class:`~rerank_pipeline.eval.significance.PairedTest` of ``other`` (the
        baseline) against this one's final ranking: paired t-test and randomization test over the judged queries,
        Bonferroni over ``comparisons``. The full ranking is compared when both measured it, else the first R-k
        setting both ran.

        :raises ValueError: the two share no ranking, or their judged queries differ.
        """
        from rerank_pipeline.eval.significance import compare_per_query

        mine, theirs = self.per_query(), other.per_query()
        shared = [ranking for ranking in mine if ranking in theirs]
        if not shared:
            raise ValueError(f"{self.name} and {other.name} measured no ranking in common ({sorted(mine)} vs {sorted(theirs)})")
        ranking = shared[0]
        return {collection: compare_per_query(theirs[ranking][collection], per_query, comparisons=comparisons)
                for collection, per_query in mine[ranking].items() if collection in theirs[ranking]}

    def to_frame(self):
        """A pandas ``DataFrame`` of every per-query figure: ``section``, ``setting``, ``dataset``, ``query_id``,
        ``metric``, ``value`` (the rows of ``per_query.csv``)."""
        import pandas as pd

        from rerank_pipeline.eval.reports import PER_QUERY_HEADER, per_query_rows

        rows = per_query_rows(self.protocol, self.end_to_end, self.reranked)
        return pd.DataFrame(rows, columns=PER_QUERY_HEADER).astype({"value": float})

    def save(self, folder: str | Path, overwrite: bool = False, comparison=None) -> list[Path]:
        """Write the report (``metrics.json``, ``metrics.csv``, ``per_query.csv``, TREC runs, ``chart.png``,
        ``COMMAND.txt`` when there is a command) into ``folder`` as a whole: a new or empty folder, or an earlier
        report (any folder with ``overwrite``), replaced only once everything is written.

        :raises FileExistsError: ``folder`` holds other files and ``overwrite`` is off.
        """
        from rerank_pipeline.components.index_folder import atomic_directory
        from rerank_pipeline.eval.reports import write_report
        from rerank_pipeline.output_paths import check_replaceable_folder

        check_replaceable_folder(folder, REPORT_MARKER, "output folder", overwrite, "overwrite=True")
        with atomic_directory(folder, None if overwrite else REPORT_MARKER, "output folder") as staging:
            return [Path(folder) / path.name for path in write_report(
                staging, self.protocol, self.end_to_end, command=self.command, settings=self.settings,
                reranked=self.reranked, provenance=self.provenance, comparison=comparison)]


def load_collection(source: RetrievalDataset | str | Path, split: str = "test", **options: Any) -> RetrievalDataset:
    """A collection from a :class:`RetrievalDataset` (returned as is), a BEIR folder, a NanoBEIR short name
    (``msmarco``, ``nfcorpus``, ...) or a Hugging Face dataset id in BEIR schema. ``options`` go to the loader
    (:func:`~rerank_pipeline.datasets.load_beir`, ``load_nanobeir`` or ``load_hf_beir``)."""
    from rerank_pipeline.datasets import load_beir, load_hf_beir, load_nanobeir

    if isinstance(source, RetrievalDataset):
        return source
    if Path(source).expanduser().is_dir():  # a local folder is a BEIR folder: one missing a file says which
        return load_beir(Path(source).expanduser(), split=split, **options)
    if str(source).lower().removeprefix("nano") in NANOBEIR_NAMES:
        return load_nanobeir(str(source), **options)
    return load_hf_beir(str(source), split=split, **options)


def limit_queries(dataset: RetrievalDataset, max_queries: int | None) -> RetrievalDataset:
    """``dataset`` cut to its first ``max_queries`` judged queries (in place; None keeps all)."""
    if not max_queries:
        return dataset
    keep = list(dataset.judged_queries())[:max_queries]
    dataset.qrels = {qid: dataset.qrels[qid] for qid in keep}
    dataset.queries = {qid: dataset.queries[qid] for qid in keep}
    if dataset.rankings is not None:
        dataset.rankings = {qid: dataset.rankings[qid] for qid in keep if qid in dataset.rankings}
    return dataset


def _depth(rankings) -> int:
    """The longest list of ``rankings``: how many candidates a pipeline's first stage fed its ranker."""
    return max((len(ranking) for ranking in rankings.values()), default=0)


def truncating_ranker(scorer=None, pipeline=None):
    """The ``CrossEncoderRanker`` behind ``scorer`` (a :class:`~rerank_pipeline.eval.scorers.CachedScorer`), or the
    first one of ``pipeline``, when it truncates long documents (``long_document="truncate"``), else None: whose
    cuts :func:`evaluate` reports."""
    from rerank_pipeline.components import CrossEncoderRanker
    from rerank_pipeline.eval.scorers import CachedScorer

    if pipeline is not None:
        rankers = [component for _, component in pipeline.walk() if isinstance(component, CrossEncoderRanker)]
        ranker = rankers[0] if rankers else None
    else:
        ranker = scorer.scorer if isinstance(scorer, CachedScorer) else None
    return ranker if isinstance(ranker, CrossEncoderRanker) and ranker.long_document == "truncate" else None


def _pipeline_pairs(ranker, dataset: RetrievalDataset, rankings) -> list[tuple[str, str]]:
    """The (query, document text) pairs a pipeline's ``ranker`` scored: each query with the documents its first
    stage fed it, as the ranker reads them (the collection's text and title)."""
    from haystack import Document

    from rerank_pipeline.rankings import ranked_ids

    texts = (ranker.document_text(Document(id=doc_id, content=dataset.document_text(doc_id),
                                           meta={"title": dataset.corpus[doc_id].get("title", "")}))
             for qid, ranking in rankings.items() for doc_id in ranked_ids(ranking))
    queries = (dataset.queries[qid] for qid, ranking in rankings.items() for _ in ranking)
    return [(query, text) for query, text in zip(queries, texts) if text is not None]


def truncation_of(ranker, pairs: Sequence[tuple[str, str]], known: dict[tuple[str, str], int] | None = None):
    """:class:`~rerank_pipeline.eval.end_to_end.Truncation` of the (query, document) ``pairs`` ``ranker`` scored
    (each distinct pair tokenized once; no model run). ``known``: counts already taken at this ranker's window,
    reused and added to (e.g. the shallower depths of one candidate list)."""
    from rerank_pipeline.eval.end_to_end import Truncation

    counts = {} if known is None else known
    missing = [pair for pair in dict.fromkeys(pairs) if pair not in counts]
    counts.update(zip(missing, ranker.truncated_tokens(missing)))
    return Truncation.from_counts([counts[pair] for pair in pairs], ranker.window)


def evaluate(
    datasets: RetrievalDataset | str | Path | Sequence[RetrievalDataset | str | Path],
    pipeline=None,
    *,
    first_stage: str | None = None,
    model: str | None = None,
    reranker: str = "cross-encoder",
    ranker_options: Mapping[str, Any] | None = None,
    fusion: str = "model",
    candidates: int | None = None,
    rerank_k: int = 100,
    at_k: int = 10,
    always_rerank_positives: bool | Sequence[bool] = True,
    end_to_end: bool | None = None,
    embedding_model: str | None = None,
    index_dir: str | Path | None = None,
    first_stage_options: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: str | None = None,
    split: str = "test",
    max_queries: int | None = None,
    progress: bool = False,
    name: str = "system",
    timer=None,
    log: Callable[[str], None] = logger.info,
) -> Evaluation:
    """Evaluate one system on one or more collections (see :func:`load_collection` for what ``datasets`` takes).

    :param pipeline: A Haystack ``Pipeline`` or a YAML file of one (query in, documents out): its output is
        measured, and its first stage's when it holds a ``CrossEncoderRanker`` (whose score cache is off meanwhile:
        every pair is scored). Without it, the system is
        ``first_stage`` (:data:`EVAL_FIRST_STAGES`; default ``published`` for a collection that publishes lists, else
        ``bm25``) + ``model`` scored as ``reranker`` (``cross-encoder``, ``bi-encoder``, ``identity``; no
        ``model``: the first stage alone) with ``ranker_options`` (``CrossEncoderRanker`` keywords) and the
        ``fusion`` a served pipeline puts after it (``model``: the model folder's ``fusion.json``; ``none``; ``rrf``).
    :param candidates: First-stage depth (default ``max(100, rerank_k)``); ``rerank_k`` of them are reranked.
    :param always_rerank_positives: The R-k protocol's setting, or several (each runs).
    :param end_to_end: Full-ranking metrics; default: on unless the candidates are published lists.
    :param index_dir: Keep (or reuse) the first-stage index here (one subfolder a collection when several).
    :param log: Where progress lines go (``rerank-pipeline eval`` prints them).
    :returns: An :class:`Evaluation`; the pairs the protocol and the full ranking share are scored once. For a
        cross-encoder with ``long_document="truncate"`` each full ranking also says how many of the candidates it
        reranked the window cut, and by how many tokens (``EndToEndResult.truncation``; a tokenizer pass).
    :raises ValueError: an unknown choice, a collection without what the system needs.
    """
    from rerank_pipeline.components.score_fusion import resolve_fusion
    from rerank_pipeline.eval.end_to_end import evaluate_end_to_end, pipeline_rankings, retrieve_rankings
    from rerank_pipeline.eval.protocol import rerank_protocol_suite
    from rerank_pipeline.eval.scorers import CachedScorer, IdentityScorer, load_scorer
    from rerank_pipeline.eval.significance import FEWER_THAN_TWO, MIN_QUERIES
    from rerank_pipeline.pipelines import score_caches_off
    from rerank_pipeline.provenance import PhaseTimer, collect

    timer = timer or PhaseTimer()
    if rerank_k < 1 or at_k < 1:
        raise ValueError("rerank_k and at_k must be >= 1")
    if first_stage is not None and first_stage not in EVAL_FIRST_STAGES:
        raise ValueError(f"unknown first stage {first_stage!r}; choose one of {', '.join(EVAL_FIRST_STAGES)}")
    settings_for_positives = [always_rerank_positives] if isinstance(always_rerank_positives, bool) else list(always_rerank_positives)
    reranked = bool(model) and reranker != "identity"
    fusion_choice = None if pipeline is not None else resolve_fusion(model if reranked else None, fusion)
    if isinstance(pipeline, (str, Path)):  # a refused or broken YAML stops here, one line naming the file
        from rerank_pipeline.pipelines import load_pipeline_file

        label = f"pipeline {pipeline}"
        with timer.phase("load model"):
            pipeline = load_pipeline_file(pipeline)
    else:
        label = "pipeline" if pipeline is not None else None
    with timer.phase("load"):
        datasets = [datasets] if isinstance(datasets, (RetrievalDataset, str, Path)) else list(datasets)
        datasets = [limit_queries(load_collection(dataset, split=split), max_queries) for dataset in datasets]
    nanobeir = all(dataset.name in NANOBEIR_SETS for dataset in datasets)  # the model cards' NanoBEIR_R100_mean_*
    first_stage = label or first_stage or ("published" if all(d.rankings is not None for d in datasets) else "bm25")
    candidates = candidates or max(100, rerank_k)

    rankings, pipeline_output, kept_indexes = {}, {}, []
    try:
        if pipeline is not None:
            with timer.phase("load model"):
                pipeline.warm_up()
        for dataset in datasets:
            if pipeline is not None:
                log(f"{dataset.name}: running {first_stage} on {len(dataset.judged_queries())} queries ...")
                with timer.phase("pipeline (retrieve + score)"), score_caches_off(pipeline):  # measure the engine
                    final, fed_to_ranker = pipeline_rankings(pipeline, dataset, progress)
                rankings[dataset.name] = fed_to_ranker or final
                pipeline_output[dataset.name] = final if fed_to_ranker else None
                reranked = fed_to_ranker is not None
            elif first_stage == "published":
                if dataset.rankings is None:
                    raise ValueError(f"{dataset.name} publishes no first-stage ranking; choose --first-stage "
                                     "bm25|dense|hybrid|elasticsearch")
                rankings[dataset.name] = dataset.rankings
            else:
                folder = str(index_dir) if index_dir and len(datasets) == 1 else str(Path(index_dir) / dataset.name) if index_dir else None
                log(f"{dataset.name}: indexing {len(dataset.corpus)} documents and retrieving top {candidates} with {first_stage} ...")
                with timer.phase("index + retrieve"):
                    rankings[dataset.name] = retrieve_rankings(
                        dataset, first_stage, top_k=candidates, index_dir=folder, embedding_model=embedding_model,
                        **dict(first_stage_options or {}))
                if folder:
                    kept_indexes.append(folder)
        options = dict(ranker_options or {}) if reranker == "cross-encoder" else {}
        if pipeline is not None:
            scorer, reranker_label = None, "the pipeline's own" if reranked else "none (the pipeline has no CrossEncoderRanker)"
        elif not reranked:
            scorer, reranker_label = IdentityScorer(), "none (first-stage order)"
        else:
            with timer.phase("load model"):  # the protocol and the full ranking score a pair once
                scorer = CachedScorer(load_scorer(reranker, model, batch_size=batch_size, device=device, **options))
            reranker_label = f"{reranker} {model}" + (f" ({RankerOptions.from_kwargs(options).describe()})" if options else "")
        log(f"reranker: {reranker_label}; candidates: {first_stage}; rerank_k={rerank_k}")
        if fusion_choice:
            log(f"{fusion_choice.summary()} (end to end; the R{rerank_k} protocol measures the reranker alone)")
        too_few = [dataset.name for dataset in datasets if len(dataset.judged_queries()) < MIN_QUERIES]
        if reranked and too_few:  # said once; the report's paired tests say "not_run" and the tables p=n/a
            log(f"paired tests: not run for {', '.join(too_few)} ({FEWER_THAN_TWO}); the tables show p=n/a")

        protocol = {}
        if pipeline is not None:
            log("R-k protocol: not run for --pipeline (it scores pairs outside the pipeline); full ranking only")
        for always in settings_for_positives if pipeline is None else ():
            setting = "always_rerank_positives" if always else "retrieved_positives_only"
            with timer.phase("protocol (score + metrics)"):
                protocol[setting] = rerank_protocol_suite(
                    [(dataset, rankings[dataset.name]) for dataset in datasets], scorer,
                    suite_name="NanoBEIR" if nanobeir else "mean", rerank_k=rerank_k, at_k=at_k,
                    always_rerank_positives=always, batch_size=batch_size, show_progress_bar=progress,
                    with_aggregate=nanobeir or len(datasets) > 1)
        full = []
        window_of = (truncating_ranker(pipeline=pipeline) if pipeline is not None else truncating_ranker(scorer)
                     ) if reranked else None
        if end_to_end or (end_to_end is None and first_stage != "published"):
            for dataset in datasets:
                with timer.phase("full ranking (score + metrics)"), \
                        (scorer.recording() if window_of is not None and pipeline is None else nullcontext()) as asked:
                    full.append(evaluate_end_to_end(
                        dataset, rankings[dataset.name], scorer if reranked else None,
                        rerank_k=_depth(rankings[dataset.name]) if pipeline_output.get(dataset.name) else rerank_k,
                        reranked_rankings=pipeline_output.get(dataset.name), fusion=fusion_choice,
                        batch_size=batch_size, show_progress_bar=progress))
                if window_of is not None:
                    with timer.phase("truncation count (tokenizer only)"):
                        pairs = asked if pipeline is None else _pipeline_pairs(window_of, dataset, rankings[dataset.name])
                        full[-1].truncation = truncation_of(window_of, pairs)
    except KeyboardInterrupt:
        if not kept_indexes:
            raise
        raise KeyboardInterrupt(f"kept the first-stage index in {', '.join(kept_indexes)}; no report written") from None

    settings = {
        "datasets": [dataset.name for dataset in datasets], "first_stage": first_stage, "top_k": candidates,
        "reranker": reranker_label, "rerank_k": rerank_k, "at_k": at_k,
        "fusion": fusion_choice.method if fusion_choice else "the pipeline's own",
        "fusion_weight": fusion_choice.weight if fusion_choice else None, "embedding_model": embedding_model,
    }
    provenance = collect(models={"reranker": model if reranked else None, "embedding": embedding_model},
                         datasets=datasets, device=device, timings=timer.timings())
    cached = scorer if isinstance(scorer, CachedScorer) else None
    return Evaluation(name=name, datasets=datasets, protocol=protocol, end_to_end=full, reranked=reranked,
                      settings=settings, provenance=provenance,
                      pairs_scored=cached.scored if cached else None, pairs_reused=cached.reused if cached else None)
