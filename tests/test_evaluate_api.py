"""``rerank_pipeline.evaluate``: the Python API under ``rerank-pipeline eval`` gives the command's numbers, and a
model whose ``fusion.json`` serves w = 0 reproduces the first stage exactly."""

from __future__ import annotations

import json
import shutil

import pytest

from rerank_pipeline import Evaluation, evaluate
from rerank_pipeline.cli import main
from rerank_pipeline.components.score_fusion import save_fusion_settings
from rerank_pipeline.datasets import load_beir


def trec_lines(path):
    """A TREC run's (query, doc, rank, score) lines, without the run tag."""
    return [line.split()[:5] for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_python_api_gives_the_numbers_of_the_command(cranfield_dir, minilm_path, tmp_path, capsys):
    options = dict(split="test", first_stage="bm25", model=str(minilm_path), reranker="bi-encoder", rerank_k=20,
                   candidates=30, max_queries=12, always_rerank_positives=(True, False))
    result = evaluate(str(cranfield_dir), **options)
    assert isinstance(result, Evaluation) and result.reranked
    code = main(["eval", "--beir-dir", str(cranfield_dir), "--split", "test", "--first-stage", "bm25", "--model",
                 str(minilm_path), "--reranker", "bi-encoder", "--rerank-k", "20", "--top-k", "30", "--max-queries", "12",
                 "--always-rerank-positives", "both", "--no-progress", "--output", str(tmp_path / "cli")])
    assert code == 0
    printed = json.loads((tmp_path / "cli" / "metrics.json").read_text(encoding="utf-8"))
    full = printed["end_to_end"]["cranfield"]
    assert full["first_stage"] == result.metrics["cranfield"]["first_stage"]
    assert full["reranked"] == result.metrics["cranfield"]["reranked"]
    for setting in ("always_rerank_positives", "retrieved_positives_only"):
        mine = result.metrics["cranfield"][f"R20 {setting}"]
        assert {key: printed["protocol"][setting]["metrics"][f"cranfield_R20_{key}"] for key in ("ndcg@10", "mrr@10", "map")} \
            == {key: mine[key] for key in ("ndcg@10", "mrr@10", "map")}
    # save() writes the files the command writes, with the same per-query figures
    result.save(tmp_path / "api")
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == sorted(
        p.name for p in (tmp_path / "cli").iterdir() if p.name != "COMMAND.txt")
    assert (tmp_path / "api" / "per_query.csv").read_text() == (tmp_path / "cli" / "per_query.csv").read_text()
    assert trec_lines(tmp_path / "api" / "cranfield_reranked.trec") == trec_lines(tmp_path / "cli" / "cranfield_reranked.trec")
    frame = result.to_frame()
    rows = frame[(frame.section == "end_to_end") & (frame.setting == "reranked") & (frame.metric == "ndcg@10")]
    assert len(rows) == 12 and rows.value.mean() == pytest.approx(full["reranked"]["ndcg@10"])


def test_compare_is_the_paired_test_of_the_final_rankings(cranfield_dir, minilm_path):
    dataset = load_beir(cranfield_dir, split="test")
    bm25 = evaluate(dataset, first_stage="bm25", max_queries=15)
    reranked = evaluate(dataset, first_stage="bm25", model=str(minilm_path), reranker="bi-encoder", rerank_k=20,
                        max_queries=15)
    test = reranked.compare(bm25)["cranfield"]["ndcg@10"]
    assert test.queries == 15
    assert test.mean_a == pytest.approx(bm25.metrics["cranfield"]["first_stage"]["ndcg@10"], abs=1e-6)
    assert test.mean_b == pytest.approx(reranked.metrics["cranfield"]["reranked"]["ndcg@10"], abs=1e-6)
    assert 0.0 <= test.t_test_p <= 1.0 and test.delta == pytest.approx(test.mean_b - test.mean_a)
    with pytest.raises(ValueError, match="unknown first stage"):
        evaluate(dataset, first_stage="bm26")


def test_weight_zero_reproduces_the_first_stage_on_cranfield(cranfield_dir, tiny_bert, tmp_path):
    """A model whose fusion.json serves w = 0 gives the first stage's metrics and TREC run, whatever it scores.

    40 queries x 25 candidates: the tiny model's character vocabulary makes every Cranfield abstract ~1,500 tokens,
    which the fast tokenizer holds in full while it truncates (~2 MB a pair)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    save_fusion_settings(model, 0.0)
    code = main(["eval", "--beir-dir", str(cranfield_dir), "--split", "test", "--first-stage", "bm25", "--model",
                 str(model), "--allow-untrained-head", "--max-queries", "40", "--top-k", "25", "--rerank-k", "25",
                 "--no-progress", "--output", str(tmp_path / "report")])
    assert code == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text(encoding="utf-8"))
    full = report["end_to_end"]["cranfield"]
    assert full["fusion_weight"] == 0.0 and full["reranked"] == full["first_stage"]
    assert trec_lines(tmp_path / "report" / "cranfield_reranked.trec") == \
        trec_lines(tmp_path / "report" / "cranfield_first_stage.trec")
    # the reranker itself moved documents: the identity above is the fusion's doing
    alone = evaluate(str(cranfield_dir), split="test", first_stage="bm25", model=str(model), fusion="none",
                     ranker_options={"allow_untrained_head": True}, always_rerank_positives=(), max_queries=40,
                     candidates=25, rerank_k=25)
    assert alone.metrics["cranfield"]["reranked"] != alone.metrics["cranfield"]["first_stage"]


def test_a_folder_that_is_not_a_beir_collection_is_one_error_naming_what_is_missing(tmp_path):
    from rerank_pipeline.datasets import DatasetError

    with pytest.raises(DatasetError, match="qrels/test.tsv missing"):
        evaluate(str(tmp_path), first_stage="bm25")
