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
