"""build_first_stage: one first stage (Haystack stores + retriever components) for bm25, dense, hybrid; reopening
index folders; the RRF joiner; the batch run equals Haystack's own ``Pipeline.run``."""

from __future__ import annotations


import ir_measures
import pytest
from haystack import Document

from rerank_pipeline.datasets import load_beir
from rerank_pipeline.batch_run import run_batch
from rerank_pipeline.components.rrf import ReciprocalRankFusion, reciprocal_rank_fusion
from rerank_pipeline.first_stage import FirstStage, build_first_stage, open_first_stage

DOCS = [
    Document(id="a", content="supersonic flutter of thin wing panels", meta={"title": "panel flutter"}),
    Document(id="b", content="boundary layer transition on a flat plate", meta={"title": "transition"}),
    Document(id="c", content="heat transfer to a blunt body in hypersonic flow", meta={"title": "heating"}),
    Document(id="d", content="propeller slipstream effects on wing lift", meta={"title": "slipstream"}),
]
QUERIES = {"q1": "panel flutter at supersonic speed", "q2": "hypersonic heating of blunt bodies"}


def test_rrf_orders_by_summed_reciprocal_ranks():
    fused = reciprocal_rank_fusion([["x", "y"], ["y", "z"]], rrf_k=60, top_k=3)
    assert [doc_id for doc_id, _ in fused] == ["y", "x", "z"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert reciprocal_rank_fusion([["b"], ["a"]]) == reciprocal_rank_fusion([["a"], ["b"]])  # a tie: smaller id first


def test_rrf_joiner_cuts_each_input_to_the_fusion_depth_and_serializes():
    lists = [[Document(id=i, content=i) for i in "abc"], [Document(id=i, content=i) for i in "dcb"]]
    joiner = ReciprocalRankFusion(rrf_k=10, fusion_depth=2)  # each list cut to its first 2
    fused = joiner.run(documents=lists)["documents"]
    assert [(d.id, d.score) for d in fused] == reciprocal_rank_fusion([["a", "b"], ["d", "c"]], 10)
    assert [d.id for d in fused] == ["a", "d", "b", "c"]
    assert [d.score for d in fused] == pytest.approx([1 / 11, 1 / 11, 1 / 12, 1 / 12])
    assert ReciprocalRankFusion.from_dict(joiner.to_dict()).to_dict() == joiner.to_dict()
    assert joiner.run_batch(documents=[lists, lists])["documents"] == [fused, fused]
    with pytest.raises(ValueError, match="fusion_depth"):
        ReciprocalRankFusion(fusion_depth=0)


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
    assert reopened.retrieve({"blank": "  "}) == {"blank": []}
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
    _, (bm25, dense_side) = hybrid.retrieve_with_side_rankings(QUERIES, top_k=3, side_top_k=100)
    expected = reciprocal_rank_fusion([[d for d, _ in bm25["q1"]], [d for d, _ in dense_side["q1"]]], top_k=3)
    assert fused["q1"] == expected
    assert dense_side["q1"][:4] == results["q1"]  # the hybrid's dense side is the dense first stage
    reopened = open_first_stage(tmp_path / "hybrid")
    assert reopened.retrieve(QUERIES, top_k=3) == fused
    assert (reopened.rrf_k, reopened.fusion_depth) == (60, 100)


def test_batch_run_equals_haystack_pipeline_run(minilm_path):
    """The batched components (one bm25s and one FAISS search for all queries) give what Haystack's own
    ``Pipeline.run`` gives query by query."""
    hybrid = build_first_stage("hybrid", embedding_model=str(minilm_path), fusion_depth=3)
    hybrid.index(DOCS)
    pipeline = hybrid.pipeline(candidates=3)
    batched = run_batch(pipeline, list(QUERIES.values()))
    for query, outputs in zip(QUERIES.values(), batched):
        one = pipeline.run({"bm25_retriever": {"query": query}, "query_embedder": {"text": query}},
                           include_outputs_from={"bm25_retriever", "dense_retriever", "joiner"})
        for name in ("bm25_retriever", "dense_retriever", "joiner"):
            assert [d.id for d in outputs[name]["documents"]] == [d.id for d in one[name]["documents"]]
            assert [d.score for d in outputs[name]["documents"]] == pytest.approx(
                [d.score for d in one[name]["documents"]], abs=1e-6)


def test_cranfield_dense_and_hybrid_reach_reference_ndcg(cranfield_dir, minilm_path):
    dataset = load_beir(cranfield_dir, "test")
    hybrid = build_first_stage("hybrid", embedding_model=str(minilm_path))
    hybrid.index(dataset.documents())
    ndcg = ir_measures.nDCG @ 10
    fused, (_, dense) = hybrid.retrieve_with_side_rankings(dataset.queries, top_k=100)
    for name, rankings, reference in (("dense", dense, 0.386), ("hybrid", fused, 0.409)):
        run = {qid: dict(hits) for qid, hits in rankings.items()}
        score = ir_measures.calc_aggregate([ndcg], dataset.qrels, run)[ndcg]
        assert round(score, 3) >= reference, f"{name}: nDCG@10 {score:.4f} < {reference}"


def test_numeric_options_given_as_strings_are_converted():
    stage = build_first_stage("bm25", k1="1.2", b="0.75")
    assert (stage.store.k1, stage.store.b) == (1.2, 0.75)
    with pytest.raises(ValueError, match="k1 must be a number"):
        build_first_stage("bm25", k1="high")


def test_dense_first_stage_reembeds_a_document_whose_title_changed(minilm_path, monkeypatch):
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersDocumentEmbedder
    from sentence_transformers import SentenceTransformer

    embedded: list[str] = []
    original = SentenceTransformersDocumentEmbedder.run

    def counting_run(self, documents):
        embedded.extend(doc.id for doc in documents)
        return original(self, documents=documents)

    monkeypatch.setattr(SentenceTransformersDocumentEmbedder, "run", counting_run)
    stage = build_first_stage("dense", embedding_model=str(minilm_path))
    stage.index([Document(id="a", content="wing flutter", meta={"title": "old"})])
    stage.index([Document(id="a", content="wing flutter", meta={"title": "old"})])  # unchanged: not embedded again
    assert embedded == ["a"]
    stage.index([Document(id="a", content="wing flutter", meta={"title": "a new title"})])
    assert embedded == ["a", "a"]
    stored = stage.store.filter_documents()[0]
    assert stored.meta["title"] == "a new title"
    expected = SentenceTransformer(str(minilm_path)).encode("a new title wing flutter", normalize_embeddings=True)
    assert stage.store.search_ids(expected[None, :], top_k=1)[0][0][1] == pytest.approx(1.0, abs=1e-5)
