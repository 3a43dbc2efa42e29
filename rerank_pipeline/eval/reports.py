"""Reports: model-card shaped console tables, JSON/CSV files written atomically, TREC runs, a PNG chart."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from rerank_pipeline import atomic
from rerank_pipeline.eval.end_to_end import EndToEndResult
from rerank_pipeline.eval.protocol import ProtocolResult, SuiteResult, metric_names
from rerank_pipeline.eval.significance import PairedTest, format_delta, paired_test


PER_QUERY_HEADER = ["section", "setting", "dataset", "query_id", "metric", "value"]
"""Columns of ``per_query.csv``."""
_SITE_PACKAGES = re.compile(r"(?<![\w.~<-])/[^\s'\"]*?/(?:site|dist)-packages/")


def portable_paths(value):
    """``value`` (a string, or a dict/list of them) without machine paths, so a committed report is the same on any
    machine: ``.../site-packages/`` becomes ``<site-packages>/``, the working directory is dropped (paths become
    relative) and the home folder becomes ``~``."""
    if isinstance(value, Mapping):
        return {key: portable_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_paths(item) for item in value)
    if not isinstance(value, str):
        return value
    value = _SITE_PACKAGES.sub("<site-packages>/", value)
    value = value.replace(f"{Path.cwd()}{os.sep}", "")
    home = str(Path.home())
    return re.sub(rf"(?<![\w/]){re.escape(home)}(?=/|\b)", "~", value) if home not in ("/", "") else value


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, newlines as given (:func:`rerank_pipeline.atomic.write_text_atomic`)."""
    return atomic.write_text_atomic(path, text, newline="")


def write_json(path: str | Path, payload) -> Path:
    """Atomically write ``payload`` as indented JSON."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """Atomically write a CSV with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def write_trec_run(path: str | Path, ranked: Mapping[str, Sequence], tag: str) -> Path:
    """Atomically write a TREC run (``qid Q0 docid rank score tag``); score is ``depth - rank`` (1-based ranks)
    so that every tool reads exactly this order."""
    lines = []
    for qid, ranking in ranked.items():
        doc_ids = list(dict.fromkeys(item[0] if isinstance(item, (tuple, list)) else item for item in ranking))
        lines.extend(f"{qid} Q0 {doc_id} {rank} {len(doc_ids) - rank + 1} {tag}" for rank, doc_id in enumerate(doc_ids, 1))
    return write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


# --- console tables -------------------------------------------------------------------------------------------


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _as_suite(results: SuiteResult | Sequence[ProtocolResult] | ProtocolResult) -> SuiteResult:
    if isinstance(results, ProtocolResult):
        return SuiteResult([results], with_aggregate=False)
    if not isinstance(results, SuiteResult):
        return SuiteResult(list(results), with_aggregate=len(results) > 1)
    return results


def mean_test(tests: Sequence[PairedTest], comparisons: int = 1) -> PairedTest | None:
    """The mean row's test: paired over the collections' means (None for fewer than 2 collections)."""
    if len(tests) < 2:
        return None
    return paired_test([test.mean_a for test in tests], [test.mean_b for test in tests], comparisons)


def protocol_tests(suite: SuiteResult, comparisons: int = 1) -> dict[str, dict[str, PairedTest]]:
    """column (dataset prefix, and the mean) -> metric -> paired test of reranked against the first-stage order.
    Per dataset the test runs over its queries; the mean's over the datasets."""
    tests = {result.prefix: result.paired_tests(comparisons) for result in suite.results}
    if suite.with_aggregate and len(suite.results) > 1:
        tests[suite.prefix] = {metric: mean_test([tests[r.prefix][metric] for r in suite.results], comparisons)
                               for metric in metric_names(suite.results[0].at_k)}
    return tests


def protocol_table(results: SuiteResult | Sequence[ProtocolResult] | ProtocolResult, reranked: bool = True,
                   comparisons: int = 1) -> str:
    """The model-card table: one column per dataset (and the mean), cells ``0.5676 (+0.1123) p=0.001/0.000*``
    (the model-card cell, then the paired tests of reranked against the first-stage order). With
    ``reranked=False`` (nothing was reranked) the cells are the first-stage order's values alone."""
    results = _as_suite(results)
    at_k = results.results[0].at_k
    names = metric_names(at_k)
    if not reranked:
        columns = [(result.prefix, {m: f"{result.metrics['base_' + m]:.4f}" for m in names}) for result in results.results]
        if results.with_aggregate:
            columns.append((results.prefix, {m: f"{results.aggregate['base_' + m]:.4f}" for m in names}))
    else:
        tests = protocol_tests(results, comparisons)
        columns = [(result.prefix, {m: format_delta(tests[result.prefix][m]) for m in names}) for result in results.results]
        if results.with_aggregate:
            card = results.model_card()
            mean = tests.get(results.prefix)
            columns.append((results.prefix, {m: format_delta(mean[m]) if mean else card[m] for m in names}))
    header = ["Metric", *[name for name, _ in columns]]
    rows = [[metric, *[cells[metric] for _, cells in columns]] for metric in names]
    return _markdown(header, rows)


