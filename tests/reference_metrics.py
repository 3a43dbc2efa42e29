"""Metrics computed independently of rerank_pipeline: ir_measures over a TREC run file against a BEIR qrels file.

Tests check the figures a report prints against these, so a report that averages the wrong lists, drops queries
or mislabels a metric fails.
"""

from __future__ import annotations

import csv
from pathlib import Path

import ir_measures


def read_qrels(beir_dir: str | Path, split: str = "test", binary: bool = False) -> dict[str, dict[str, int]]:
    """``{qid: {doc_id: gain}}`` read straight from ``qrels/<split>.tsv``; ``binary`` maps every gain above 0 to 1."""
    qrels: dict[str, dict[str, int]] = {}
    with open(Path(beir_dir) / "qrels" / f"{split}.tsv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            gain = int(row["score"])
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = min(gain, 1) if binary else gain
    return qrels


def trec_metrics(run_path: str | Path, qrels: dict[str, dict[str, int]], measure: str = "nDCG@10") -> dict[str, float]:
    """Per-query ``measure`` of a TREC run file, for every judged query (each must be in the run, so that no
    averaging convention for missing queries hides a difference)."""
    judged = {qid: rels for qid, rels in qrels.items() if any(gain > 0 for gain in rels.values())}
    run = [scored for scored in ir_measures.read_trec_run(str(run_path)) if scored.query_id in judged]
    assert {scored.query_id for scored in run} == set(judged), f"{run_path} misses judged queries"
    parsed = ir_measures.parse_measure(measure)
    return {metric.query_id: float(metric.value) for metric in ir_measures.iter_calc([parsed], judged, run)}


def mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)
