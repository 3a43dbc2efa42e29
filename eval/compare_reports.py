"""Compare the metrics of freshly written eval reports with the committed ones in eval/results/.

    python eval/compare_reports.py runs/cranfield [--committed eval/results] [--metrics ndcg@10 recall@100]

Every ``metrics.json`` under the run folder is matched with the report of the same relative path under
``--committed``; prints ``report | metric | committed | this run | diff`` and exits 1 when a metric moved by more
than ``--tolerance`` (or a committed report is missing), so a reproduction is checked at a glance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def flat_metrics(payload: dict) -> dict[str, float]:
    """``{"protocol always_rerank_positives cranfield_R100_ndcg@10": 0.41, "first stage cranfield ndcg@10": ...}``."""
    metrics: dict[str, float] = {}
    for label, suite in payload.get("protocol", {}).items():
        for name, value in suite.get("metrics", {}).items():
            metrics[f"{label} {name}"] = value
        for name, value in (suite.get("aggregate") or {}).items():
            metrics[f"{label} {name}"] = value
    for dataset, result in payload.get("end_to_end", {}).items():
        for ranking in ("first_stage", "reranked"):
            for name, value in (result.get(ranking) or {}).items():
                metrics[f"{ranking} {dataset} {name}"] = value
    return metrics


def compare(run_dir: Path, committed_dir: Path, metric_names: list[str], tolerance: float) -> tuple[list[list[str]], bool]:
    """Table rows and whether every selected metric matches its committed value within ``tolerance``."""
    rows, same = [], True
    reports = sorted(run_dir.rglob("metrics.json"))
    if not reports:
        raise FileNotFoundError(f"no metrics.json under {run_dir}")
    for report in reports:
        name = report.parent.relative_to(run_dir).as_posix()
        fresh = flat_metrics(json.loads(report.read_text(encoding="utf-8")))
        committed_file = committed_dir / name / "metrics.json"
        committed = flat_metrics(json.loads(committed_file.read_text(encoding="utf-8"))) if committed_file.is_file() else {}
        for metric, value in fresh.items():
            if not any(metric.endswith(wanted) for wanted in metric_names) or "_base_" in metric:
                continue
            old = committed.get(metric)
            if old is None:
                same = False
                rows.append([name, metric, "-", f"{value:.4f}", "not committed"])
                continue
            diff = value - old
            same &= abs(diff) <= tolerance
            rows.append([name, metric, f"{old:.4f}", f"{value:.4f}", f"{diff:+.4f}"])
    return rows, same


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    lines += ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="folder holding the fresh reports (one sub-folder per report)")
    parser.add_argument("--committed", type=Path, default=Path(__file__).parent / "results", help="committed reports (default: eval/results)")
    parser.add_argument("--metrics", nargs="+", default=["ndcg@10", "recall@100"], help="metric names to show (suffix match; default: ndcg@10 recall@100)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |diff| still counted as reproduced (default: 1e-4)")
    args = parser.parse_args(argv)
    rows, same = compare(args.run_dir, args.committed, args.metrics, args.tolerance)
    print(markdown_table(["report", "metric", "committed", "this run", "diff"], rows))
    print(f"\n{'reproduced' if same else 'DIFFERS from'} the committed reports (tolerance {args.tolerance:g})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