def base_reranked_lines(metrics: Mapping[str, float], at_k: int = 10) -> str:
    """``MAP: 48.96 -> 60.35`` lines as sentence-transformers logs them (percent)."""
    lines = [f"{' ' * len(str(at_k))}       Base  -> Reranked"]
    for name, label in zip(metric_names(at_k), ["MAP:" + " " * len(str(at_k)) + " ", f"MRR@{at_k}:", f"NDCG@{at_k}:"]):
        lines.append(f"{label:<9}{metrics['base_' + name] * 100:.2f} -> {metrics[name] * 100:.2f}")
    return "\n".join(lines)


def end_to_end_tests(results: Sequence[EndToEndResult], comparisons: int = 1) -> dict[str, dict[str, PairedTest]]:
    """dataset (and ``mean`` for several) -> metric -> paired test of reranked against the first stage."""
    tests = {result.name: result.paired_tests(comparisons) for result in results if result.reranked is not None}
    if len(tests) > 1 and len(tests) == len(results):
        names = list(results[0].first_stage)
        tests["mean"] = {n: mean_test([tests[r.name][n] for r in results], comparisons) for n in names}
    return tests


def end_to_end_table(results: Sequence[EndToEndResult], comparisons: int = 1) -> str:
    """Rows: first stage and reranked per dataset (and their mean over datasets); columns: nDCG@10, MRR@10,
    Recall@100, MAP; reranked cells carry the change and the paired tests against the first stage."""
    names = list(results[0].first_stage)
    tests = end_to_end_tests(results, comparisons)
    rows = []
    for result in results:
        rows.append([result.name, "first stage", *[f"{result.first_stage[n]:.4f}" for n in names]])
        if result.reranked is not None:
            label = f"reranked top {result.rerank_k}" + (f" ({result.fusion_label})" if result.fusion else "")
            rows.append([result.name, label, *[format_delta(tests[result.name][n]) for n in names]])
    if len(results) > 1:
        rows.append(["mean", "first stage", *[f"{sum(r.first_stage[n] for r in results) / len(results):.4f}" for n in names]])
        if "mean" in tests:
            rows.append(["mean", "reranked", *[format_delta(tests["mean"][n]) for n in names]])
    return _markdown(["Dataset", "Ranking", *names], rows)


# --- chart ----------------------------------------------------------------------------------------------------


