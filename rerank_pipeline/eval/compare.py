"""``eval --compare RUN_DIR ...``: this run's final ranking against earlier ``eval --output`` reports, per query.

The compared ranking is the run's final one: the full ranking (reranked, or the first stage with ``--no-rerank``)
when this run and every earlier report measured it, else the R-k protocol's (same ``R{k}`` and setting). Each
earlier run's figures come from its ``per_query.csv``: its reranked rows, or its first-stage rows when it reranked
nothing. Every metric is tested with :func:`~rerank_pipeline.eval.significance.paired_test` (paired t-test and
randomization test), baseline = this run, Bonferroni over the earlier runs when there are several.

The folders are read and checked before any work (:func:`load_earlier_runs`); the collections and judged queries
as soon as this run's collections are loaded (:func:`check_same_collections`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rerank_pipeline.eval.protocol import metric_names
from rerank_pipeline.eval.reports import PER_QUERY_HEADER, _markdown, mean_test, portable_paths
from rerank_pipeline.eval.significance import DEFAULT_ALPHA, SIGNIFICANCE_NOTE, PairedTest, compare_per_query, format_delta

FULL_RANKING = "full ranking"
_PROTOCOL_PREFIX = re.compile(r"^(?P<collection>.+)_R(?P<rerank_k>\d+)$")

PerQuery = dict[str, dict[str, float]]
"""query id -> metric -> value"""
FiguresByRanking = dict[str, dict[str, PerQuery]]
"""ranking (``full ranking``, ``R100 always_rerank_positives``) -> collection -> per-query figures"""


@dataclass
class EarlierRun:
    """An earlier ``eval --output`` folder: its name, the first line of its ``COMMAND.txt``, its final rankings'
    per-query figures and, for reports with provenance, each collection's data sha256."""

    name: str
    path: Path
    command: str | None
    rankings: FiguresByRanking
    fingerprints: dict[str, str]

    @property
    def collections(self) -> set[str]:
        return {collection for by_collection in self.rankings.values() for collection in by_collection}

    def judged_queries(self, collection: str) -> set[str]:
        return {qid for by_collection in self.rankings.values() for qid in by_collection.get(collection, {})}


def load_earlier_runs(paths: Sequence[str] | str | None) -> list[EarlierRun]:
    """Read every ``--compare`` folder; a missing folder, one without ``per_query.csv`` / ``metrics.json``, a
    malformed file or a folder named twice is refused with one line."""
    paths = [paths] if isinstance(paths, str) else list(paths or [])
    resolved = [Path(path).resolve() for path in paths]
    twice = next((path for index, path in enumerate(paths) if resolved[index] in resolved[:index]), None)
    if twice is not None:
        raise ValueError(f"--compare names {twice} twice")
    names = [path.name for path in resolved]
    return [_load_run(Path(path), name if names.count(name) == 1 else str(path)) for path, name in zip(paths, names)]


def _load_run(path: Path, name: str) -> EarlierRun:
    if not path.is_dir():
        raise FileNotFoundError(f"--compare {path}: no such folder")
    for required in ("per_query.csv", "metrics.json"):
        if not (path / required).is_file():
            hint = " (a systems: run keeps one report per system, in its subfolders)" if (path / "summary.json").is_file() else ""
            raise FileNotFoundError(f"--compare {path}: no {required}, not an `eval --output` report{hint}")
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"--compare {path}: metrics.json is not JSON ({error})") from None
    provenance = metrics.get("provenance") if isinstance(metrics, dict) else None
    datasets = (provenance or {}).get("datasets") or []
    fingerprints = {d["name"]: d["sha256"] for d in datasets if isinstance(d, dict) and "name" in d and "sha256" in d}
    command_file = path / "COMMAND.txt"
    command = command_file.read_text(encoding="utf-8").splitlines()[0] if command_file.is_file() and command_file.stat().st_size else None
    return EarlierRun(name, path, command, _final_rankings(path / "per_query.csv"), fingerprints)


