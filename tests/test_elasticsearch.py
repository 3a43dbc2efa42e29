"""Elasticsearch helpers: a clear error without a server, an analyzer mirroring the embedded one, live tests."""

from __future__ import annotations

import os
import uuid

import pytest
from haystack import Document

pytest.importorskip("haystack_integrations.document_stores.elasticsearch")

from rerank_pipeline.components.bm25 import Analyzer  # noqa: E402
from rerank_pipeline.components.elasticsearch import elasticsearch_url, index_mapping, index_settings  # noqa: E402
from rerank_pipeline.first_stage import build_first_stage  # noqa: E402

LIVE = os.environ.get("ELASTICSEARCH_URL")
live = pytest.mark.skipif(not LIVE, reason="set ELASTICSEARCH_URL (e.g. docker compose up -d) to run live tests")


def test_unreachable_server_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("ELASTIC_API_KEY", "very-secret-key")
    with pytest.raises(RuntimeError) as error:
        build_first_stage("elasticsearch", url="http://127.0.0.1:9")
    message = str(error.value)
    assert message.startswith("cannot reach Elasticsearch at http://127.0.0.1:9")
    assert "very-secret-key" not in message and "\n" not in message


def test_credentials_in_the_url_are_refused():
    with pytest.raises(ValueError, match="ELASTIC_API_KEY"):
        elasticsearch_url("http://elastic:hunter2@localhost:9200")


def test_index_settings_mirror_the_embedded_analyzer():
    analysis = index_settings(Analyzer(), k1=0.9, b=0.4)
    chain = analysis["analysis"]["analyzer"]["rerank_bm25"]["filter"]
    filters = analysis["analysis"]["filter"]
    assert chain == ["lowercase", "rerank_min_length", "rerank_stop", "rerank_snowball"]
    assert filters["rerank_stop"]["stopwords"] == Analyzer().stopword_list()
    assert filters["rerank_snowball"]["language"] == "English"
    assert analysis["index"]["similarity"]["default"] == {"type": "BM25", "k1": 0.9, "b": 0.4}
    assert "rerank_stop" not in index_settings(Analyzer(stopwords=None))["analysis"]["filter"]
    assert index_mapping(["title"])["properties"]["title"]["copy_to"] == "content"


@live
def test_live_elasticsearch_ranks_like_embedded_bm25(tmp_path):
    documents = [
        Document(id=str(i), content=text, meta={"title": ""})
        for i, text in enumerate(
            ["supersonic flutter of thin wing panels", "boundary layer transition on a flat plate",
             "heat transfer to a blunt body in hypersonic flow", "propeller slipstream effects on wing lift"]
        )
    ]
    queries = {"q1": "wing flutter", "q2": "hypersonic heat transfer"}
    index = f"rerank-test-{uuid.uuid4().hex[:8]}"
    stage = build_first_stage("elasticsearch", index_dir=tmp_path / "es", index=index)
    try:
        stage.index(documents)
        stage.index(documents)  # replace by id: still 4 documents
        assert stage.store.count_documents() == 4
        remote = stage.retrieve(queries, top_k=3)
        embedded = build_first_stage("bm25")
        embedded.index(documents)
        local = embedded.retrieve(queries, top_k=3)
        for qid in queries:
            assert [d for d, _ in remote[qid]] == [d for d, _ in local[qid]]
            for (_, r), (_, s) in zip(remote[qid], local[qid]):
                assert r == pytest.approx(s, rel=0.05)  # Lucene stores lengths lossily
    finally:
        stage.store.client.indices.delete(index=index, ignore_unavailable=True)


def test_zero_k1_and_b_are_kept_not_replaced_by_defaults(monkeypatch):
    from rerank_pipeline.components import elasticsearch as es

    opened = {}
    monkeypatch.setattr(es, "open_document_store", lambda index, **kwargs: opened.update(kwargs) or object())
    monkeypatch.setattr(es, "bm25_retriever", lambda store, top_k=10: None)
    stage = es.ElasticsearchSide.create(None, {"k1": 1.2, "b": 0.0})
    assert (opened["k1"], opened["b"]) == (1.2, 0.0)
    assert (stage.settings["k1"], stage.settings["b"]) == (1.2, 0.0)
    reopened = es.ElasticsearchSide.create(stage.settings, {})
    assert reopened.settings["b"] == 0.0