def plot_base_vs_reranked(
    path: str | Path, groups: Sequence[tuple[str, float, float | None]], metric: str, title: str
) -> Path:
    """Bar chart of (label, base, reranked) per group, written atomically as PNG; groups whose reranked value is
    None (nothing reranked) get the first-stage bar alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _, _ in groups]
    reranked = any(g[2] is not None for g in groups)
    width = 0.38 if reranked else 0.6
    figure, axis = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 2), 4))
    positions = range(len(groups))
    offset = width / 2 if reranked else 0.0
    base_bars = axis.bar([p - offset for p in positions], [g[1] for g in groups], width, label="Base (first stage)")
    axis.bar_label(base_bars, fmt="%.3f", fontsize=8)
    if reranked:
        reranked_bars = axis.bar([p + offset for p in positions], [g[2] or 0.0 for g in groups], width, label="Reranked")
        axis.bar_label(reranked_bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(list(positions), labels, rotation=15, ha="right", fontsize=8)
    axis.set_ylabel(metric)
    axis.set_ylim(0, min(1.05, max([g[2] or 0.0 for g in groups] + [g[1] for g in groups]) * 1.25 + 0.02))
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return atomic.save_figure(figure, path)


# --- whole report ---------------------------------------------------------------------------------------------


def _tests_payload(tests: Mapping[str, Mapping[str, PairedTest | None]]) -> dict:
    return {name: {metric: test.to_dict() for metric, test in by_metric.items() if test is not None}
            for name, by_metric in tests.items()}


def _measured(metrics: Mapping[str, float], reranked: bool) -> dict[str, float]:
    """All keys, or only the first-stage (``base``) ones when nothing was reranked."""
    return dict(metrics) if reranked else {key: value for key, value in metrics.items() if "base_" in key}


def protocol_payload(suite: SuiteResult, reranked: bool = True, comparisons: int = 1) -> dict:
    """JSON-ready summary of a protocol run: flat keys, model-card strings, paired tests, stats and timings."""
    payload = {
        "protocol": f"R{suite.results[0].rerank_k} reranking protocol (sentence-transformers CrossEncoderRerankingEvaluator), "
                    "binary relevance",
        "metrics": _measured(suite.flat(), reranked),
        "settings": {
            "rerank_k": suite.results[0].rerank_k, "at_k": suite.results[0].at_k,
            "always_rerank_positives": suite.results[0].always_rerank_positives, "reranked": reranked,
        },
        "stats": {result.prefix: result.stats for result in suite.results},
        "timings": {result.prefix: result.timings for result in suite.results},
    }
    if reranked:
        payload["model_card"] = {
            **{result.prefix: result.model_card() for result in suite.results},
            **({suite.prefix: suite.model_card()} if suite.with_aggregate else {}),
        }
        payload["paired_tests"] = _tests_payload(protocol_tests(suite, comparisons))
    return payload


def end_to_end_payload(results: Sequence[EndToEndResult], comparisons: int = 1) -> dict:
    tests = _tests_payload(end_to_end_tests(results, comparisons))
    payload = {
        result.name: {
            "ranking": "full ranking (ir_measures)", "relevance": result.relevance,
            "rerank_k": result.rerank_k, "fusion": result.fusion, "fusion_weight": result.fusion_weight,
            "first_stage": result.first_stage, "reranked": result.reranked,
            "paired_tests": tests.get(result.name), "timings": result.timings,
            **({"truncation": result.truncation.to_dict()} if result.truncation is not None else {}),
        }
        for result in results
    }
    if "mean" in tests:
        payload["mean"] = {
            "first_stage": {n: sum(r.first_stage[n] for r in results) / len(results) for n in results[0].first_stage},
            "reranked": {n: sum(r.reranked[n] for r in results) / len(results) for n in results[0].first_stage},
            "paired_tests": tests["mean"],
        }
    return payload


def _csv_p(value: float | None, test: PairedTest) -> str:
    """A test's figure for a CSV cell; ``not run: REASON`` in place of the p-values of a test not run."""
    return f"not run: {test.not_run}" if value is None else f"{value:.6f}"


def _significance_rows(section: str, setting: str, tests: Mapping[str, Mapping[str, PairedTest | None]]) -> list[list[str]]:
    rows = []
    for name, by_metric in tests.items():
        for metric, test in by_metric.items():
            if test is not None:
                rows += [[section, setting, name, f"{metric}:{field}", _csv_p(value, test)]
                         for field, value in (("delta", test.delta), ("t_test_p", test.t_test_p),
                                              ("permutation_p", test.permutation_p))]
    return rows


def per_query_rows(protocol: Mapping[str, SuiteResult], end_to_end: Sequence[EndToEndResult], reranked: bool = True) -> list[list]:
    """The rows of ``per_query.csv`` (:data:`PER_QUERY_HEADER`), values as floats."""
    rows: list[list] = []
    for label, suite in protocol.items():
        for result in suite.results:
            for qid, values in result.per_query.items():
                rows.extend(["protocol", label, result.prefix, qid, key, v] for key, v in _measured(values, reranked).items())
    for result in end_to_end:
        for ranking, per_query in (("first_stage", result.per_query_first_stage), ("reranked", result.per_query_reranked)):
            for qid, row in (per_query or {}).items():
                rows.extend(["end_to_end", ranking, result.name, qid, key, v] for key, v in row.items())
    return rows


