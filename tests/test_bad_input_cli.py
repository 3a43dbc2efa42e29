"""Bad input on the command line (issue 19): one line before any work, or a defined, reported result.

docs/bad_input.md, section "Command line (issue 19)", has one row per test here.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from rerank_pipeline.cli import main
from test_bad_input import DOCS, fail_if_called, one_line, run_cli, write_corpus
from test_eval_cli import write_beir_folder
from test_eval_protocol import make_dataset

LONG_TEXT = " ".join(["boundary layer flow over a flat plate at mach number"] * 12)


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    return write_beir_folder(tmp_path_factory.mktemp("toy-beir"), make_dataset("toy", seed=7, n_docs=50))


@pytest.fixture
def bm25_index(tmp_path, capsys) -> Path:
    corpus = write_corpus(tmp_path / "docs.jsonl", [*DOCS, {"_id": "long-doc", "title": "", "text": LONG_TEXT}])
    assert run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "idx")[0] == 0
    return tmp_path / "idx"


def run_argv(capsys, *argv) -> tuple[int, str, str]:
    """``run_cli`` that also returns argparse's status (it exits instead of returning)."""
    try:
        return run_cli(capsys, *argv)
    except SystemExit as exit_info:
        captured = capsys.readouterr()
        return exit_info.code, captured.out, captured.err


# ---------------------------------------------------------------- --max-queries


def test_max_queries_below_one_is_refused_in_one_line(beir_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rerank_pipeline.cli.evaluate.load_datasets", fail_if_called)
    for value, message in (("-3", "must be >= 1, got -3"), ("0", "must be >= 1, got 0"), ("x", "expected an integer >= 1")):
        code, _, err = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--no-rerank", "--max-queries", value)
        assert code == 2 and one_line(err).startswith("rerank-pipeline eval: error: argument --max-queries: " + message)
    config = tmp_path / "eval.yaml"
    config.write_text("max-queries: 0\n", encoding="utf-8")
    code, _, err = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--no-rerank", "--config", config)
    assert code == 2 and one_line(err) == f"rerank-pipeline eval: error: {config}: max-queries: must be >= 1, got 0"
    monkeypatch.undo()
    code, out, _ = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--no-rerank", "--no-progress", "--max-queries", "2")
    assert code == 0 and "Queries: 2 " in out


# ---------------------------------------------------------------- search --long-document


def test_search_takes_the_rankers_long_document_options(bm25_index, tiny_bert, capsys, caplog):
    from test_cli_options import subcommand_parsers

    parsers = subcommand_parsers()
    for option in ("--max-length", "--long-document", "--max-passages"):
        search, evaluate = (parsers[name]._option_string_actions[option] for name in ("search", "eval"))
        assert (search.dest, search.type, search.choices, search.default, search.help) == \
               (evaluate.dest, evaluate.type, evaluate.choices, evaluate.default, evaluate.help), option
    base = ["search", "flat plate", "--index-dir", bm25_index, "--model", tiny_bert, "--json", "--no-progress",
            "--max-length", "16"]
    scores = {}
    for policy in ("truncate", "max_passage"):
        with caplog.at_level(logging.WARNING, logger="rerank_pipeline.components.ranker"):
            caplog.clear()
            code, out, _ = run_argv(capsys, *base, "--long-document", policy, "--max-passages", "1")
        assert code == 0
        scores[policy] = {row["id"]: row["score"] for row in json.loads(out)["results"]}
        assert ("'long-doc' (" in caplog.text) == (policy == "max_passage")
        if policy == "max_passage":  # the passages of a 16-token window: --max-length reached the ranker too
            from transformers import AutoTokenizer

            from rerank_pipeline.components.ranker.passages import encode_passages

            owners = encode_passages(AutoTokenizer.from_pretrained(str(tiny_bert)), ["flat plate"], [LONG_TEXT], 16,
                                     64)[1]
            assert f"'long-doc' ({len(owners)} passages)" in caplog.text and len(owners) > 10
    # MaxP's first passage is the truncated pair, so its score is at least truncation's
    assert scores["max_passage"]["long-doc"] >= scores["truncate"]["long-doc"] - 1e-6
    code, _, err = run_argv(capsys, "search", "flat plate", "--index-dir", bm25_index, "--no-rerank",
                            "--long-document", "max_passage")
    assert code == 2 and "--long-document" in one_line(err) and "pass --model" in one_line(err)
    code, _, err = run_argv(capsys, *base, "--max-passages", "0")
    assert code == 2 and "argument --max-passages: must be >= 1" in one_line(err)


# ---------------------------------------------------------------- one judged query


def test_eval_with_one_judged_query_writes_its_report_without_paired_tests(beir_dir, tiny_bert, tmp_path, capsys):
    out = tmp_path / "report"
    code, printed, _ = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--first-stage", "bm25", "--model", tiny_bert,
                                "--rerank-k", "5", "--candidates", "10", "--max-queries", "1", "--no-progress", "--output", out)
    assert code == 0
    assert printed.count("fewer than 2 judged queries") == 1 and "p=n/a" in printed
    payload = json.loads((out / "metrics.json").read_text())
    (protocol_tests,) = payload["protocol"]["always_rerank_positives"]["paired_tests"].values()
    end_to_end_tests = next(iter(payload["end_to_end"].values()))["paired_tests"]
    for test in (*protocol_tests.values(), *end_to_end_tests.values()):
        assert test["queries"] == 1 and test["t_test_p"] is None and test["permutation_p"] is None
        assert test["not_run"] == "fewer than 2 judged queries"
    assert "ndcg@10:t_test_p,not run: fewer than 2 judged queries" in (out / "metrics.csv").read_text()
    assert (out / "chart.png").is_file() and (out / "per_query.csv").is_file()