def test_a_url_without_scheme_does_not_echo_its_credentials():
    with pytest.raises(ValueError, match="http") as error:
        elasticsearch_url("elastic:hunter2@localhost:9200")
    assert "hunter2" not in str(error.value)
    with pytest.raises(ValueError, match="'localhost:9200'"):
        elasticsearch_url("localhost:9200")


# --- dense retrieval on the cluster (hybrid: BM25 + kNN joined by RRF), bulk indexing that resumes ---------------

DIMS = 384


def _offline_store(index, *, url=None, meta_fields_to_index=("title",), embedding_dims=None, **_):
    """The real elasticsearch-haystack store, built as open_document_store builds it but without contacting a server
    (its client connects lazily): enough for the pipeline graph, serialization and the index record."""
    from haystack_integrations.document_stores.elasticsearch import ElasticsearchDocumentStore

    from rerank_pipeline.components.elasticsearch import SIMILARITY

    return ElasticsearchDocumentStore(hosts=url, index=index, embedding_similarity_function=SIMILARITY,
                                      custom_mapping=index_mapping(meta_fields_to_index, embedding_dims))


@pytest.fixture
def offline(monkeypatch):
    """``open_document_store`` without a server; returns the keyword arguments of each call."""
    from rerank_pipeline.components import elasticsearch as es

    calls = []

    def open_store(index, **kwargs):
        calls.append({"index": index, **kwargs})
        store = _offline_store(index, **kwargs)
        store.count_documents = lambda: 3  # the only server call that saving makes
        return store

    monkeypatch.setattr(es, "open_document_store", open_store)
    return calls


def test_the_dense_mapping_has_a_cosine_dense_vector_field_of_the_model_dims():
    mapping = index_mapping(["title"], embedding_dims=DIMS)
    assert mapping["properties"]["embedding"] == {"type": "dense_vector", "dims": DIMS, "index": True,
                                                  "similarity": "cosine"}
    assert mapping["properties"]["content"]["analyzer"] == "rerank_bm25"
    assert "embedding" not in index_mapping(["title"])["properties"]


def test_an_existing_index_must_fit_the_first_stage():
    from rerank_pipeline.components.elasticsearch import check_embedding_field

    dense, bm25 = index_mapping(["title"], DIMS), index_mapping(["title"])
    check_embedding_field("i", dense, DIMS)
    check_embedding_field("i", bm25, None)
    with pytest.raises(ValueError, match="no dense_vector 'embedding' field of 384 dims \\(no such field\\)"):
        check_embedding_field("i", bm25, DIMS)
    with pytest.raises(ValueError, match="dense_vector of 768 dims"):
        check_embedding_field("i", index_mapping(["title"], 768), DIMS)
    with pytest.raises(ValueError, match="holds embeddings \\(384 dims\\): pass the --embedding-model"):
        check_embedding_field("i", dense, None)


