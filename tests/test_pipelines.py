"""The pipeline builder: first stage -> CrossEncoderRanker -> top-k, and its YAML round trip."""

from __future__ import annotations

import pytest
from haystack import Document, Pipeline

from rerank_pipeline.first_stage import build_first_stage
from rerank_pipeline.pipelines import build_pipeline, load_pipeline, query_inputs, search

DOCS = [
    Document(id=str(i), content=text, meta={"title": ""})
    for i, text in enumerate(
        [
            "supersonic flutter of thin wing panels",
            "boundary layer transition on a flat plate",
            "heat transfer to a blunt body in hypersonic flow",
            "propeller slipstream effects on wing lift",
            "wing flutter in transonic flow",
            "noise of jet engines",
        ]
    )
]


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "bm25"
    build_first_stage("bm25", index_dir=folder).index(DOCS)
    return folder


def test_bm25_pipeline_reranks_the_first_stage_candidates(bm25_index, tiny_bert):
    first_stage = search(build_pipeline(bm25_index, top_k=10), "wing flutter")
    reranked = search(build_pipeline(bm25_index, ranker_model=str(tiny_bert), top_k=2), "wing flutter")
    assert {doc.id for doc in first_stage} == {"0", "3", "4"}
    assert len(reranked) == 2 and {doc.id for doc in reranked} <= {doc.id for doc in first_stage}
    assert reranked[0].score >= reranked[1].score


def test_yaml_round_trip_gives_the_same_results(bm25_index, tiny_bert):
    pipeline = build_pipeline(bm25_index, ranker_model=str(tiny_bert), top_k=3, candidates=5)
    text = pipeline.dumps()
    assert "EmbeddedBM25Retriever" in text and "CrossEncoderRanker" in text and str(bm25_index) in text
    loaded = Pipeline.loads(text, allowed_modules=["rerank_pipeline"])
    assert isinstance(loaded, Pipeline)
    assert [(d.id, d.score) for d in search(loaded, "flutter wing")] == [
        (d.id, d.score) for d in search(pipeline, "flutter wing")
    ]
    assert load_pipeline(text).to_dict() == pipeline.to_dict()


def test_hybrid_pipeline_joins_with_rrf_and_round_trips(tmp_path, minilm_path, tiny_bert):
    stage = build_first_stage("hybrid", embedding_model=str(minilm_path), index_dir=tmp_path / "hybrid")
    stage.index(DOCS)
    pipeline = build_pipeline(tmp_path / "hybrid", ranker_model=str(tiny_bert), top_k=3)
    assert set(pipeline.to_dict()["components"]) == {
        "bm25_retriever", "query_embedder", "dense_retriever", "joiner", "ranker"
    }
    assert query_inputs(pipeline, "q") == {"bm25_retriever": {"query": "q"}, "query_embedder": {"text": "q"}, "ranker": {"query": "q"}}
    first = search(build_pipeline(tmp_path / "hybrid", top_k=6), "wing flutter")
    expected = stage.retrieve({"q": "wing flutter"}, top_k=6)["q"]
    assert [(doc.id, doc.score) for doc in first] == expected  # served one query at a time = the batch run
    joiner = pipeline.to_dict()["components"]["joiner"]
    assert joiner["type"] == "rerank_pipeline.components.rrf.ReciprocalRankFusion"
    assert joiner["init_parameters"] == {"rrf_k": 60, "fusion_depth": 100, "top_k": 100}  # from index.json
    loaded = load_pipeline(pipeline.dumps())
    assert [d.id for d in search(loaded, "wing flutter")] == [d.id for d in search(pipeline, "wing flutter")]


def test_missing_index_and_empty_query_are_clear_errors(tmp_path, bm25_index):
    with pytest.raises(FileNotFoundError, match="rerank-pipeline index"):
        build_pipeline(tmp_path / "none")
    with pytest.raises(ValueError, match="empty"):
        search(build_pipeline(bm25_index), "  ")


def test_hybrid_fusion_settings_travel_from_the_index_to_the_yaml(tmp_path, minilm_path, capsys):
    from rerank_pipeline.cli import main

    stage = build_first_stage("hybrid", embedding_model=str(minilm_path), index_dir=tmp_path / "hybrid",
                              rrf_k=10, fusion_depth=5)
    stage.index(DOCS)
    components = load_pipeline(build_pipeline(tmp_path / "hybrid", top_k=3).dumps()).to_dict()["components"]
    assert components["joiner"]["init_parameters"] == {"rrf_k": 10, "fusion_depth": 5, "top_k": 3}
    assert components["bm25_retriever"]["init_parameters"]["top_k"] == 5  # each side: max(candidates, fusion_depth)
    assert main(["index", "--jsonl", str(tmp_path / "none.jsonl"), "--rrf-k", "5"]) == 2
    assert "--rrf-k and --fusion-depth apply to --first-stage hybrid, or elasticsearch with" in capsys.readouterr().err
