"""``rerank-pipeline eval`` offline on a BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import scipy.stats

from rerank_pipeline.cli import main
from rerank_pipeline.datasets import RetrievalDataset, load_beir
from rerank_pipeline.eval import load_scorer, rerank_protocol, retrieve_rankings
from reference_metrics import mean, read_qrels, trec_metrics
from test_eval_protocol import make_dataset


def write_beir_folder(root: Path, dataset: RetrievalDataset, split: str = "test") -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id, doc in dataset.corpus.items():
            out.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as out:
        for qid, text in dataset.queries.items():
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, rels in dataset.qrels.items() for d, g in rels.items()]
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    return write_beir_folder(tmp_path_factory.mktemp("toy-beir"), make_dataset("toy", seed=7, n_docs=50))


def test_cli_cross_encoder_on_beir_folder(beir_dir, tiny_bert, tmp_path, capsys):
    out = tmp_path / "report"
    code = main([
        "eval", "--beir-dir", str(beir_dir), "--split", "test", "--first-stage", "bm25", "--model", str(tiny_bert),
        "--rerank-k", "10", "--candidates", "20", "--always-rerank-positives", "both", "--batch-size", "16",
        "--no-progress", "--output", str(out),
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"| Metric  | {beir_dir.name}_R10" in printed
    assert "Base  -> Reranked" in printed and "Full ranking" in printed
    payload = json.loads((out / "metrics.json").read_text())
    assert set(payload["protocol"]) == {"always_rerank_positives", "retrieved_positives_only"}
    assert "--model" in (out / "COMMAND.txt").read_text()
    # the CLI's numbers are the API's numbers
    dataset = load_beir(beir_dir, "test")
    rankings = retrieve_rankings(dataset, "bm25", top_k=20)
    expected = rerank_protocol(dataset, rankings, load_scorer("cross-encoder", str(tiny_bert)), rerank_k=10, batch_size=16)
    got = payload["protocol"]["always_rerank_positives"]["metrics"]
    assert got == pytest.approx(expected.prefixed(), abs=1e-9)
    assert payload["end_to_end"][dataset.name]["reranked"] is not None


def test_cli_no_rerank_and_config_file(beir_dir, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"beir-dir: {beir_dir}\nfirst-stage: bm25\nrerank-k: 10\nno-rerank: true\nno-progress: true\n")
    out = tmp_path / "report"
    assert main(["eval", "--config", str(config), "--output", str(out)]) == 0
    payload = json.loads((out / "metrics.json").read_text())
    end_to_end = next(iter(payload["end_to_end"].values()))
    assert end_to_end["reranked"] is None
    (run,) = out.glob("*_first_stage.trec")  # the reported figure is ir_measures' on the run the report wrote
    assert end_to_end["first_stage"]["ndcg@10"] == pytest.approx(mean(trec_metrics(run, read_qrels(beir_dir))), abs=1e-9)
    assert "--no-rerank" in (out / "COMMAND.txt").read_text()
    assert "first stage" in capsys.readouterr().out


def test_cli_bi_encoder_reranker(beir_dir, minilm_path, tmp_path):
    out = tmp_path / "report"
    code = main([
        "eval", "--beir-dir", str(beir_dir), "--first-stage", "bm25", "--reranker", "bi-encoder", "--model", str(minilm_path),
        "--rerank-k", "10", "--no-progress", "--output", str(out),
    ])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["protocol"]["always_rerank_positives"]["metrics"]
    key = next(k for k in metrics if k.endswith("_R10_ndcg@10"))
    # the protocol is measured with binary relevance, on the reranked run the report wrote
    (run,) = out.glob("*_R10_always_rerank_positives_reranked.trec")
    assert metrics[key] == pytest.approx(mean(trec_metrics(run, read_qrels(beir_dir, binary=True))), abs=1e-9)
    assert metrics[key] != pytest.approx(metrics[key.replace("_R10_", "_R10_base_")], abs=1e-3)  # it reranked something


def test_cli_errors_are_one_line(beir_dir, capsys):
    assert main(["eval", "--beir-dir", str(beir_dir), "--split", "dev", "--no-rerank"]) == 2
    assert "split 'dev' not found" in capsys.readouterr().err
    assert main(["eval", "--beir-dir", str(beir_dir), "--reranker", "cross-encoder"]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["eval", "--beir-dir", str(beir_dir), "--first-stage", "published", "--no-rerank"]) == 2
    assert "publishes no first-stage ranking" in capsys.readouterr().err
    assert main(["eval", "--no-rerank"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_config_scalar_for_a_list_option_is_one_item(tmp_path):
    from rerank_pipeline.cli import build_parser
    from rerank_pipeline.cli.evaluate import _apply_config

    config = tmp_path / "eval.yaml"
    config.write_text("nanobeir: msmarco\nfirst-stage-option: url=http://localhost:9200\n")
    args = build_parser().parse_args(["eval", "--config", str(config)])
    _apply_config(args)
    assert args.nanobeir == ["msmarco"] and args.first_stage_option == ["url=http://localhost:9200"]


def test_cli_passes_the_ranker_backend_on(beir_dir, tiny_bert, tmp_path, capsys):
    pytest.importorskip("openvino", reason="pip install 'rerank-pipeline[openvino]' for the OpenVINO backend")
    reports = {}
    for name, options in {"torch": [], "openvino": ["--engine", "openvino"]}.items():
        reports[name] = tmp_path / name
        assert main([
            "eval", "--beir-dir", str(beir_dir), "--first-stage", "bm25", "--model", str(tiny_bert), "--rerank-k", "10",
            "--candidates", "20", "--no-progress", "--output", str(reports[name]), *options,
        ]) == 0
    assert f"cross-encoder {tiny_bert} (openvino)" in capsys.readouterr().out
    torch_metrics, openvino_metrics = (
        json.loads((reports[name] / "metrics.json").read_text())["protocol"]["always_rerank_positives"]["metrics"]
        for name in ("torch", "openvino")
    )
    assert openvino_metrics == pytest.approx(torch_metrics, abs=1e-4)


def test_cli_passes_the_window_and_long_document_policy_on(beir_dir, tiny_bert, tmp_path, capsys):
    out = tmp_path / "maxp"
    assert main([
        "eval", "--beir-dir", str(beir_dir), "--first-stage", "bm25", "--model", str(tiny_bert), "--rerank-k", "10",
        "--candidates", "20", "--max-length", "16", "--long-document", "max_passage", "--no-progress", "--output", str(out),
    ]) == 0
    assert f"cross-encoder {tiny_bert} (torch, max_length 16, max_passage)" in capsys.readouterr().out
    got = json.loads((out / "metrics.json").read_text())["protocol"]["always_rerank_positives"]["metrics"]
    dataset = load_beir(beir_dir, "test")
    rankings = retrieve_rankings(dataset, "bm25", top_k=20)
    results = {
        policy: rerank_protocol(
            dataset, rankings, load_scorer("cross-encoder", str(tiny_bert), max_length=16, long_document=policy), rerank_k=10
        ).prefixed()
        for policy in ("max_passage", "truncate")
    }
    assert results["max_passage"] != pytest.approx(results["truncate"], abs=1e-6)  # the toy documents exceed 16 tokens
    assert got == pytest.approx(results["max_passage"], abs=1e-9)


@pytest.fixture(scope="module")
def second_beir_dir(tmp_path_factory) -> Path:
    dataset = make_dataset("other", seed=11, n_docs=50)
    dataset.qrels = {qid: {doc_id: 1 for doc_id in rels} for qid, rels in dataset.qrels.items()}  # binary judgements
    return write_beir_folder(tmp_path_factory.mktemp("other-beir"), dataset)


def test_several_beir_folders_give_one_table_with_the_mean_and_paired_tests(beir_dir, second_beir_dir, tiny_bert, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", "--beir-dir", str(beir_dir), str(second_beir_dir), "--first-stage", "bm25", "--model", str(tiny_bert),
                 "--rerank-k", "10", "--candidates", "20", "--no-progress", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    names = [load_beir(folder, "test").name for folder in (beir_dir, second_beir_dir)]
    assert any(line.startswith("| mean ") and "| reranked" in line and "p=" in line for line in printed.splitlines())
    assert "mean_R10" in printed
    assert f"graded ({names[0]})" in printed and f"binary ({names[1]})" in printed  # detected from each collection's qrels
    assert "always_rerank_positives=True, binary relevance" in printed
    payload = json.loads((out / "metrics.json").read_text())
    tests = payload["end_to_end"][names[0]]["paired_tests"]["ndcg@10"]
    # the paired t-test recomputed with scipy from per-query nDCG@10 of the two TREC runs the report wrote
    qrels = read_qrels(beir_dir)
    base, reranked = (trec_metrics(out / f"{names[0]}_{run}.trec", qrels) for run in ("first_stage", "reranked"))
    assert tests["queries"] == len(load_beir(beir_dir, "test").judged_queries()) == len(base)
    assert (tests["mean_a"], tests["mean_b"]) == pytest.approx((mean(base), mean(reranked)), abs=1e-6)
    expected_p = scipy.stats.ttest_rel([reranked[q] for q in base], [base[q] for q in base]).pvalue
    assert tests["t_test_p"] == pytest.approx(min(1.0, expected_p * tests["comparisons"]), abs=1e-6)
    assert payload["end_to_end"]["mean"]["paired_tests"]["ndcg@10"]["queries"] == 2  # the mean is tested over collections
    assert set(payload["protocol"]["always_rerank_positives"]["paired_tests"]) == {f"{n}_R10" for n in names} | {"mean_R10_mean"}
    provenance = payload["provenance"]
    assert [d["name"] for d in provenance["datasets"]] == names and provenance["models"]["reranker"]["sha256"]
    assert {"load", "index + retrieve", "protocol (score + metrics)", "total"} <= set(provenance["timings_s"])
    csv_text = (out / "metrics.csv").read_text()
    assert f"significance,end_to_end,{names[0]},ndcg@10:t_test_p," in csv_text and "provenance,,,python," in csv_text
    done = float(printed.split("done in ")[1].split(" s")[0])
    assert done >= provenance["timings_s"]["total"] - 0.05  # the printed time is the whole command's


def test_no_rerank_shows_only_the_first_stage(beir_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", "--beir-dir", str(beir_dir), "--first-stage", "bm25", "--rerank-k", "10", "--no-rerank",
                 "--no-progress", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Reranked" not in printed and "reranked" not in printed.replace("nothing reranked", "")
    payload = json.loads((out / "metrics.json").read_text())
    protocol = payload["protocol"]["always_rerank_positives"]
    assert protocol["metrics"] and all("_base_" in key for key in protocol["metrics"]) and "paired_tests" not in protocol
    assert not list(out.glob("*_reranked.trec"))


def test_a_config_of_collections_and_systems_gives_one_summary(beir_dir, second_beir_dir, tiny_bert, tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(
        f"beir-dir: [{beir_dir}, {second_beir_dir}]\nrerank-k: 10\ncandidates: 20\nno-progress: true\n"
        f"systems:\n  - name: bm25-only\n    first-stage: bm25\n    no-rerank: true\n"
        f"  - name: bm25-tiny\n    first-stage: bm25\n    model: {tiny_bert}\n"
    )
    out = tmp_path / "grid"
    assert main(["eval", "--config", str(config), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = printed.split("=== summary")[1]
    assert "| Collection" in summary and "| bm25-only" in summary and "bm25-tiny" in summary and "| mean" in summary
    payload = json.loads((out / "summary.json").read_text())
    tiny = payload["systems"]["bm25-tiny"]["cells"]
    assert tiny["mean"]["paired_test"]["comparisons"] == 2  # Bonferroni over the two systems
    assert payload["systems"]["bm25-only"]["cells"]["mean"]["reranked"] is None
    first_stage = {name: cell["first_stage"] for name, cell in payload["systems"]["bm25-only"]["cells"].items()}
    assert first_stage == pytest.approx({name: cell["first_stage"] for name, cell in tiny.items()})  # same first stage
    assert (out / "bm25-tiny" / "metrics.json").is_file() and (out / "summary.png").is_file() and (out / "summary.csv").is_file()
    config.write_text(f"beir-dir: {beir_dir}\nsystems:\n  - name: bad\n    beir-dir: elsewhere\n")
    assert main(["eval", "--config", str(config)]) == 2
    assert "not a system option" in capsys.readouterr().err