def _final_rankings(path: Path) -> FiguresByRanking:
    """The report's final rankings from its ``per_query.csv``: the full ranking (reranked rows, else first stage)
    and each protocol setting (reranked metrics, else the ``base_`` ones)."""
    full: dict[str, dict[str, PerQuery]] = {}  # setting -> collection -> per query
    protocol: FiguresByRanking = {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != PER_QUERY_HEADER:
            raise ValueError(f"--compare {path}: header is not {','.join(PER_QUERY_HEADER)}")
        for line, row in enumerate(reader, 2):
            try:
                section, setting, dataset, qid, metric, value = row
                value = float(value)
            except ValueError:
                raise ValueError(f"--compare {path}:{line}: expected 6 fields with a number last, got {row!r}") from None
            if section == "end_to_end":
                full.setdefault(setting, {}).setdefault(dataset, {}).setdefault(qid, {})[metric] = value
            elif section == "protocol" and (prefix := _PROTOCOL_PREFIX.match(dataset)):
                ranking = f"R{prefix['rerank_k']} {setting}"
                protocol.setdefault(ranking, {}).setdefault(prefix["collection"], {}).setdefault(qid, {})[metric] = value
    rankings: FiguresByRanking = {}
    if full:
        rankings[FULL_RANKING] = full.get("reranked") or full.get("first_stage") or {}
    for ranking, by_collection in protocol.items():
        rankings[ranking] = {collection: {qid: _reranked_or_base(row) for qid, row in per_query.items()}
                             for collection, per_query in by_collection.items()}
    return rankings


def _reranked_or_base(row: Mapping[str, float]) -> dict[str, float]:
    reranked = {metric: value for metric, value in row.items() if not metric.startswith("base_")}
    return reranked or {metric.removeprefix("base_"): value for metric, value in row.items()}


def check_same_collections(runs: Sequence[EarlierRun], datasets: Sequence) -> None:
    """Refuse (one line, before retrieval) an earlier run measured on other collections, other judged queries or,
    when its report records them, other data (corpus, queries, qrels sha256)."""
    if not runs:
        return
    from rerank_pipeline.provenance import dataset_fingerprint

    names = {dataset.name for dataset in datasets}
    fingerprints = {}
    for run in runs:
        if run.collections != names:
            raise ValueError(f"--compare {run.path}: collections differ: only in this run {sorted(names - run.collections)}, "
                             f"only in {run.name} {sorted(run.collections - names)}")
        for dataset in datasets:
            judged, theirs = set(dataset.judged_queries()), run.judged_queries(dataset.name)
            if judged != theirs:
                differ = sorted(judged ^ theirs)
                raise ValueError(
                    f"--compare {run.path}: {dataset.name}: {len(differ)} judged queries differ ({len(judged - theirs)} "
                    f"only in this run, {len(theirs - judged)} only in {run.name}), e.g. {differ[:5]}")
            if len(judged) < 2:
                raise ValueError(f"--compare {run.path}: {dataset.name}: a paired test needs at least 2 judged queries")
            if dataset.name in run.fingerprints:
                if dataset.name not in fingerprints:
                    fingerprints[dataset.name] = dataset_fingerprint(dataset)["sha256"]
                if fingerprints[dataset.name] != run.fingerprints[dataset.name]:
                    raise ValueError(
                        f"--compare {run.path}: {dataset.name}: same judged queries but other data (corpus, queries "
                        f"or qrels): sha256 {fingerprints[dataset.name][:12]} here, {run.fingerprints[dataset.name][:12]} there")


def final_rankings(protocol: Mapping, end_to_end: Sequence, reranked: bool) -> FiguresByRanking:
    """This run's final rankings, shaped as :class:`EarlierRun`'s: the full ranking (reranked, or the first stage)
    and each protocol setting (reranked, or the first-stage order), at ``per_query.csv``'s precision (6 decimals)
    so that identical rankings compare as identical."""
    as_written = lambda value: float(f"{value:.6f}")  # noqa: E731
    rankings: FiguresByRanking = {}
    if end_to_end:
        rankings[FULL_RANKING] = {
            result.name: {qid: {m: as_written(v) for m, v in row.items()} for qid, row in (
                result.per_query_reranked if result.per_query_reranked is not None else result.per_query_first_stage
            ).items()} for result in end_to_end}
    for label, suite in protocol.items():
        for result in suite.results:
            names = metric_names(result.at_k)
            rankings.setdefault(f"R{result.rerank_k} {label}", {})[result.name] = {
                qid: {name: as_written(row[name if reranked else "base_" + name]) for name in names}
                for qid, row in result.per_query.items()}
    return rankings


@dataclass
class RunComparison:
    """This run against earlier runs: per ranking, collection (and ``mean``) and run, a paired test per metric."""

    runs: list[EarlierRun]
    this_run: dict[str, dict[str, dict[str, float]]]
    """ranking -> collection -> metric -> this run's mean"""
    tests: dict[str, dict[str, dict[str, dict[str, PairedTest]]]]
    """ranking -> collection -> run name -> metric -> test of the run against this run"""
    fallback: str | None = None
    CSV_HEADER: ClassVar[list[str]] = ["ranking", "collection", "run", "metric", "value", "this_run", "delta", "t_test_p",
                                       "permutation_p", "significant", "queries", "comparisons"]

    @property
    def comparisons(self) -> int:
        return len(self.runs)

    def title(self, ranking: str) -> str:
        kind = "full ranking, ir_measures" if ranking == FULL_RANKING else f"{ranking} protocol, binary relevance"
        return (f"Compared with earlier runs ({kind}): value (change = run − this run) p=t-test/randomization"
                + (f", Bonferroni over {self.comparisons} runs" if self.comparisons > 1 else ""))

    def console(self) -> str:
        """One table per compared ranking (rows: collection × system, columns: metrics), the significance note and
        the command of each earlier run."""
        blocks = [self.fallback] if self.fallback else []
        for ranking, by_collection in self.tests.items():
            metrics = list(next(iter(self.this_run[ranking].values())))
            rows = []
            for collection, by_run in by_collection.items():
                rows.append([collection, "this run", *[f"{self.this_run[ranking][collection][m]:.4f}" for m in metrics]])
                rows += [[collection, name, *[format_delta(by_run[name][m]) for m in metrics]] for name in by_run]
            blocks += [self.title(ranking), _markdown(["Collection", "System", *metrics], rows)]
        blocks.append(SIGNIFICANCE_NOTE)
        blocks += [f"{run.name}: {portable_paths(run.command) or '(no COMMAND.txt)'}" for run in self.runs]
        return "\n".join(blocks)

    def to_dict(self) -> dict:
        """The ``comparisons`` section of ``metrics.json`` (figures rounded as in ``comparisons.csv``)."""
        return {
            "baseline": "this run", "alpha": DEFAULT_ALPHA, "bonferroni_comparisons": self.comparisons,
            "note": SIGNIFICANCE_NOTE, "fallback": self.fallback,
            "runs": {run.name: {"path": portable_paths(str(run.path)), "command": portable_paths(run.command)}
                     for run in self.runs},
            "rankings": {ranking: {collection: {
                "this_run": {m: round(v, 6) for m, v in self.this_run[ranking][collection].items()},
                "runs": {name: {m: _test_fields(test) for m, test in by_metric.items()} for name, by_metric in by_run.items()},
            } for collection, by_run in by_collection.items()} for ranking, by_collection in self.tests.items()},
        }

    def csv_rows(self) -> list[list[str]]:
        """``comparisons.csv`` rows (:attr:`CSV_HEADER`): one per ranking, collection, run and metric."""
        rows = []
        for ranking, by_collection in self.tests.items():
            for collection, by_run in by_collection.items():
                for name, by_metric in by_run.items():
                    for metric, test in by_metric.items():
                        fields = _test_fields(test)
                        rows.append([ranking, collection, name, metric, *[
                            f"{fields[key]:.6f}" if isinstance(fields[key], float) else str(fields[key]).lower()
                            for key in self.CSV_HEADER[4:]]])
        return rows


def _test_fields(test: PairedTest) -> dict:
    values = test.to_dict()
    return {"value": values["mean_b"], "this_run": values["mean_a"], "delta": values["delta"],
            "t_test_p": values["t_test_p"], "permutation_p": values["permutation_p"],
            "significant": test.significant(), "queries": test.queries, "comparisons": test.comparisons}


def compare_with_earlier_runs(runs: Sequence[EarlierRun], protocol: Mapping, end_to_end: Sequence,
                              reranked: bool) -> RunComparison | None:
    """Test this run's final ranking against each earlier run's (None without earlier runs)."""
    if not runs:
        return None
    current = final_rankings(protocol, end_to_end, reranked)
    compared, fallback = _compared_rankings(current, runs)
    this_run, tests = {}, {}
    for ranking in compared:
        this_run[ranking], tests[ranking] = {}, {}
        for collection, per_query in current[ranking].items():
            metrics = list(next(iter(per_query.values())))
            this_run[ranking][collection] = {m: sum(row[m] for row in per_query.values()) / len(per_query) for m in metrics}
            tests[ranking][collection] = {}
            for run in runs:
                theirs = run.rankings[ranking].get(collection, {})
                missing = [m for m in metrics if not theirs or any(m not in row for row in theirs.values())]
                if missing:
                    raise ValueError(f"--compare {run.path}: {collection} ({ranking}): no per-query {', '.join(missing)}")
                tests[ranking][collection][run.name] = compare_per_query(per_query, theirs, metrics, len(runs))
        collections = list(current[ranking])
        if len(collections) > 1:
            metrics = list(this_run[ranking][collections[0]])
            this_run[ranking]["mean"] = {m: sum(this_run[ranking][c][m] for c in collections) / len(collections) for m in metrics}
            tests[ranking]["mean"] = {run.name: {m: mean_test([tests[ranking][c][run.name][m] for c in collections], len(runs))
                                                 for m in metrics} for run in runs}
    return RunComparison(list(runs), this_run, tests, fallback)


def _compared_rankings(current: FiguresByRanking, runs: Sequence[EarlierRun]) -> tuple[list[str], str | None]:
    """The full ranking when every run has it, else the protocol settings they all share."""
    shared = lambda ranking: all(ranking in run.rankings for run in runs)  # noqa: E731
    if FULL_RANKING in current and shared(FULL_RANKING):
        return [FULL_RANKING], None
    protocol = [ranking for ranking in current if ranking != FULL_RANKING and shared(ranking)]
    lacking = next((run for run in runs if not all(ranking in run.rankings for ranking in current)), runs[0])
    if not protocol:
        raise ValueError(f"--compare {lacking.path}: no ranking in common with this run (this run: {', '.join(current) or 'none'}; "
                         f"{lacking.name}: {', '.join(lacking.rankings) or 'none'})")
    fallback = None
    if FULL_RANKING in current:
        fallback = f"{lacking.name} has no full-ranking figures: comparing the protocol ({', '.join(protocol)}) instead"
    return protocol, fallback