# ---------------------------------------------------------------- MaxP warning


def test_the_maxp_warning_of_eval_names_the_document_id(beir_dir, tiny_bert, tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="rerank_pipeline.components.ranker"):
        code, _, _ = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--first-stage", "bm25", "--model", tiny_bert,
                              "--rerank-k", "5", "--candidates", "10", "--max-queries", "2", "--max-length", "16",
                              "--long-document", "max_passage", "--max-passages", "1", "--no-progress")
    assert code == 0
    warnings = [record.getMessage() for record in caplog.records if "max_passages" in record.getMessage()]
    assert warnings and all(re.search(r": 'd\d+' \(\d+ passages\)", message) for message in warnings)
    assert not any("'pair " in message for message in warnings)
    from rerank_pipeline.eval import CachedScorer, load_scorer

    scorer = CachedScorer(load_scorer("cross-encoder", str(tiny_bert), max_length=16, long_document="max_passage",
                                      max_passages=1))
    pairs = [("flat plate", LONG_TEXT), ("flat plate", LONG_TEXT), ("flat plate", "a wing")]
    with caplog.at_level(logging.WARNING, logger="rerank_pipeline.components.ranker"):
        caplog.clear()
        scorer.predict(pairs, names=["long-doc", "copy", "short"])
    assert "of 1 document(s): 'long-doc' (" in caplog.text  # a repeated pair is scored once, under its first name


# ---------------------------------------------------------------- eval --pipeline refused


def test_a_pipeline_yaml_naming_os_system_is_refused_in_one_line(beir_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rerank_pipeline.cli.evaluate.load_datasets", fail_if_called)
    evil = tmp_path / "evil.yml"
    evil.write_text("components:\n  shell:\n    type: os.system\n    init_parameters: {}\nconnections: []\n")
    code, _, err = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--pipeline", evil, "--no-progress")
    assert code == 2 and one_line(err).startswith(f"rerank-pipeline eval: error: {evil}: refused os.system: module 'os' ")
    broken = tmp_path / "broken.yml"
    broken.write_text("components: {a: [1\n")
    code, _, err = run_argv(capsys, "eval", "--beir-dir", beir_dir, "--pipeline", broken, "--no-progress")
    assert code == 2 and f"error: {broken}: " in one_line(err)


# ---------------------------------------------------------------- corrupt index folders


def test_index_loading_errors_are_one_line_in_every_command(bm25_index, beir_dir, tmp_path, capsys, monkeypatch):
    from rerank_pipeline.components.bm25 import EmbeddedBM25DocumentStore
    from rerank_pipeline.components.index_folder import IndexFolderError

    def corrupt(self, folder, settings):
        raise IndexFolderError(f"{folder / 'documents.jsonl'}:3: not valid JSON\n(a second line of detail)")

    monkeypatch.setattr(EmbeddedBM25DocumentStore, "_load", corrupt)
    for argv in (
        ["search", "flat plate", "--index-dir", bm25_index, "--no-rerank"],
        ["eval", "--beir-dir", beir_dir, "--no-rerank", "--index-dir", bm25_index, "--no-progress"],
        ["export", "--index-dir", bm25_index, "--output", tmp_path / "search.yml"],
        ["serve", "--index-dir", bm25_index, "--port", "1"],
    ):
        code, _, err = run_argv(capsys, *argv)
        assert code == 2 and one_line(err) == (
            f"rerank-pipeline {argv[0]}: error: {bm25_index / 'documents.jsonl'}:3: not valid JSON"), argv[0]
    assert not (tmp_path / "search.yml").exists()

    def unexpected(self, folder, settings):
        raise ZeroDivisionError("a bug, not bad input")

    monkeypatch.setattr(EmbeddedBM25DocumentStore, "_load", unexpected)
    with pytest.raises(ZeroDivisionError):  # unexpected errors keep their traceback
        main(["search", "flat plate", "--index-dir", str(bm25_index), "--no-rerank"])
    monkeypatch.undo()
    (bm25_index / "index.json").write_text("{oops", encoding="utf-8")  # a real corruption, today a JSONDecodeError
    code, _, err = run_argv(capsys, "search", "flat plate", "--index-dir", bm25_index, "--no-rerank")
    assert code == 2 and one_line(err).startswith("rerank-pipeline search: error: ")
