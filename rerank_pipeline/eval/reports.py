"""Reports: model-card shaped console tables, JSON/CSV files written atomically, TREC runs, a PNG chart."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from rerank_pipeline.eval.end_to_end import EndToEndResult
from rerank_pipeline.eval.protocol import ProtocolResult, SuiteResult, metric_names


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
    """Write ``text`` to a temporary file beside ``path`` and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


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


def protocol_table(results: SuiteResult | Sequence[ProtocolResult] | ProtocolResult) -> str:
    """The model-card table: one column per dataset (and the mean), cells ``0.5676 (+0.1123)``."""
    if isinstance(results, ProtocolResult):
        results = SuiteResult([results], with_aggregate=False)
    elif not isinstance(results, SuiteResult):
        results = SuiteResult(list(results), with_aggregate=len(results) > 1)
    at_k = results.results[0].at_k
    columns = [(result.prefix, result.model_card()) for result in results.results]
    if results.with_aggregate:
        columns.append((results.prefix, results.model_card()))
    header = ["Metric", *[name for name, _ in columns]]
    rows = [[metric, *[card[metric] for _, card in columns]] for metric in metric_names(at_k)]
    return _markdown(header, rows)


def base_reranked_lines(metrics: Mapping[str, float], at_k: int = 10) -> str:
    """``MAP: 48.96 -> 60.35`` lines as sentence-transformers logs them (percent)."""
    lines = [f"{' ' * len(str(at_k))}       Base  -> Reranked"]
    for name, label in zip(metric_names(at_k), ["MAP:" + " " * len(str(at_k)) + " ", f"MRR@{at_k}:", f"NDCG@{at_k}:"]):
        lines.append(f"{label:<9}{metrics['base_' + name] * 100:.2f} -> {metrics[name] * 100:.2f}")
    return "\n".join(lines)


def end_to_end_table(results: Sequence[EndToEndResult]) -> str:
    """Rows: first stage and reranked per dataset; columns: nDCG@10, MRR@10, Recall@100, MAP."""
    names = list(results[0].first_stage)
    rows = []
    for result in results:
        rows.append([result.name, "first stage", *[f"{result.first_stage[n]:.4f}" for n in names]])
        if result.reranked is not None:
            label = f"reranked top {result.rerank_k}" + (f" ({result.fusion})" if result.fusion else "")
            rows.append([result.name, label, *[f"{result.reranked[n]:.4f} ({result.reranked[n] - result.first_stage[n]:+.4f})" for n in names]])
    return _markdown(["Dataset", "Ranking", *names], rows)


# --- chart ----------------------------------------------------------------------------------------------------


def plot_base_vs_reranked(path: str | Path, groups: Sequence[tuple[str, float, float]], metric: str, title: str) -> Path:
    """Bar chart of (label, base, reranked) per group, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _, _ in groups]
    width = 0.38
    figure, axis = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 2), 4))
    positions = range(len(groups))
    base_bars = axis.bar([p - width / 2 for p in positions], [g[1] for g in groups], width, label="Base (first stage)")
    reranked_bars = axis.bar([p + width / 2 for p in positions], [g[2] for g in groups], width, label="Reranked")
    axis.bar_label(base_bars, fmt="%.3f", fontsize=8)
    axis.bar_label(reranked_bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(list(positions), labels, rotation=15, ha="right", fontsize=8)
    axis.set_ylabel(metric)
    axis.set_ylim(0, min(1.05, max([g[2] for g in groups] + [g[1] for g in groups]) * 1.25 + 0.02))
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
    return path


# --- whole report ---------------------------------------------------------------------------------------------


def protocol_payload(suite: SuiteResult) -> dict:
    """JSON-ready summary of a protocol run: flat keys, model-card strings, stats and timings per dataset."""
    return {
        "metrics": suite.flat(),
        "model_card": {
            **{result.prefix: result.model_card() for result in suite.results},
            **({suite.prefix: suite.model_card()} if suite.with_aggregate else {}),
        },
        "settings": {
            "rerank_k": suite.results[0].rerank_k, "at_k": suite.results[0].at_k,
            "always_rerank_positives": suite.results[0].always_rerank_positives,
        },
        "stats": {result.prefix: result.stats for result in suite.results},
        "timings": {result.prefix: result.timings for result in suite.results},
    }


def end_to_end_payload(results: Sequence[EndToEndResult]) -> dict:
    return {
        result.name: {
            "rerank_k": result.rerank_k, "fusion": result.fusion,
            "first_stage": result.first_stage, "reranked": result.reranked,
        }
        for result in results
    }


def write_report(
    output_dir: str | Path,
    protocol: Mapping[str, SuiteResult] | None = None,
    end_to_end: Sequence[EndToEndResult] | None = None,
    command: str | None = None,
    settings: Mapping | None = None,
    tag: str = "rerank-pipeline",
) -> list[Path]:
    """Write ``metrics.json``, ``metrics.csv``, ``per_query.csv``, TREC runs, ``chart.png`` and ``COMMAND.txt``.

    ``protocol`` maps a label (e.g. ``"always_rerank_positives"``) to a :class:`SuiteResult`.
    """
    output_dir = Path(output_dir)
    written: list[Path] = []
    protocol = dict(protocol or {})
    end_to_end = list(end_to_end or [])
    payload = {"settings": portable_paths(dict(settings or {}))}
    command = portable_paths(command)
    if command:
        payload["command"] = command
    payload["protocol"] = {label: protocol_payload(suite) for label, suite in protocol.items()}
    if end_to_end:
        payload["end_to_end"] = end_to_end_payload(end_to_end)
    written.append(write_json(output_dir / "metrics.json", payload))

    rows, per_query_rows = [], []
    for label, suite in protocol.items():
        for result in suite.results:
            for key, value in result.metrics.items():
                rows.append(["protocol", label, result.prefix, key, f"{value:.6f}"])
            for qid, values in result.per_query.items():
                per_query_rows.extend(["protocol", label, result.prefix, qid, key, f"{v:.6f}"] for key, v in values.items())
        if suite.with_aggregate:
            rows.extend(["protocol", label, suite.prefix, key, f"{value:.6f}"] for key, value in suite.aggregate.items())
    for result in end_to_end:
        for ranking, values, per_query in (
            ("first_stage", result.first_stage, result.per_query_first_stage),
            ("reranked", result.reranked, result.per_query_reranked),
        ):
            if values is None:
                continue
            rows.extend(["end_to_end", ranking, result.name, key, f"{value:.6f}"] for key, value in values.items())
            for qid, row in per_query.items():
                per_query_rows.extend(["end_to_end", ranking, result.name, qid, key, f"{v:.6f}"] for key, v in row.items())
    written.append(write_csv(output_dir / "metrics.csv", ["section", "setting", "dataset", "metric", "value"], rows))
    written.append(write_csv(output_dir / "per_query.csv", ["section", "setting", "dataset", "query_id", "metric", "value"], per_query_rows))

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
            groups.append((f"{result.prefix}\n{label}", result.metrics["base_" + metric], result.metrics[metric]))
    for result in end_to_end:
        if result.reranked is not None:
            groups.append((f"{result.name}\nfull ranking", result.first_stage["ndcg@10"], result.reranked["ndcg@10"]))
            metric = metric or "ndcg@10"
    if groups:
        written.append(plot_base_vs_reranked(output_dir / "chart.png", groups, metric or "ndcg@10", "nDCG@10: first stage (base) vs reranked"))
    if command:
        written.append(write_text_atomic(output_dir / "COMMAND.txt", command + "\n"))
    return written