def test_es_hybrid_graph_record_and_yaml_round_trip(offline, tmp_path):
    from haystack import Pipeline
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder
    from haystack_integrations.components.retrievers.elasticsearch import (
        ElasticsearchBM25Retriever,
        ElasticsearchEmbeddingRetriever,
    )

    from rerank_pipeline.components.index_folder import read_settings
    from rerank_pipeline.components.rrf import ReciprocalRankFusion
    from rerank_pipeline.first_stage import open_first_stage
    from rerank_pipeline.pipelines import build_pipeline, load_pipeline

    stage = build_first_stage("elasticsearch", embedding_model="my/encoder", embedding_dims=DIMS, index="docs",
                              url="http://es.example:9200", rrf_k=10, fusion_depth=20, num_candidates=200)
    assert stage.fused and offline[-1]["embedding_dims"] == DIMS
    pipeline = stage.pipeline(candidates=5)
    kinds = {name: type(component) for name, component in pipeline.walk()}
    assert kinds == {"es_retriever": ElasticsearchBM25Retriever, "query_embedder": SentenceTransformersTextEmbedder,
                     "es_dense_retriever": ElasticsearchEmbeddingRetriever, "joiner": ReciprocalRankFusion}
    edges = {(sender, receiver, data["to_socket"].name) for sender, receiver, data in pipeline.graph.edges(data=True)}
    assert edges == {("query_embedder", "es_dense_retriever", "query_embedding"),
                     ("es_retriever", "joiner", "documents"), ("es_dense_retriever", "joiner", "documents")}
    assert pipeline.get_component("es_dense_retriever")._top_k == 20  # each side: max(candidates, fusion_depth)
    assert pipeline.get_component("es_dense_retriever")._num_candidates == 200
    assert pipeline.get_component("query_embedder").model == "my/encoder"

    stage.save(tmp_path / "es")  # the record: what rebuilds the pipeline, no credentials
    record = read_settings(tmp_path / "es")
    assert {key: record[key] for key in ("backend", "index", "embedding_model", "embedding_dims", "rrf_k",
                                          "fusion_depth", "num_candidates", "meta_fields_to_embed")} == {
        "backend": "elasticsearch", "index": "docs", "embedding_model": "my/encoder", "embedding_dims": DIMS,
        "rrf_k": 10, "fusion_depth": 20, "num_candidates": 200, "meta_fields_to_embed": ["title"]}
    reopened = open_first_stage(tmp_path / "es")  # dims recorded: the model is not loaded to reopen
    assert reopened.fused and (reopened.rrf_k, reopened.fusion_depth) == (10, 20)
    assert offline[-1]["embedding_dims"] == DIMS and offline[-1]["url"] == "http://es.example:9200"

    exported = build_pipeline(tmp_path / "es", top_k=3)
    loaded = load_pipeline(exported.dumps())
    connections = lambda p: sorted((c["sender"], c["receiver"]) for c in p.to_dict()["connections"])  # noqa: E731
    assert loaded.to_dict()["components"] == exported.to_dict()["components"]
    assert connections(loaded) == connections(exported)
    components = loaded.to_dict()["components"]
    assert components["joiner"]["init_parameters"] == {"rrf_k": 10, "fusion_depth": 20, "top_k": 3}
    store = components["es_dense_retriever"]["init_parameters"]["document_store"]["init_parameters"]
    assert store["custom_mapping"]["properties"]["embedding"]["dims"] == DIMS
    assert store["embedding_similarity_function"] == "cosine"
    assert isinstance(Pipeline.loads(exported.dumps(), allowed_modules=["rerank_pipeline"]), Pipeline)


def test_es_dense_options_are_checked(offline, tmp_path):
    with pytest.raises(ValueError, match="unknown options for the elasticsearch first stage: \\['rrf_k'\\]"):
        build_first_stage("elasticsearch", rrf_k=10)  # fusion needs the dense side
    build_first_stage("elasticsearch", index_dir=None, index="plain").save(tmp_path / "plain")
    with pytest.raises(ValueError, match="built without embeddings"):
        build_first_stage("elasticsearch", index_dir=tmp_path / "plain", embedding_model="my/encoder")
    build_first_stage("elasticsearch", embedding_model="my/encoder", embedding_dims=DIMS).save(tmp_path / "dense")
    with pytest.raises(ValueError, match="embedded with 'my/encoder', not 'other/encoder'"):
        build_first_stage("elasticsearch", index_dir=tmp_path / "dense", embedding_model="other/encoder")
    with pytest.raises(ValueError, match="holds 384-dim embeddings, not 768"):
        build_first_stage("elasticsearch", index_dir=tmp_path / "dense", embedding_dims=768)
    assert build_first_stage("elasticsearch", index_dir=tmp_path / "dense", embedding_dims="384").fused


def test_the_dims_are_measured_from_the_model_when_not_given(offline, minilm_path):
    stage = build_first_stage("elasticsearch", embedding_model=str(minilm_path))
    assert stage.sides[0].settings["embedding_dims"] == DIMS and offline[-1]["embedding_dims"] == DIMS


