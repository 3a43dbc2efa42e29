"""build_first_stage: the FirstStage interface for bm25, dense, hybrid; reopening index folders; RRF."""

from __future__ import annotations


import ir_measures
import pytest
from haystack import Document

from rerank_pipeline.datasets import load_beir
from rerank_pipeline.first_stage import FirstStage, build_first_stage, open_first_stage, reciprocal_rank_fusion

DOCS = [
    Document(id="a", content="supersonic flutter of thin wing panels", meta={"title": "panel flutter"}),
    Document(id="b", content="boundary layer transition on a flat plate", meta={"title": "transition"}),
    Document(id="c", content="heat transfer to a blunt body in hypersonic flow", meta={"title": "heating"}),
    Document(id="d", content="propeller slipstream effects on wing lift", meta={"title": "slipstream"}),
]
QUERIES = {"q1": "panel flutter at supersonic speed", "q2": "hypersonic heating of blunt bodies"}


def test_rrf_orders_by_summed_reciprocal_ranks():
    fused = reciprocal_rank_fusion([[("x", 9.0), ("y", 5.0)], [("y", 0.9), ("z", 0.8)]], top_k=3, k=60)
    assert [doc_id for doc_id, _ in fused] == ["y", "x", "z"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_bm25_first_stage_is_idempotent_and_reopens(tmp_path):
    stage = build_first_stage("bm25", index_dir=tmp_path / "idx")
    assert isinstance(stage, FirstStage) and stage.name == "bm25"
    stage.index(DOCS)
    stage.index(DOCS)  # same ids again: no duplicates
    results = stage.retrieve(QUERIES, top_k=2)
    assert [d for d, _ in results["q1"]][0] == "a" and [d for d, _ in results["q2"]][0] == "c"
    assert all(len(hits) <= 2 for hits in results.values())
    reopened = open_first_stage(tmp_path / "idx")
    assert reopened.name == "bm25" and reopened.store.count_documents() == 4
    assert reopened.retrieve(QUERIES, top_k=2) == results


def test_unknown_kind_and_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown first stage 'sparse'"):
        build_first_stage("sparse")
    with pytest.raises(ValueError, match="unknown options"):
        build_first_stage("bm25", k3=1.0)
    build_first_stage("bm25", index_dir=tmp_path / "idx").index(DOCS)
    with pytest.raises(ValueError, match="holds a 'bm25' index"):
        build_first_stage("dense", index_dir=tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="index.json"):
        open_first_stage(tmp_path / "nothing")


def test_dense_and_hybrid_with_real_minilm(minilm_path, tmp_path):
    dense = build_first_stage("dense", embedding_model=str(minilm_path), index_dir=tmp_path / "dense")
    dense.index(DOCS)
    results = dense.retrieve(QUERIES, top_k=4)
    assert results["q1"][0][0] == "a" and results["q2"][0][0] == "c"
    assert all(-1.0 <= score <= 1.0001 for hits in results.values() for _, score in hits)
    assert open_first_stage(tmp_path / "dense").retrieve(QUERIES, top_k=4) == results

    hybrid = build_first_stage("hybrid", embedding_model=str(minilm_path), index_dir=tmp_path / "hybrid")
    hybrid.index(DOCS)
    fused = hybrid.retrieve(QUERIES, top_k=3)
    expected = reciprocal_rank_fusion(
        [hybrid.bm25.retrieve(QUERIES, 100)["q1"], hybrid.dense.retrieve(QUERIES, 100)["q1"]], top_k=3
    )
    assert fused["q1"] == expected
    assert open_first_stage(tmp_path / "hybrid").retrieve(QUERIES, top_k=3) == fused


def test_cranfield_dense_and_hybrid_reach_reference_ndcg(cranfield_dir, minilm_path):
    dataset = load_beir(cranfield_dir, "test")
    hybrid = build_first_stage("hybrid", embedding_model=str(minilm_path))
    hybrid.index(dataset.documents())
    ndcg = ir_measures.nDCG @ 10
    for stage, reference in ((hybrid.dense, 0.386), (hybrid, 0.409)):
        run = {qid: dict(hits) for qid, hits in stage.retrieve(dataset.queries, top_k=100).items()}
        score = ir_measures.calc_aggregate([ndcg], dataset.qrels, run)[ndcg]
        assert round(score, 3) >= reference, f"{stage.name}: nDCG@10 {score:.4f} < {reference}"


def test_numeric_options_given_as_strings_are_converted():
    stage = build_first_stage("bm25", k1="1.2", b="0.75")
    assert (stage.store.k1, stage.store.b) == (1.2, 0.75)
    with pytest.raises(ValueError, match="k1 must be a number"):
        build_first_stage("bm25", k1="high")


def test_dense_first_stage_reembeds_a_document_whose_title_changed():
    import numpy as np

    from rerank_pipeline.components.faiss_store import FAISSDocumentStore
    from rerank_pipeline.first_stage import DenseFirstStage

    class CountingEncoder:
        model = "fake"

        def __init__(self):
            self.texts: list[str] = []

        def encode(self, texts, progress=False):
            self.texts.extend(texts)
            return np.array([[float(len(text)), 1.0] for text in texts], dtype=np.float32)

    encoder = CountingEncoder()
    stage = DenseFirstStage(FAISSDocumentStore(use_gpu=False), encoder)
    stage.index([Document(id="a", content="wing flutter", meta={"title": "old"})])
    stage.index([Document(id="a", content="wing flutter", meta={"title": "old"})])  # unchanged: not embedded again
    assert encoder.texts == ["old wing flutter"]
    stage.index([Document(id="a", content="wing flutter", meta={"title": "a new title"})])
    assert encoder.texts[-1] == "a new title wing flutter"
    assert stage.store.get_documents(["a"])[0].meta["title"] == "a new title"
