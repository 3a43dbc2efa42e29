"""``rerank-pipeline train``: bad input gives one-line errors; a short run prints the tables and writes the report."""

from __future__ import annotations

import json

import ir_measures
import pytest
from sentence_transformers import CrossEncoder

from rerank_pipeline.cli import main
from rerank_pipeline.datasets import load_beir
from reference_metrics import mean, read_qrels, trec_metrics
from test_training import make_tiny_bert_with_words, toy_collection


@pytest.fixture(scope="module")
def tiny_bert_words(tmp_path_factory):
    return make_tiny_bert_with_words(tmp_path_factory.mktemp("tiny-bert-words"))


def write_beir(folder, dataset, splits=("train",), test_share=0.3):
    """Write a toy collection as a BEIR folder; the last ``test_share`` of the queries go to ``test``."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id, doc in dataset.corpus.items():
            out.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for qid, text in dataset.queries.items():
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    query_ids = list(dataset.qrels)
    cut = round(len(query_ids) * (1 - test_share))
    for split, ids in (("train", query_ids[:cut]), ("test", query_ids[cut:])):
        if split in splits:
            rows = [f"{qid}\t{doc_id}\t{gain}" for qid in ids for doc_id, gain in dataset.qrels[qid].items()]
            (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def run_cli(capsys, *argv):
    code = main(["train", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_existing_output_folder_is_refused(tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", toy_collection())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("x")
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "out", "--first-stage", "bm25")
    assert code == 2 and "already exists" in err and "--overwrite" in err and "--resume" in err


def test_no_positive_and_unknown_positive_are_clear_errors(tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", toy_collection())
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tt0d0\t0\n")
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "o1", "--first-stage", "bm25")
    assert code == 2 and "no query has a positive judgement" in err
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tmissing-doc\t1\n")
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "o2", "--first-stage", "bm25")
    assert code == 2 and "missing-doc" in err and "not in the corpus" in err


def test_too_few_queries_for_a_dev_split_and_training_on_the_test_split_are_refused(tmp_path, capsys):
    dataset = toy_collection()
    dataset.qrels = {qid: dataset.qrels[qid] for qid in list(dataset.qrels)[:6]}
    beir = write_beir(tmp_path / "beir", dataset, test_share=0.0)
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "o", "--first-stage", "bm25")
    assert code == 2 and "too few judged queries for a dev split" in err
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "o3",
                           "--train-split", "train", "--eval-split", "train")
    assert code == 2 and "held-out split" in err


def test_a_short_run_prints_dev_and_before_after_tables_and_writes_the_report(tiny_bert_words, tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", toy_collection(), splits=("train", "test"), test_share=0.2)
    output, report = tmp_path / "model", tmp_path / "report"
    code, out, err = run_cli(
        capsys, "--beir-dir", beir, "--base-model", tiny_bert_words, "--output", output, "--first-stage", "bm25",
        "--eval-split", "test", "--max-steps", "3", "--max-length", "32", "--self-supervised-pairs", "4",
        "--report-dir", report, "--dev-fraction", "0.3",
    )
    assert code == 0, err
    assert "Dev split" in out and "Before / after" in out and "bm25 → reranker" in out and "_R100 protocol" in out
    assert "fusion.json serves" in out and "p=" in out and "{'loss'" not in out + err  # no raw loss dictionaries
    for stage in ("[data]", "[index]", "[mining]", "[judged pairs]", "[model selection]", "[fusion tuning]", "[evaluate]"):
        assert stage in err, stage
    results = json.loads((report / "results.json").read_text())
    rows = results["evaluation"]["rows"]
    # each row against ir_measures, computed here: the first stage from the TREC run `eval --no-rerank` writes for
    # the same split, the reranker alone from the saved model's own scores of that run's documents
    assert main(["eval", "--beir-dir", str(beir), "--split", "test", "--first-stage", "bm25", "--no-rerank",
                 "--no-progress", "--output", str(tmp_path / "bm25")]) == 0
    capsys.readouterr()
    (first_stage_run,) = (tmp_path / "bm25").glob("*_first_stage.trec")
    qrels = read_qrels(beir, "test")
    assert rows["bm25"]["ndcg@10"] == pytest.approx(mean(trec_metrics(first_stage_run, qrels)), abs=1e-9)
    held_out = load_beir(beir, "test")
    candidates: dict[str, list[str]] = {}
    for scored in ir_measures.read_trec_run(str(first_stage_run)):
        candidates.setdefault(scored.query_id, []).append(scored.doc_id)
    model = CrossEncoder(str(output), device="cpu")
    reranked = tmp_path / "reranked.trec"
    with open(reranked, "w", encoding="utf-8") as run:
        for qid, doc_ids in candidates.items():
            scores = model.predict([(held_out.queries[qid], held_out.document_text(d)) for d in doc_ids])
            run.writelines(f"{qid} Q0 {d} 0 {float(s)!r} check\n" for d, s in zip(doc_ids, scores))
    assert rows["bm25 → reranker"]["ndcg@10"] == pytest.approx(mean(trec_metrics(reranked, qrels)), abs=1e-6)
    assert results["evaluation"]["paired_tests"]["bm25 → reranker"]["ndcg@10"]["queries"] == len(load_beir(beir, "test").judged_queries())
    provenance = results["provenance"]
    assert provenance["seed"] == 42 and provenance["torch_threads"] >= 1 and "torch" in provenance["libraries"]
    assert {d["name"] for d in provenance["datasets"]} == {"beir"} and len(provenance["datasets"][0]["sha256"]) == 64
    assert "sha256" in provenance["models"]["trained"] and "train: fusion tuning" in provenance["timings_s"]
    assert "### Provenance" in (report / "report.md").read_text() and "Adapted to the collection `beir`" in (output / "README.md").read_text()
    assert "Training report" in (output / "README.md").read_text()
    assert (output / "fusion.json").is_file() and not (output / "checkpoints").exists()
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", tiny_bert_words, "--output", output, "--first-stage", "bm25")
    assert code == 2 and "already exists" in err


def test_quiet_prints_nothing(tiny_bert_words, tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", toy_collection(), test_share=0.0)
    code, out, err = run_cli(capsys, "--beir-dir", beir, "--base-model", tiny_bert_words, "--output", tmp_path / "model",
                             "--first-stage", "bm25", "--max-steps", "1", "--max-length", "32", "--dev-fraction", "0.3", "--quiet")
    assert code == 0, err
    assert out == "" and "[mining]" not in err and "it/s" not in err


def test_overwrite_keeps_the_old_model_when_the_data_is_refused(tmp_path, capsys):
    dataset = toy_collection()
    dataset.qrels = {qid: dataset.qrels[qid] for qid in list(dataset.qrels)[:6]}
    beir = write_beir(tmp_path / "beir", dataset, test_share=0.0)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("x")
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "out",
                           "--first-stage", "bm25", "--overwrite")
    assert code == 2 and "too few judged queries" in err
    assert (tmp_path / "out" / "model.safetensors").exists()
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--base-model", "x", "--output", tmp_path / "out",
                           "--overwrite", "--resume")
    assert code == 2 and "either --overwrite or --resume" in err


def test_judgements_repeating_held_out_queries_by_text_are_refused_before_training(tmp_path, capsys):
    dataset = toy_collection()
    beir = write_beir(tmp_path / "beir", dataset, splits=("train", "test"), test_share=0.3)
    test_ids = list(dataset.qrels)[round(len(dataset.qrels) * 0.7):]
    rows = [{"query": dataset.queries[qid], "positive_id": doc_id} for qid in test_ids for doc_id in dataset.qrels[qid]]
    judgements = tmp_path / "judgements.jsonl"
    judgements.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    code, _, err = run_cli(capsys, "--beir-dir", beir, "--judgements", judgements, "--eval-split", "test",
                           "--base-model", "x", "--output", tmp_path / "out", "--first-stage", "bm25")
    assert code == 2 and "shares" in err and "queries with the training judgements" in err
