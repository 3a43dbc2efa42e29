"""``rerank-pipeline tune``: the choice never takes a configuration significantly worse than the reference, and the
pipeline it writes measures, under ``eval --pipeline``, the figures ``tune.json`` records for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.hardware import EngineConfiguration
from rerank_pipeline.tuning.choice import Measurement, choose, judge, pareto_front
from rerank_pipeline.tuning.grid import Configuration, price, stage_configurations, windows_for
from test_eval_cli import beir_dir  # noqa: F401  (fixture)

TORCH = EngineConfiguration("torch", "fp32", False)
INT8 = EngineConfiguration("openvino", "fp32", True)


def measurement(depth: int, per_query: list[float], p50: float, engine=TORCH) -> Measurement:
    figures = {f"q{i}": {"ndcg@10": value} for i, value in enumerate(per_query)}
    return Measurement(Configuration(depth, 512, engine), "depth", {"ndcg@10": float(np.mean(per_query))}, figures,
                       [p50] * 3)


def test_a_significantly_worse_configuration_is_never_chosen_however_fast():
    rng = np.random.default_rng(0)
    for trial in range(40):
        queries = int(rng.integers(5, 60))
        base = rng.uniform(0, 1, queries)
        reference = measurement(100, list(base), p50=1.0)
        candidates = [reference]
        for depth in (10, 20, 30, 50):
            shift = rng.normal(rng.choice([-0.05, -0.01, 0.0, 0.01]), 0.03, queries)
            candidates.append(measurement(depth, list(np.clip(base + shift, 0, 1)), p50=depth / 100))
        for candidate in candidates:
            judge(candidate, reference, alpha=0.05, epsilon=0.005)
        chosen, reason = choose(candidates, reference)
        test = chosen.test
        assert chosen is reference or test.delta >= -0.005, (trial, reason)
        assert chosen is reference or not (test.delta < 0 and min(test.t_test_p, test.permutation_p) < 0.05), reason
        # and it is the fastest of those that pass
        assert chosen.p50_s == min(c.p50_s for c in candidates if c.passes)


def test_judge_names_why_a_configuration_fails():
    base = [0.5, 0.6, 0.7, 0.8, 0.4, 0.5, 0.6, 0.7]
    reference = measurement(100, base, p50=1.0)
    consistently_worse = measurement(10, [value - 0.003 for value in base], p50=0.1)  # within epsilon, every query
    much_worse = measurement(20, [0.1] * 8, p50=0.2)
    same = measurement(50, base, p50=0.5)
    for m in (reference, consistently_worse, much_worse, same):
        judge(m, reference, alpha=0.05, epsilon=0.005)
    assert consistently_worse.verdict.startswith("significantly worse") and not consistently_worse.passes
    assert much_worse.verdict.startswith("worse: mean ndcg@10") and not much_worse.passes
    assert same.passes and reference.verdict == "the reference"
    chosen, reason = choose([reference, consistently_worse, much_worse, same], reference)
    assert chosen is same and "fastest configuration not worse" in reason
    # a budget takes the best quality within it, passed or not, and says when nothing fits
    assert choose([reference, much_worse, same], reference, budget_s=0.3)[0] is much_worse
    assert choose([reference, much_worse, same], reference, budget_s=0.6)[0] is same
    chosen, reason = choose([reference, same], reference, budget_s=0.01)
    assert chosen is same and "no configuration meets the p50 budget of 10 ms" in reason
    assert [m.configuration.depth for m in pareto_front([reference, much_worse, same])] == [20, 50]


def test_judge_refuses_different_queries():
    reference = measurement(100, [0.5, 0.6, 0.7], p50=1.0)
    other = measurement(10, [0.5, 0.6], p50=0.1)
    with pytest.raises(ValueError, match="different queries"):
        judge(other, reference)


def test_staged_grid_and_its_price():
    reference = Configuration(100, 512, TORCH)
    chosen = Configuration(30, 256, TORCH)
    depths = stage_configurations("depth", reference, chosen, [10, 30, 100], [128, 256, 512], [TORCH, INT8])
    assert [c.depth for c in depths] == [100, 30, 10] and {c.window for c in depths} == {512}
    windows = stage_configurations("window", reference, chosen, [10, 30, 100], [128, 256, 512], [TORCH, INT8])
    assert [(c.depth, c.window) for c in windows] == [(30, 512), (30, 256), (30, 128)]
    engines = stage_configurations("engine", reference, chosen, [10, 30, 100], [128, 256, 512], [TORCH, INT8])
    assert [(c.depth, c.window, c.engine) for c in engines] == [(30, 256, TORCH), (30, 256, INT8)]
    assert windows_for(512) == [128, 256, 512] and windows_for(64) == [64] and windows_for(300, (128, 512)) == [128, 300]
    assert windows_for(128, longest=512) == [128, 256, 512]  # a model trained at 128 tries longer windows too
    # the depth sweep prices the deepest list once: 100 pairs a query, plus the timed queries at each depth
    assert price(depths, queries=10, latency_queries=2, seconds_per_pair=1.0, reference_window=512) == pytest.approx(
        100 * 10 + (100 + 30 + 10) * 3)
    with pytest.raises(ValueError, match="stage must be one of"):
        stage_configurations("precision", reference, chosen, [10], [128], [TORCH])


def run_tune(beir: Path, index_dir: Path, model: Path, output: Path, *extra: str) -> dict:
    code = main(["tune", "--beir-dir", str(beir), "--split", "test", "--index-dir", str(index_dir), "--model",
                 str(model), "--output", str(output), "--no-progress", *extra])
    assert code == 0
    return json.loads((output / "tune.json").read_text())


def eval_pipeline(beir: Path, pipeline: Path, output: Path, *extra: str) -> dict:
    assert main(["eval", "--pipeline", str(pipeline), "--beir-dir", str(beir), "--split", "test", "--no-progress",
                 "--output", str(output), *extra]) == 0
    (figures,) = json.loads((output / "metrics.json").read_text())["end_to_end"].values()
    return figures


def assert_reproduced(report: dict, figures: dict) -> None:
    assert figures["rerank_k"] == report["chosen"]["depth"]  # eval labels the pipeline's own depth
    measured = figures["reranked"]
    for metric in ("ndcg@10", "mrr@10", "recall@100", "map"):
        assert report["chosen"][metric] == pytest.approx(measured[metric], abs=1e-6), metric
        assert report["chosen"]["pipeline_figures"][metric] == pytest.approx(measured[metric], abs=1e-6), metric


def test_tune_writes_a_pipeline_that_eval_measures_as_tune_json_says(beir_dir, tiny_bert, tmp_path, capsys):  # noqa: F811
    output = tmp_path / "tuned"
    report = run_tune(beir_dir, tmp_path / "index", tiny_bert, output, "--depths", "5,10", "--windows", "16,32",
                      "--candidates", "20", "--latency-queries", "3", "--calibration", "isotonic",
                      "--calibrated-scores")
    printed = capsys.readouterr().out
    assert {"pipeline.yml", "tune.json", "tune.csv", "tune.md", "tune.png", "calibration.json",
            "reliability.png"} <= {p.name for p in output.iterdir()}
    # the written ranker returns calibrated probabilities, fitted on the chosen configuration's scores
    calibration = json.loads((output / "calibration.json").read_text())
    assert calibration == report["calibration"]["calibration"] and calibration["method"] == "isotonic"
    assert "score_calibration:" in (output / "pipeline.yml").read_text() and "Calibration (isotonic" in printed
    assert report["calibration"]["queries"] == report["queries"]
    # each configuration says what its window cut (the 16-token window cuts more than the model's 64)
    cut = {row["window"]: row["truncated_share"] for row in report["configurations"] if row["depth"] == 20}
    assert cut[16] >= cut[64] and cut[16] > 0
    for side in ("reference", "chosen"):
        assert {"ndcg@10", "p50_s", "depth", "window", "engine", "precision", "quantize"} <= set(report[side])
    assert report["reference"]["depth"] == 20 and report["reference"]["window"] == 64  # the model's own window
    assert report["reference"]["engine"] == "torch" and report["reference"]["precision"] == "fp32"
    labels = [row["label"] for row in report["configurations"]]
    assert len(labels) == len(set(labels)) and report["chosen"]["label"] in labels
    assert report["chosen"]["passes"] and report["chosen"]["p50_s"] == min(
        row["p50_s"] for row in report["configurations"] if row["passes"])
    assert "Chosen: **" in printed and "| configuration |" in printed
    assert report["machine"]["cores"] >= 1 and "load_before" in report["machine"]
    assert_reproduced(report, eval_pipeline(beir_dir, output / "pipeline.yml", tmp_path / "eval"))
    # the folder is replaced as a whole on a rerun; a folder of other files is refused before any work
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["tune", "--beir-dir", str(beir_dir), "--index-dir", str(tmp_path / "index"), "--model",
                 str(tiny_bert), "--output", str(other), "--no-progress"]) == 2
    assert "already holds other files" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"


def test_bad_settings_are_one_line_errors_before_work(beir_dir, tiny_bert, tmp_path, capsys):  # noqa: F811
    base = ["tune", "--beir-dir", str(beir_dir), "--index-dir", str(tmp_path / "index"), "--model", str(tiny_bert),
            "--output", str(tmp_path / "out"), "--no-progress"]
    assert main([*base, "--engines", "quantum fp1"]) == 2
    assert "--engines: quantum fp1 not supported here" in capsys.readouterr().err
    assert main([*base, "--budget-ms", "-5"]) == 2
    assert "budget_ms must be > 0" in capsys.readouterr().err
    for flag, value, message in (("--depths", "10,0", "'10,0'"), ("--alpha", "1.5", "between 0 and 1")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, flag, value])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "index").exists()


def test_an_index_of_another_collection_is_refused(beir_dir, tiny_bert, tmp_path, capsys):  # noqa: F811
    small = tmp_path / "small"
    shutil.copytree(beir_dir, small)
    lines = (small / "corpus.jsonl").read_text().splitlines()
    (small / "corpus.jsonl").write_text("\n".join(lines[:-5]) + "\n")
    assert main(["index", "--beir-dir", str(small), "--index-dir", str(tmp_path / "index"), "--no-progress"]) == 0
    assert main(["tune", "--beir-dir", str(beir_dir), "--index-dir", str(tmp_path / "index"), "--model",
                 str(tiny_bert), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "holds 45 documents but" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def cranfield_small(cranfield_dir, tmp_path_factory) -> Path:
    """Cranfield's corpus and queries with the judgements of its first 20 training queries (train) and its test split."""
    folder = tmp_path_factory.mktemp("cranfield-small")
    (folder / "qrels").mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).symlink_to(cranfield_dir / name)
    header, *rows = (cranfield_dir / "qrels" / "train.tsv").read_text().splitlines()
    keep = list(dict.fromkeys(row.split("\t")[0] for row in rows))[:20]
    (folder / "qrels" / "train.tsv").write_text("\n".join([header, *(r for r in rows if r.split("\t")[0] in keep)]) + "\n")
    shutil.copy(cranfield_dir / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")
    return folder


@pytest.fixture(scope="module")
def trained_on_cranfield(cranfield_small, tiny_bert, tmp_path_factory) -> Path:
    """The test cross-encoder adapted to Cranfield by ``rerank-pipeline train`` (a few steps: a real model folder
    with its ``fusion.json``, not a good one)."""
    output = tmp_path_factory.mktemp("trained") / "model"
    assert main(["train", "--beir-dir", str(cranfield_small), "--base-model", str(tiny_bert), "--output", str(output),
                 "--first-stage", "bm25", "--max-steps", "2", "--max-length", "32", "--self-supervised-pairs", "4",
                 "--dev-fraction", "0.3", "--no-progress"]) == 0
    assert (output / "fusion.json").is_file()
    return output


@pytest.mark.parametrize("model", ["test cross-encoder", "trained by rerank-pipeline train"])
def test_on_cranfield_eval_of_the_written_pipeline_reproduces_tune_json(model, cranfield_small, tiny_bert, request,
                                                                         tmp_path):
    folder = tiny_bert if model == "test cross-encoder" else request.getfixturevalue("trained_on_cranfield")
    report = run_tune(cranfield_small, tmp_path / "index", folder, tmp_path / "tuned", "--max-queries", "6",
                      "--depths", "5", "--windows", "16", "--candidates", "10", "--latency-queries", "2",
                      "--engines", "torch fp32", "--calibration", "none")
    assert report["queries"] == 6 and len(report["configurations"]) == 3  # depth 10 (reference), depth 5, window 16
    measured = eval_pipeline(cranfield_small, tmp_path / "tuned" / "pipeline.yml", tmp_path / "eval",
                             "--max-queries", "6")
    assert_reproduced(report, measured)