class _FakeClient:
    """Only what bulk_index asks of the client: ``mget`` (hits with ``found`` and ``_source`` minus excluded
    fields, as Elasticsearch answers) and ``indices.refresh``."""

    def __init__(self, source):
        self.source = source
        self.indices = self
        self.mget_calls = 0

    def mget(self, index, ids, source_excludes=()):
        assert index == "fake"  # the store's own index
        self.mget_calls += 1
        return {"docs": [{"_id": i, "found": True,
                          "_source": {k: v for k, v in self.source[i].items() if k not in source_excludes}}
                         if i in self.source else {"_id": i, "found": False} for i in ids]}

    def refresh(self, index):
        assert index == "fake"


class _FakeStore:
    """A stand-in for ElasticsearchDocumentStore's bulk write: ``_source`` is ``Document.to_dict()`` keyed by id (an
    id written again replaces it, as the ``index`` action does); the write of batch ``fail_at`` fails once."""

    def __init__(self, fail_at=None):
        self.source, self.fail_at, self.writes = {}, fail_at, []
        self.client = _FakeClient(self.source)

    def to_dict(self):  # the index name, read as from ElasticsearchDocumentStore.to_dict
        return {"init_parameters": {"index": "fake"}}

    def write_documents(self, documents, policy, refresh):
        from haystack.document_stores.types import DuplicatePolicy

        assert policy == DuplicatePolicy.OVERWRITE and refresh is False
        self.writes.append([doc.id for doc in documents])
        if len(self.writes) == self.fail_at:
            raise RuntimeError("connection lost")
        for doc in documents:  # as ElasticsearchDocumentStore.write_documents builds _source
            source = doc.to_dict()
            for field in ("embedding", "blob", "score", "sparse_embedding"):
                if source.get(field) is None:
                    source.pop(field, None)
            self.source[doc.id] = source
        return len(documents)


def test_bulk_indexing_resumes_after_a_failure_without_duplicates_or_re_embedding():
    from rerank_pipeline.components.elasticsearch import bulk_index

    documents = [Document(id=f"d{i}", content=f"text {i}", meta={"title": f"t{i}"}) for i in range(7)]
    embedded = []

    def embed(batch):
        embedded.extend(doc.id for doc in batch)
        return [Document(id=doc.id, content=doc.content, meta=doc.meta, embedding=[0.5, 0.5]) for doc in batch]

    store = _FakeStore(fail_at=2)
    with pytest.raises(RuntimeError, match="connection lost"):
        bulk_index(store, documents, batch_size=3, progress=False, embed=embed)
    assert sorted(store.source) == ["d0", "d1", "d2"]
    embedded.clear()
    changed = [Document(id="d1", content="new text", meta={"title": "t1"}), *documents[2:]]
    assert bulk_index(store, [documents[0], *changed], batch_size=3, progress=False, embed=embed) == 5
    assert embedded == ["d1", "d3", "d4", "d5", "d6"]  # d0 and d2 were stored unchanged: neither embedded nor sent
    assert sorted(store.source) == [f"d{i}" for i in range(7)] and store.source["d1"]["content"] == "new text"
    assert all(store.source[i]["embedding"] == [0.5, 0.5] for i in store.source)
    assert bulk_index(store, documents[:1], batch_size=3, progress=False, embed=embed) == 0  # nothing new
    with pytest.raises(ValueError, match="positive"):
        bulk_index(store, documents, batch_size=0)


def test_bulk_indexing_shows_progress_over_all_documents(capsys):
    from rerank_pipeline.components.elasticsearch import bulk_index

    store = _FakeStore()
    bulk_index(store, [Document(id=str(i), content="x") for i in range(5)], batch_size=2, progress=True)
    assert "indexing into Elasticsearch" in capsys.readouterr().err and store.client.mget_calls == 3
    assert [len(batch) for batch in store.writes] == [2, 2, 1]


