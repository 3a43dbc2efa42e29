"""The trained model's fallback in the served path: ``fusion.json`` in build_pipeline, export, search and eval."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from haystack import Document

from rerank_pipeline.cli import main
from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.rrf import RRF_K, ReciprocalRankFusion, reciprocal_rank_fusion
from rerank_pipeline.components.score_fusion import RerankerScoreFusion, fuse_scores, save_fusion_settings
from rerank_pipeline.datasets import load_beir
from rerank_pipeline.eval import full_ranking_metrics, retrieve_rankings
from rerank_pipeline.first_stage import build_first_stage
from rerank_pipeline.pipelines import build_pipeline, load_pipeline, search
from test_eval_cli import write_beir_folder
from test_eval_protocol import make_dataset

QUERY = "wing flutter in supersonic flow"
TEXTS = [
    "supersonic flutter of thin wing panels",
    "boundary layer transition on a flat plate in supersonic flow",
    "heat transfer to a blunt body in hypersonic flow",
    "propeller slipstream effects on wing lift",
    "wing flutter in transonic flow",
    "noise of jet engines in supersonic flight",
    "flutter of a swept wing with control surfaces",
    "pressure distribution on a wing in subsonic flow",
    "shock wave boundary layer interaction",
    "panel flutter at high supersonic mach numbers",
]
CANDIDATES, TOP_K = 8, 4


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fusion-index") / "bm25"
    build_first_stage("bm25", index_dir=folder).index(
        [Document(id=f"d{i}", content=text, meta={"title": ""}) for i, text in enumerate(TEXTS)]
    )
    return folder


def trained_copy(tiny_bert, folder, weight: float):
    """The tiny cross-encoder as ``rerank-pipeline train`` leaves a model: with a ``fusion.json``."""
    shutil.copytree(tiny_bert, folder)
    save_fusion_settings(folder, weight, first_stage="bm25")
    return folder


@pytest.fixture(scope="module")
def fused_model(tiny_bert, tmp_path_factory):
    return trained_copy(tiny_bert, tmp_path_factory.mktemp("fused") / "model", 0.5)


@pytest.fixture(scope="module")
def parts(index_dir, tiny_bert):
    """What the first stage and the reranker alone return for QUERY (every candidate)."""
    first = search(build_pipeline(index_dir, top_k=CANDIDATES), QUERY)
    ranked = CrossEncoderRanker(model=str(tiny_bert), top_k=CANDIDATES)
    ranked.warm_up()
    return first, ranked.run(query=QUERY, documents=first)["documents"]


def scored(documents):
    return [(doc.id, pytest.approx(doc.score)) for doc in documents]


def test_pipeline_applies_the_model_folders_fusion_json(index_dir, fused_model, parts):
    first, ranked = parts
    assert len(first) == CANDIDATES
    pipeline = build_pipeline(index_dir, ranker_model=str(fused_model), top_k=TOP_K, candidates=CANDIDATES)
    components = pipeline.to_dict()["components"]
    assert components["fusion"]["type"].endswith("RerankerScoreFusion")
    assert components["fusion"]["init_parameters"] == {"weight": 0.5, "top_k": TOP_K}
    assert components["ranker"]["init_parameters"]["top_k"] == CANDIDATES  # the fusion sees every candidate
    expected = RerankerScoreFusion(weight=0.5, top_k=TOP_K).run(documents=ranked, first_stage_documents=first)["documents"]
    served = search(pipeline, QUERY)
    assert [(doc.id, doc.score) for doc in served] == scored(expected)
    assert [doc.id for doc in served] != [doc.id for doc in ranked[:TOP_K]]  # not the reranker alone
    assert served[0].meta["first_stage_score"] == pytest.approx(expected[0].meta["first_stage_score"])


def test_fusion_none_ignores_fusion_json(index_dir, fused_model, parts):
    _, ranked = parts
    pipeline = build_pipeline(index_dir, ranker_model=str(fused_model), top_k=TOP_K, candidates=CANDIDATES, fusion="none")
    assert "fusion" not in pipeline.to_dict()["components"]
    assert [(doc.id, doc.score) for doc in search(pipeline, QUERY)] == scored(ranked[:TOP_K])


def test_weight_zero_serves_the_first_stage_order(index_dir, tiny_bert, tmp_path, parts):
    first, _ = parts
    assert len({doc.score for doc in first[: TOP_K + 1]}) == TOP_K + 1  # no ties: the order is the first stage's
    model = trained_copy(tiny_bert, tmp_path / "model", 0.0)
    served = search(build_pipeline(index_dir, ranker_model=str(model), top_k=TOP_K, candidates=CANDIDATES), QUERY)
    assert [doc.id for doc in served] == [doc.id for doc in first[:TOP_K]]


def test_fusion_rrf_joins_the_first_stage_and_reranker_orders(index_dir, tiny_bert, parts):
    first, ranked = parts
    pipeline = build_pipeline(index_dir, ranker_model=str(tiny_bert), top_k=TOP_K, candidates=CANDIDATES, fusion="rrf")
    expected = reciprocal_rank_fusion([[d.id for d in first], [d.id for d in ranked]], RRF_K, TOP_K)
    assert [(doc.id, doc.score) for doc in search(pipeline, QUERY)] == [(i, pytest.approx(s)) for i, s in expected]
    with pytest.raises(ValueError, match="needs a reranker"):
        build_pipeline(index_dir, fusion="rrf")
    with pytest.raises(ValueError, match="unknown fusion"):
        build_pipeline(index_dir, ranker_model=str(tiny_bert), fusion="sum")


def test_run_batch_is_run_per_query(parts):
    first, ranked = parts
    fusion = RerankerScoreFusion(weight=0.3, top_k=3)
    batch = fusion.run_batch(documents=[ranked, ranked[:2]], first_stage_documents=[first, first])["documents"]
    assert batch == [fusion.run(ranked, first)["documents"], fusion.run(ranked[:2], first)["documents"]]
    with pytest.raises(ValueError, match="2 reranked lists for 1"):
        fusion.run_batch(documents=[ranked, ranked], first_stage_documents=[first])
    joined = ReciprocalRankFusion(top_k=3).run_batch(documents=[[first, ranked]])["documents"]
    assert joined == [ReciprocalRankFusion(top_k=3).run([first, ranked])["documents"]]


def test_export_and_search_commands_serve_and_say_the_fusion(index_dir, fused_model, tiny_bert, parts, tmp_path, capsys):
    first, ranked = parts
    output = tmp_path / "search.yml"
    common = ["--index-dir", str(index_dir), "--top-k", str(TOP_K), "--candidates", str(CANDIDATES)]
    assert main(["export", *common, "--model", str(fused_model), "--output", str(output)]) == 0
    assert f"fusion: fusion.json of {fused_model}, weight 0.5" in capsys.readouterr().out
    text = output.read_text(encoding="utf-8")
    assert "RerankerScoreFusion" in text and "weight: 0.5" in text and "fusion.documents" in text
    expected = RerankerScoreFusion(weight=0.5, top_k=TOP_K).run(documents=ranked, first_stage_documents=first)["documents"]
    assert [(doc.id, doc.score) for doc in search(load_pipeline(text), QUERY)] == scored(expected)

    assert main(["search", QUERY, *common, "--model", str(fused_model), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in printed["results"]] == [doc.id for doc in expected]
    assert "weight 0.5" in printed["fusion"]
    assert main(["search", QUERY, *common, "--model", str(fused_model), "--fusion", "none", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "fusion: none (the reranker's order)\n"
    assert [line.split()[2] for line in captured.out.splitlines()[2:]] == [doc.id for doc in ranked[:TOP_K]]
    assert main(["export", *common, "--model", str(tiny_bert), "--output", str(tmp_path / "plain.yml")]) == 0
    assert f"fusion: none ({tiny_bert} has no fusion.json" in capsys.readouterr().out
    assert "RerankerScoreFusion" not in (tmp_path / "plain.yml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def toy_beir(tmp_path_factory):
    return write_beir_folder(tmp_path_factory.mktemp("fusion-beir"), make_dataset("toy", seed=5, n_docs=40, n_queries=6))


def run_eval(toy_beir, model, output, *flags) -> dict:
    assert main([
        "eval", "--beir-dir", str(toy_beir), "--first-stage", "bm25", "--model", str(model), "--rerank-k", "6",
        "--candidates", "12", "--batch-size", "16", "--no-progress", "--output", str(output), *flags,
    ]) == 0
    return json.loads((output / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def by_hand(toy_beir, tiny_bert):
    """The first stage's top 12 and the tiny model's scores of each query's top 6, computed outside ``eval``."""
    dataset = load_beir(toy_beir)
    rankings = retrieve_rankings(dataset, "bm25", top_k=12)
    ranker = CrossEncoderRanker(model=str(tiny_bert))
    ranker.warm_up()
    heads = {}
    for qid in dataset.judged_queries():
        head = rankings[qid][:6]
        scores = ranker.predict([(dataset.queries[qid], dataset.document_text(doc_id)) for doc_id, _ in head])
        heads[qid] = (head, np.asarray(scores, dtype=np.float64), [doc_id for doc_id, _ in rankings[qid][6:]])
    return dataset, heads