def write_report(
    output_dir: str | Path,
    protocol: Mapping[str, SuiteResult] | None = None,
    end_to_end: Sequence[EndToEndResult] | None = None,
    command: str | None = None,
    settings: Mapping | None = None,
    tag: str = "rerank-pipeline",
    reranked: bool = True,
    provenance: Mapping | None = None,
    comparison=None,
) -> list[Path]:
    """Write ``metrics.json``, ``metrics.csv``, ``per_query.csv``, TREC runs, ``chart.png`` and ``COMMAND.txt``
    (and ``comparisons.csv`` with a ``comparison``).

    ``protocol`` maps a label (e.g. ``"always_rerank_positives"``) to a :class:`SuiteResult`. With
    ``reranked=False`` (``--no-rerank``) only the first stage's figures are written. ``provenance`` (see
    :mod:`rerank_pipeline.provenance`) goes into ``metrics.json`` and, flattened, into ``metrics.csv``. A
    :class:`~rerank_pipeline.eval.compare.RunComparison` (``--compare``) goes into ``metrics.json``'s
    ``comparisons`` and ``comparisons.csv``.
    """
    output_dir = Path(output_dir)
    written: list[Path] = []
    protocol = dict(protocol or {})
    end_to_end = list(end_to_end or [])
    payload = {"settings": portable_paths(dict(settings or {}))}
    command = portable_paths(command)
    if command:
        payload["command"] = command
    payload["protocol"] = {label: protocol_payload(suite, reranked) for label, suite in protocol.items()}
    if end_to_end:
        payload["end_to_end"] = end_to_end_payload(end_to_end)
    if comparison is not None:
        payload["comparisons"] = comparison.to_dict()
    if provenance is not None:
        payload["provenance"] = dict(provenance)
    written.append(write_json(output_dir / "metrics.json", payload))

    rows = []
    for label, suite in protocol.items():
        for result in suite.results:
            for key, value in _measured(result.metrics, reranked).items():
                rows.append(["protocol", label, result.prefix, key, f"{value:.6f}"])
        if suite.with_aggregate:
            rows.extend(["protocol", label, suite.prefix, key, f"{value:.6f}"]
                        for key, value in _measured(suite.aggregate, reranked).items())
        if reranked:
            rows += _significance_rows("significance", f"protocol {label}", protocol_tests(suite))
    for result in end_to_end:
        for ranking, values in (("first_stage", result.first_stage), ("reranked", result.reranked)):
            if values is None:
                continue
            rows.extend(["end_to_end", ranking, result.name, key, f"{value:.6f}"] for key, value in values.items())
    rows += _significance_rows("significance", "end_to_end", end_to_end_tests(end_to_end))
    if provenance is not None:
        rows += [["provenance", "", "", key, value] for key, value in flatten(provenance).items()]
    written.append(write_csv(output_dir / "metrics.csv", ["section", "setting", "dataset", "metric", "value"], rows))
    written.append(write_csv(output_dir / "per_query.csv", PER_QUERY_HEADER, [
        [*row[:-1], f"{row[-1]:.6f}"] for row in per_query_rows(protocol, end_to_end, reranked)]))
    if comparison is not None:
        written.append(write_csv(output_dir / "comparisons.csv", comparison.CSV_HEADER, comparison.csv_rows()))

    if reranked:
        for label, suite in protocol.items():
            for result in suite.results:
                written.append(write_trec_run(output_dir / f"{result.prefix}_{label}_reranked.trec", result.reranked, f"{tag}-{label}"))
    for result in end_to_end:
        written.append(write_trec_run(output_dir / f"{result.name}_first_stage.trec", result.first_stage_run, f"{tag}-first-stage"))
        if result.reranked_run is not None:
            written.append(write_trec_run(output_dir / f"{result.name}_reranked.trec", result.reranked_run, f"{tag}-reranked"))

    groups, metric = [], None
    for label, suite in protocol.items():
        metric = f"ndcg@{suite.results[0].at_k}"
        for result in suite.results:
            groups.append((f"{result.prefix}\n{label}", result.metrics["base_" + metric],
                           result.metrics[metric] if reranked else None))
    for result in end_to_end:
        if result.reranked is not None or not protocol:
            groups.append((f"{result.name}\nfull ranking", result.first_stage["ndcg@10"],
                           result.reranked["ndcg@10"] if result.reranked is not None else None))
            metric = metric or "ndcg@10"
    if groups:
        title = "nDCG@10: first stage (base) vs reranked" if reranked else "nDCG@10 of the first stage (nothing reranked)"
        written.append(plot_base_vs_reranked(output_dir / "chart.png", groups, metric or "ndcg@10", title))
    if command:
        written.append(write_text_atomic(output_dir / "COMMAND.txt", command + "\n"))
    return written


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists joined by ``;``), for the CSV's provenance rows."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{index}.") if isinstance(item, Mapping) else {f"{name}.{index}": str(item)})
        else:
            flat[name] = "" if value is None else str(value)
    return flat


# --- several systems ------------------------------------------------------------------------------------------


