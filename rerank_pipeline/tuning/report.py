"""What ``tune`` writes: the chosen pipeline (``pipeline.yml``, the format ``export`` writes) and the report of every
configuration (``tune.json``, ``tune.csv``, ``tune.md``, ``tune.png``; ``calibration.json`` and ``reliability.png``
when a calibration was fitted)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerank_pipeline.atomic import save_figure

if TYPE_CHECKING:
    from rerank_pipeline.tuning.choice import Measurement
    from rerank_pipeline.tuning.tuner import TuneResult

REPORT_MARKER = "tune.json"
"""A folder holding it is an earlier ``tune`` output, which a new run may replace as a whole."""
PIPELINE_FILE = "pipeline.yml"
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")


def measurement_row(measurement: Measurement, result: TuneResult) -> dict[str, Any]:
    """One configuration as ``tune.json``/``tune.csv`` record it: settings, figures, its test against the reference."""
    test = measurement.test
    truncation = measurement.details.get("truncation")
    front = {id(m) for m in result.pareto}
    return {
        **measurement.configuration.settings(), "stage": measurement.stage,
        **{metric: round(measurement.metrics[metric], 6) for metric in METRICS if metric in measurement.metrics},
        "p50_s": round(measurement.p50_s, 4), "p95_s": round(measurement.p95_s, 4),
        "delta": round(test.delta, 6) if test else None,
        "t_test_p": round(test.t_test_p, 6) if test else None,
        "randomization_p": round(test.permutation_p, 6) if test else None,
        "passes": measurement.passes, "pareto": id(measurement) in front,
        "reference": measurement is result.reference, "chosen": measurement is result.chosen,
        "truncated_share": round(truncation["share"], 4) if truncation else None,
        "tokens_cut_mean": round(truncation["tokens_cut_mean"], 1) if truncation else None,
        "load_before": round(measurement.load[0], 2), "load_after": round(measurement.load[1], 2),
        "verdict": measurement.verdict,
    }


def tune_json(result: TuneResult) -> dict[str, Any]:
    """The whole report: settings, machine, every configuration, ``reference`` and ``chosen`` (with why)."""
    rows = [measurement_row(m, result) for m in result.measurements]
    chosen = {**measurement_row(result.chosen, result), "reason": result.reason,
              "pipeline": PIPELINE_FILE, "pipeline_figures": {k: round(v, 6) for k, v in result.chosen_from_pipeline.items()}}
    return {
        "collection": result.dataset, "split": result.split, "queries": result.queries, "model": result.model,
        "index_dir": result.index_dir, "settings": result.settings, "machine": result.machine,
        "reference": measurement_row(result.reference, result), "chosen": chosen, "configurations": rows,
        "calibration": result.calibration.to_dict() if result.calibration is not None else None,
    }


def tune_markdown(result: TuneResult) -> str:
    """``tune.md``: the table, the chosen configuration and why, the machine."""
    metric = result.settings["metric"]
    lines = [f"# tune: {result.model} on {result.dataset} ({result.split}, {result.queries} queries)", "",
             f"Reference: {result.reference.configuration.label}. Chosen: **{result.chosen.configuration.label}**: "
             f"{result.reason}.", "",
             f"A configuration passes when its mean {metric} is no more than epsilon = {result.settings['epsilon']:g} "
             f"below the reference's and neither the paired t-test nor the randomization test finds it worse at "
             f"alpha = {result.settings['alpha']:g}. Latency: single queries through the served pipeline "
             f"(first stage, reranker, fusion), warm, {result.settings['latency_queries']} queries. Cut by the "
             "window: the share of reranked candidates the token window truncated, and the mean tokens cut from those.",
             "",
             "| configuration | stage | nDCG@10 | MRR@10 | Δ " + metric + " | t-test p | randomization p | p50 s | p95 s | "
             "cut by the window | passes | Pareto |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in (measurement_row(m, result) for m in result.measurements):
        mark = " (reference)" if row["reference"] else " (**chosen**)" if row["chosen"] else ""
        cut = "n/a" if row["truncated_share"] is None else (
            f"{row['truncated_share']:.1%} (mean {row['tokens_cut_mean']:g} tokens)")
        lines.append(f"| {row['label']}{mark} | {row['stage']} | {row['ndcg@10']:.4f} | {row['mrr@10']:.4f} | "
                     f"{_number(row['delta'], '+.4f')} | {_number(row['t_test_p'], '.3f')} | "
                     f"{_number(row['randomization_p'], '.3f')} | {row['p50_s']:.3f} | {row['p95_s']:.3f} | {cut} | "
                     f"{'yes' if row['passes'] else 'no'} | {'yes' if row['pareto'] else ''} |")
    machine = result.machine
    lines += ["", f"Machine: {machine['cpu']}; load average {machine['load_before']} before, {machine['load_after']} after.",
              "", "![quality against p50 latency](tune.png)"]
    if result.calibration is not None:
        lines += ["", calibration_markdown(result.calibration)]
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def calibration_markdown(calibration: Any) -> str:
    """The calibration paragraph of ``tune.md``: Brier and ECE before/after on held-out queries, the threshold."""
    data = calibration.to_dict()
    before, after = data["before"], data["after"]
    text = (f"Calibration ({data['calibration']['method']}, cross-validated by query, held-out figures): Brier "
            f"{before['brier']:.4f} -> {after['brier']:.4f}, ECE {before['ece']:.4f} -> {after['ece']:.4f} "
            "(before: the model's own sigmoid). ![reliability](reliability.png)")
    if data["threshold"] is not None:
        text += (f" A calibrated score_threshold of {data['threshold']:.4f} kept {data['above']} held-out pairs at "
                 f"precision {data['precision']:.3f} (target {data['target_precision']:g}).")
    elif data["target_precision"] is not None:
        text += f" No threshold reaches precision {data['target_precision']:g} on these judgements."
    return text


def plot(result: TuneResult, path: Path) -> None:
    """``tune.png``: the deciding metric against p50 latency, the Pareto front joined, reference and chosen marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result.settings["metric"]
    figure, axes = plt.subplots(figsize=(8, 6.5))
    for passes, style in ((True, {"color": "tab:blue", "label": "not worse than the reference"}),
                          (False, {"color": "tab:red", "label": "worse", "marker": "x"})):
        group = [m for m in result.measurements if m.passes == passes]
        if group:
            axes.scatter([m.p50_s for m in group], [m.metrics[metric] for m in group], **style)
    front = result.pareto
    axes.plot([m.p50_s for m in front], [m.metrics[metric] for m in front], color="tab:gray", linestyle="--",
              label="Pareto front")
    for measurement, label, marker in ((result.reference, "reference", "s"), (result.chosen, "chosen", "*")):
        axes.scatter([measurement.p50_s], [measurement.metrics[metric]], s=220, facecolors="none",
                     edgecolors="black", marker=marker, label=f"{label}: {measurement.configuration.label}")
    for measurement in result.measurements:
        axes.annotate(measurement.configuration.label.replace(", ", "\n"), (measurement.p50_s, measurement.metrics[metric]),
                      fontsize=6, xytext=(4, 2), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("p50 latency per query (s, log scale)")
    axes.set_ylabel(metric)
    axes.set_title(f"tune: {Path(result.model).name} on {result.dataset} ({result.queries} queries)")
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)  # below: points stay visible
    figure.tight_layout()
    save_figure(figure, path)