def test_eval_fusion_model_measures_fuse_scores_of_fusion_json(toy_beir, fused_model, by_hand, tmp_path, capsys):
    dataset, heads = by_hand
    payload = run_eval(toy_beir, fused_model, tmp_path / "report")
    assert f"fusion: fusion.json of {fused_model}, weight 0.5" in capsys.readouterr().out
    fused_run = {}
    for qid, (head, reranker, tail) in heads.items():
        fused = fuse_scores(reranker, [score for _, score in head], 0.5)
        fused_run[qid] = [head[i][0] for i in np.argsort(-fused, kind="stable")] + tail
    expected, _ = full_ranking_metrics(dataset.qrels, fused_run)
    section = payload["end_to_end"][dataset.name]
    assert section["reranked"] == pytest.approx(expected)
    assert (section["fusion"], section["fusion_weight"]) == ("model", 0.5)
    assert (payload["settings"]["fusion"], payload["settings"]["fusion_weight"]) == ("model", 0.5)


def test_eval_fusion_rrf_measures_reciprocal_rank_fusion(toy_beir, tiny_bert, by_hand, tmp_path):
    dataset, heads = by_hand
    payload = run_eval(toy_beir, tiny_bert, tmp_path / "report", "--fusion", "rrf")
    fused_run = {}
    for qid, (head, reranker, tail) in heads.items():
        ids = [doc_id for doc_id, _ in head]
        fused = reciprocal_rank_fusion([ids, [ids[i] for i in np.argsort(-reranker, kind="stable")]], RRF_K)
        fused_run[qid] = [doc_id for doc_id, _ in fused] + tail
    expected, _ = full_ranking_metrics(dataset.qrels, fused_run)
    assert payload["end_to_end"][dataset.name]["reranked"] == pytest.approx(expected)
    assert payload["settings"]["fusion"] == "rrf"