def summary_cells(runs: Sequence) -> tuple[str, list[str], dict[str, dict[str, dict]]]:
    """(what is compared, collection names + ``mean``, system -> collection -> {first_stage, reranked, test}).

    Runs are :class:`~rerank_pipeline.eval.experiment.Evaluation` results (``name``, ``end_to_end``, ``protocol``,
    ``reranked``). The full ranking's
    nDCG@10 is used when measured, else the R-k protocol's (always_rerank_positives first). Tests are Bonferroni-
    corrected over the systems when there are several; the mean's test runs over the collections.
    """
    comparisons = len(runs)
    full = all(run.end_to_end for run in runs)
    cells: dict[str, dict[str, dict]] = {}
    collections: list[str] = []
    for run in runs:
        by_collection = {}
        if full:
            title = "full ranking nDCG@10 (ir_measures)"
            for result in run.end_to_end:
                test = result.paired_tests(comparisons).get("ndcg@10") if run.reranked else None
                by_collection[result.name] = {"first_stage": result.first_stage["ndcg@10"],
                                              "reranked": result.reranked["ndcg@10"] if run.reranked else None, "test": test}
        else:
            label, suite = next(iter(run.protocol.items()))
            metric = f"ndcg@{suite.results[0].at_k}"
            title = f"R{suite.results[0].rerank_k} protocol {metric} ({label}, binary relevance)"
            for result in suite.results:
                test = result.paired_tests(comparisons)[metric] if run.reranked else None
                by_collection[result.name] = {"first_stage": result.metrics["base_" + metric],
                                              "reranked": result.metrics[metric] if run.reranked else None, "test": test}
        names = list(by_collection)
        collections += [name for name in names if name not in collections]
        if len(names) > 1:
            tests = [cell["test"] for cell in by_collection.values()]
            by_collection["mean"] = {
                "first_stage": sum(c["first_stage"] for c in by_collection.values()) / len(names),
                "reranked": sum(c["reranked"] for c in by_collection.values()) / len(names) if run.reranked else None,
                "test": mean_test(tests, comparisons) if run.reranked else None,
            }
        cells[run.name] = by_collection
    if len(collections) > 1:
        collections.append("mean")
    return title, collections, cells


def summary_table(runs: Sequence) -> tuple[str, str]:
    """(title, markdown table): rows = collections and their mean, one column per system, cells
    ``first stage → reranked (change) p=…`` (or the first stage alone when the system reranks nothing)."""
    title, collections, cells = summary_cells(runs)
    rows = []
    for collection in collections:
        row = [collection]
        for run in runs:
            cell = cells[run.name].get(collection)
            if cell is None:
                row.append("")
            elif cell["test"] is None:
                row.append(f"{cell['first_stage']:.4f}" + ("" if cell["reranked"] is None else f" → {cell['reranked']:.4f}"))
            else:
                row.append(f"{cell['first_stage']:.4f} → {format_delta(cell['test'])}")
        rows.append(row)
    return title, _markdown(["Collection", *[run.name for run in runs]], rows)


def write_summary(output_dir: str | Path, runs: Sequence) -> list[Path]:
    """``summary.json``, ``summary.csv`` and ``summary.png`` (one chart: first stage vs reranked per collection and
    system) for a several-systems run."""
    output_dir = Path(output_dir)
    title, collections, cells = summary_cells(runs)
    payload = {"compared": title, "collections": collections, "systems": {
        run.name: {"settings": run.settings, "command": run.command, "cells": {
            name: {**{k: v for k, v in cell.items() if k != "test"},
                   "paired_test": cell["test"].to_dict() if cell["test"] is not None else None}
            for name, cell in cells[run.name].items()}} for run in runs}}
    rows = []
    for run in runs:
        for name, cell in cells[run.name].items():
            test = cell["test"]
            rows.append([run.name, name, f"{cell['first_stage']:.6f}",
                         "" if cell["reranked"] is None else f"{cell['reranked']:.6f}",
                         "" if test is None else f"{test.delta:.6f}", "" if test is None else _csv_p(test.t_test_p, test),
                         "" if test is None else _csv_p(test.permutation_p, test)])
    groups = [(f"{collection}\n{run.name}", cells[run.name][collection]["first_stage"], cells[run.name][collection]["reranked"])
              for collection in collections for run in runs if collection in cells[run.name]]
    return [
        write_json(output_dir / "summary.json", payload),
        write_csv(output_dir / "summary.csv", ["system", "collection", "first_stage", "reranked", "delta", "t_test_p",
                                               "permutation_p"], rows),
        plot_base_vs_reranked(output_dir / "summary.png", groups, "nDCG@10", title),
    ]