def test_index_cli_checks_the_elasticsearch_options(tmp_path, capsys):
    from rerank_pipeline.cli import main

    corpus = str(tmp_path / "none.jsonl")
    assert main(["index", "--jsonl", corpus, "--es-bulk-size", "10"]) == 2
    assert "--es-bulk-size applies to --first-stage elasticsearch only" in capsys.readouterr().err
    assert main(["index", "--jsonl", corpus, "--first-stage", "elasticsearch", "--es-bulk-size", "0"]) == 2
    assert "--es-bulk-size must be positive" in capsys.readouterr().err
    assert main(["index", "--jsonl", corpus, "--first-stage", "elasticsearch", "--rrf-k", "5"]) == 2
    assert "or elasticsearch with --embedding-model" in capsys.readouterr().err


@live
def test_live_hybrid_on_the_cluster_matches_the_embedded_hybrid_and_resumes(tmp_path, minilm_path):
    documents = [
        Document(id=str(i), content=text, meta={"title": title})
        for i, (title, text) in enumerate([
            ("flutter", "supersonic flutter of thin wing panels"),
            ("transition", "boundary layer transition on a flat plate"),
            ("heating", "heat transfer to a blunt body in hypersonic flow"),
            ("propellers", "propeller slipstream effects on wing lift"),
            ("shocks", "shock wave boundary layer interaction at high mach number"),
        ])
    ]
    queries = {"q1": "wing flutter", "q2": "hypersonic heat transfer", "q3": "laminar flow over plates"}
    index = f"rerank-test-{uuid.uuid4().hex[:8]}"
    stage = build_first_stage("elasticsearch", index=index, embedding_model=str(minilm_path), bulk_size=2,
                              fusion_depth=5)
    try:
        mapping = stage.store.client.indices.get_mapping(index=index)[index]["mappings"]
        assert mapping["properties"]["embedding"]["dims"] == DIMS
        stage.index(documents[:3])  # an interrupted run wrote some documents
        stage.index(documents)  # the rerun: no duplicates
        assert stage.store.count_documents() == 5
        fused, (bm25_side, dense_side) = stage.retrieve_with_side_rankings(queries, top_k=5)
        embedded = build_first_stage("hybrid", embedding_model=str(minilm_path), fusion_depth=5)
        embedded.index(documents)
        local, (local_bm25, local_dense) = embedded.retrieve_with_side_rankings(queries, top_k=5)
        for qid in queries:
            assert [d for d, _ in bm25_side[qid]] == [d for d, _ in local_bm25[qid]]
            assert [d for d, _ in dense_side[qid]] == [d for d, _ in local_dense[qid]]  # kNN: exact on 5 documents
            assert {d for d, _ in fused[qid]} == {d for d, _ in local[qid]}
        stage.save(tmp_path / "es")
        from rerank_pipeline.pipelines import build_pipeline, search

        assert search(build_pipeline(tmp_path / "es", top_k=2), "wing flutter")[0].id == "0"
        with pytest.raises(ValueError, match="holds embeddings"):
            build_first_stage("elasticsearch", index=index)  # BM25-only writes would lack embeddings
    finally:
        stage.store.client.indices.delete(index=index, ignore_unavailable=True)


def test_dense_writes_embed_like_the_faiss_side_and_skip_unchanged_documents(minilm_path):
    import numpy as np

    from rerank_pipeline.components.elasticsearch import ElasticsearchSide

    documents = [Document(id="a", content="supersonic flutter of wing panels", meta={"title": "flutter"}),
                 Document(id="b", content="heat transfer in hypersonic flow", meta={"title": "heating"})]
    store = _FakeStore()
    side = ElasticsearchSide(store, {"embedding_model": str(minilm_path), "embedding_dims": DIMS, "batch_size": 8,
                                     "meta_fields_to_embed": ["title"], "bulk_size": 1})
    side.write(documents)
    side.write(documents)  # unchanged: nothing re-embedded or re-sent
    assert store.writes == [["a"], ["b"]]
    faiss = build_first_stage("dense", embedding_model=str(minilm_path))
    faiss.index(documents)
    expected = {doc.id: doc.embedding for doc in faiss.store.filter_documents()}
    for doc_id in ("a", "b"):
        assert len(store.source[doc_id]["embedding"]) == DIMS
        np.testing.assert_allclose(store.source[doc_id]["embedding"], expected[doc_id], atol=1e-5)