def test_eval_fusion_model_without_fusion_json_is_none_and_says_so(toy_beir, tiny_bert, by_hand, tmp_path, capsys):
    dataset, heads = by_hand
    payload = run_eval(toy_beir, tiny_bert, tmp_path / "report")
    assert f"fusion: none ({tiny_bert} has no fusion.json" in capsys.readouterr().out
    alone = {qid: [head[i][0] for i in np.argsort(-reranker, kind="stable")] + tail for qid, (head, reranker, tail) in heads.items()}
    expected, _ = full_ranking_metrics(dataset.qrels, alone)
    section = payload["end_to_end"][dataset.name]
    assert section["reranked"] == pytest.approx(expected)
    assert (section["fusion"], section["fusion_weight"], payload["settings"]["fusion"]) == (None, None, "none")


def test_eval_pipeline_of_the_exported_fused_yaml_equals_eval_fusion_model(toy_beir, fused_model, tmp_path, capsys):
    index, yaml_file = tmp_path / "index", tmp_path / "pipeline.yml"
    assert main(["index", "--beir-dir", str(toy_beir), "--index-dir", str(index)]) == 0
    assert main(["export", "--index-dir", str(index), "--model", str(fused_model), "--top-k", "12", "--candidates", "12",
                 "--output", str(yaml_file)]) == 0
    common = ["eval", "--beir-dir", str(toy_beir), "--no-progress"]
    assert main([*common, "--pipeline", str(yaml_file), "--output", str(tmp_path / "served")]) == 0
    served = json.loads((tmp_path / "served" / "metrics.json").read_text(encoding="utf-8"))["end_to_end"][toy_beir.name]
    built = run_eval(toy_beir, fused_model, tmp_path / "built", "--rerank-k", "12")["end_to_end"][toy_beir.name]
    assert served["reranked"] == pytest.approx(built["reranked"], abs=1e-9)
    assert built["fusion_weight"] == 0.5 and built["reranked"] != served["first_stage"]
    capsys.readouterr()
    assert main([*common, "--pipeline", str(yaml_file), "--fusion", "none"]) == 2  # the YAML holds its fusion
    assert "drop --fusion" in capsys.readouterr().err