def write_tune_report(result: TuneResult, folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Write every file into ``folder`` as a whole: a new or empty folder, or an earlier ``tune`` output (any
    folder with ``overwrite``), replaced only once everything is written.

    :raises ~rerank_pipeline.output_paths.OutputPathError: ``folder`` holds other files and ``overwrite`` is off.
    """
    from rerank_pipeline.components.index_folder import atomic_directory
    from rerank_pipeline.eval.reports import portable_paths
    from rerank_pipeline.output_paths import check_replaceable_folder
    from rerank_pipeline.serving import hayhooks_yaml

    check_replaceable_folder(folder, REPORT_MARKER, "output folder", overwrite, "--overwrite")
    rows = [measurement_row(m, result) for m in result.measurements]
    with atomic_directory(folder, None if overwrite else REPORT_MARKER, "output folder") as staging:
        (staging / PIPELINE_FILE).write_text(hayhooks_yaml(result.pipeline), encoding="utf-8")
        # the report may be committed: no machine paths (pipeline.yml keeps its absolute ones, which it needs)
        (staging / "tune.json").write_text(json.dumps(portable_paths(tune_json(result)), indent=2) + "\n",
                                           encoding="utf-8")
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (staging / "tune.csv").write_text(table.getvalue(), encoding="utf-8")
        (staging / "tune.md").write_text(portable_paths(tune_markdown(result)), encoding="utf-8")
        plot(result, staging / "tune.png")
        if result.calibration is not None:
            result.calibration.calibration.save(staging / "calibration.json")
            result.calibration.reliability_diagram(staging / "reliability.png")
        names = sorted(path.name for path in staging.iterdir())
    return [Path(folder) / name for name in names]
