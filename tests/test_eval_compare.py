"""``rerank-pipeline eval --compare RUN_DIR ...``: this run's final ranking against earlier reports, per query."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.eval.significance import format_delta, paired_test
from test_eval_cli import write_beir_folder
from test_eval_protocol import make_dataset

METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]
TOY = ["--first-stage", "bm25", "--candidates", "20", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    return write_beir_folder(tmp_path_factory.mktemp("parent") / "toy", make_dataset("toy", seed=7, n_docs=50))


@pytest.fixture(scope="module")
def reports(beir_dir, tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """Two earlier reports on the toy collection: BM25 alone (A) and BM25 reranked by the tiny cross-encoder (B)."""
    root = tmp_path_factory.mktemp("reports")
    options = {"A": ["--no-rerank"], "B": ["--model", str(tiny_bert)]}
    for name, extra in options.items():
        assert main(["eval", "--beir-dir", str(beir_dir), "--rerank-k", "10", *TOY, *extra, "--output", str(root / name)]) == 0
    return {name: root / name for name in options}


def per_query(report: Path, setting: str) -> dict[str, dict[str, float]]:
    """query id -> metric -> value of a report's full ranking (``first_stage`` or ``reranked``), read from its CSV."""
    values: dict[str, dict[str, float]] = {}
    with open(report / "per_query.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["section"] == "end_to_end" and row["setting"] == setting:
                values.setdefault(row["query_id"], {})[row["metric"]] = float(row["value"])
    return values


def console_rows(printed: str) -> dict[str, list[str]]:
    """System -> cells of the comparison table's rows."""
    table = printed.split("Compared with earlier runs")[1].split("\np = ")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]
    return {row[1]: row[2:] for row in rows[1:]}


def test_compare_gives_the_paired_tests_on_the_per_query_values(beir_dir, tiny_bert, reports, tmp_path, capsys):
    out = tmp_path / "C"
    capsys.readouterr()
    assert main(["eval", "--beir-dir", str(beir_dir), "--rerank-k", "5", *TOY, "--model", str(tiny_bert),
                 "--compare", str(reports["A"]), str(reports["B"]), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("Compared with earlier runs (full ranking") > printed.index("Full ranking (ir_measures")
    assert "Bonferroni over 2 runs" in printed and f"A: rerank-pipeline eval --beir-dir {beir_dir}" in printed
    this_run = per_query(out, "reranked")
    earlier = {"A": per_query(reports["A"], "first_stage"), "B": per_query(reports["B"], "reranked")}
    queries = sorted(this_run)
    expected = {name: {m: paired_test([this_run[q][m] for q in queries], [values[q][m] for q in queries], comparisons=2)
                       for m in METRICS} for name, values in earlier.items()}
    assert any(test.t_test_p < 1 for tests in expected.values() for test in tests.values())  # the runs do differ

    payload = json.loads((out / "metrics.json").read_text())["comparisons"]
    cells = payload["rankings"]["full ranking"]["toy"]
    assert payload["bonferroni_comparisons"] == 2 and set(payload["runs"]) == {"A", "B"}
    with open(out / "comparisons.csv", newline="") as handle:
        csv_rows = {(row["run"], row["metric"]): row for row in csv.DictReader(handle)}
    assert len(csv_rows) == 2 * len(METRICS)
    console = console_rows(printed)
    assert console["this run"] == [f"{sum(this_run[q][m] for q in queries) / len(queries):.4f}" for m in METRICS]
    for name, tests in expected.items():
        assert console[name] == [format_delta(tests[m]) for m in METRICS]  # console = the direct call
        for metric, test in tests.items():
            in_json, in_csv = cells["runs"][name][metric], csv_rows[(name, metric)]
            for field, value in (("value", test.mean_b), ("this_run", test.mean_a), ("delta", test.delta),
                                 ("t_test_p", test.t_test_p), ("permutation_p", test.permutation_p)):
                assert in_json[field] == pytest.approx(value, abs=1e-6) and float(in_csv[field]) == in_json[field]
            assert in_json["significant"] == test.significant() and in_csv["significant"] == str(test.significant()).lower()
            assert in_json["queries"] == int(in_csv["queries"]) == len(queries) and in_json["comparisons"] == 2


def test_an_identical_run_from_a_config_gives_no_change_and_p_1(beir_dir, reports, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"beir-dir: {beir_dir}\nrerank-k: 10\nno-rerank: true\ncompare: {reports['A']}\n")  # a scalar
    out = tmp_path / "again"
    capsys.readouterr()
    assert main(["eval", "--config", str(config), *TOY, "--output", str(out)]) == 0
    console = console_rows(capsys.readouterr().out)
    assert all(re.fullmatch(r"\d\.\d{4} \(\+0\.0000\) p=1\.000/1\.000", cell) for cell in console["A"])
    tests = json.loads((out / "metrics.json").read_text())["comparisons"]["rankings"]["full ranking"]["toy"]["runs"]["A"]
    assert {(t["delta"], t["t_test_p"], t["permutation_p"], t["comparisons"], t["significant"]) for t in tests.values()} \
        == {(0.0, 1.0, 1.0, 1, False)}
    assert f"--compare {reports['A']}" in (out / "COMMAND.txt").read_text()


def test_without_full_ranking_in_an_earlier_run_the_protocol_is_compared(beir_dir, reports, tmp_path, capsys):
    protocol_only = tmp_path / "protocol-only"
    base = ["eval", "--beir-dir", str(beir_dir), "--rerank-k", "10", *TOY, "--no-rerank"]
    assert main([*base, "--end-to-end", "off", "--output", str(protocol_only)]) == 0
    capsys.readouterr()
    assert main([*base, "--compare", str(protocol_only), str(reports["B"]), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "protocol-only has no full-ranking figures: comparing the protocol (R10 always_rerank_positives)" in printed
    assert "Compared with earlier runs (R10 always_rerank_positives protocol, binary relevance)" in printed
    cells = json.loads((tmp_path / "out" / "metrics.json").read_text())["comparisons"]["rankings"]
    assert list(cells) == ["R10 always_rerank_positives"]
    runs = cells["R10 always_rerank_positives"]["toy"]["runs"]
    assert {test["delta"] for test in runs["protocol-only"].values()} == {0.0}  # the same first-stage order
    assert any(test["delta"] != 0 for test in runs["B"].values())  # B's reranked order, not its first stage


def test_bad_compare_folders_are_refused_in_one_line_before_any_work(beir_dir, reports, tmp_path, capsys):
    other = write_beir_folder(tmp_path / "other", make_dataset("other", seed=11, n_docs=50))
    regraded = make_dataset("toy", seed=7, n_docs=50)
    regraded.qrels = {qid: {doc_id: 1 for doc_id in rels} for qid, rels in regraded.qrels.items()}  # same queries, binary
    regraded_dir = write_beir_folder(tmp_path / "elsewhere" / "toy", regraded)
    out = tmp_path / "never"
    cases = [
        ([str(beir_dir)], [str(tmp_path / "missing")], "no such folder"),
        ([str(beir_dir)], [str(beir_dir)], "no per_query.csv, not an `eval --output` report"),
        ([str(beir_dir)], [str(reports["A"]), str(reports["A"])], f"--compare names {reports['A']} twice"),
        ([str(other)], [str(reports["A"])], "collections differ: only in this run ['other'], only in A ['toy']"),
        ([str(beir_dir), "--max-queries", "3"], [str(reports["A"])], "5 judged queries differ (0 only in this run, 5 only in A)"),
        ([str(regraded_dir)], [str(reports["A"])], "toy: same judged queries but other data (corpus, queries or qrels)"),
    ]
    for collection, compared, message in cases:
        capsys.readouterr()
        assert main(["eval", "--beir-dir", *collection, "--no-rerank", *TOY, "--compare", *compared,
                     "--output", str(out)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.err.count("\n") == 1
        assert "indexing" not in captured.out and not out.exists()  # refused before retrieval, nothing written


def test_a_served_pipeline_compared_with_its_built_twin_shows_no_change(beir_dir, tiny_bert, tmp_path, capsys):
    index, yaml_file = tmp_path / "index", tmp_path / "pipeline.yml"
    assert main(["index", "--beir-dir", str(beir_dir), "--first-stage", "bm25", "--index-dir", str(index)]) == 0
    assert main(["export", "--index-dir", str(index), "--model", str(tiny_bert), "--top-k", "20", "--candidates", "20",
                 "--output", str(yaml_file)]) == 0
    common = ["eval", "--beir-dir", str(beir_dir), "--no-progress"]
    assert main([*common, "--first-stage", "bm25", "--index-dir", str(index), "--model", str(tiny_bert), "--rerank-k", "20",
                 "--candidates", "20", "--output", str(tmp_path / "built")]) == 0
    assert main([*common, "--pipeline", str(yaml_file), "--compare", str(tmp_path / "built"),
                 "--output", str(tmp_path / "served")]) == 0
    runs = json.loads((tmp_path / "served" / "metrics.json").read_text())["comparisons"]["rankings"]["full ranking"]["toy"]["runs"]
    assert {(test["delta"], test["t_test_p"], test["permutation_p"]) for test in runs["built"].values()} == {(0.0, 1.0, 1.0)}
