"""Embedded BM25 store and retriever: analyzer, Lucene scores, replace-by-id, persistence, Cranfield figure."""

from __future__ import annotations

import math

import ir_measures
import pytest
from haystack import Document
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy

from rerank_pipeline.components import Analyzer, EmbeddedBM25DocumentStore, EmbeddedBM25Retriever
from rerank_pipeline.datasets import load_beir

DOCS = [
    Document(id="d1", content="The wings of the aircraft flutter at high speeds", meta={"title": "", "year": 1960}),
    Document(id="d2", content="Heat transfer in hypersonic flow over a flat plate", meta={"title": "", "year": 1962}),
    Document(id="d3", content="Flutter of panels and wing flutter", meta={"title": "", "year": 1962}),
]


def test_analyzer_lowercases_removes_stop_words_and_stems():
    analyzer = Analyzer()
    assert analyzer.analyze("The Wings are FLUTTERING at high speeds") == ["wing", "flutter", "high", "speed"]
    assert Analyzer(stopwords=None, stemmer=None).analyze("The Wings a") == ["the", "wings"]


def test_analyzer_rejects_unknown_settings():
    with pytest.raises(ValueError, match="stemmer"):
        Analyzer(stemmer="klingon")
    with pytest.raises(ValueError, match="stop word"):
        Analyzer(stopwords="xx")


def test_scores_follow_lucene_bm25():
    plain = Analyzer(stopwords=None, stemmer=None)
    store = EmbeddedBM25DocumentStore(k1=1.2, b=0.75, analyzer=plain, meta_fields_to_index=[])
    store.write_documents(DOCS)
    lengths = {doc.id: len(plain.analyze(doc.content)) for doc in DOCS}
    avgdl = sum(lengths.values()) / len(lengths)

    def lucene(term: str, doc: Document) -> float:
        terms = plain.analyze(doc.content)
        df = sum(term in plain.analyze(d.content) for d in DOCS)
        idf = math.log(1 + (len(DOCS) - df + 0.5) / (df + 0.5))
        tf = terms.count(term)
        return idf * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * lengths[doc.id] / avgdl))

    hits = dict(store.search_ids(["flutter wing"], top_k=3)[0])
    assert set(hits) == {"d1", "d3"}  # d2 shares no term and is left out
    for doc in (DOCS[0], DOCS[2]):
        assert hits[doc.id] == pytest.approx(lucene("flutter", doc) + lucene("wing", doc), rel=1e-5)


def test_overwriting_an_existing_id_replaces_it_and_the_default_policy_refuses_it():
    store = EmbeddedBM25DocumentStore()
    store.write_documents(DOCS)
    with pytest.raises(DuplicateDocumentError):  # DuplicatePolicy.NONE is FAIL, as in InMemoryDocumentStore
        store.write_documents([Document(id="d2", content="rotor blade noise")])
    store.write_documents([Document(id="d2", content="rotor blade noise")], policy=DuplicatePolicy.OVERWRITE)
    assert store.count_documents() == 3
    assert store.search_ids(["hypersonic"], top_k=3) == [[]]
    assert store.search_ids(["rotor"], top_k=3)[0][0][0] == "d2"
    with pytest.raises(DuplicateDocumentError):
        store.write_documents([Document(id="d1", content="x")], policy=DuplicatePolicy.FAIL)
    assert store.write_documents([Document(id="d1", content="x")], policy=DuplicatePolicy.SKIP) == 0


def test_delete_and_filters():
    store = EmbeddedBM25DocumentStore()
    store.write_documents(DOCS)
    filters = {"field": "meta.year", "operator": "==", "value": 1962}
    assert [doc_id for doc_id, _ in store.search_ids(["flutter"], top_k=3, filters=filters)[0]] == ["d3"]
    store.delete_documents(["d3"])
    assert [doc_id for doc_id, _ in store.search_ids(["flutter"], top_k=3)[0]] == ["d1"]


def test_persist_load_and_add_incrementally(tmp_path):
    store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "idx", analyzer={"stemmer": None})
    store.write_documents(DOCS)
    before = store.search_ids(["flutter panels"], top_k=3)
    store.save()
    loaded = EmbeddedBM25DocumentStore(index_dir=tmp_path / "idx")
    assert loaded.analyzer == Analyzer(stemmer=None)
    assert loaded.count_documents() == 3
    assert loaded.search_ids(["flutter panels"], top_k=3) == before
    loaded.write_documents([Document(id="d4", content="panels panels panels")])
    assert loaded.search_ids(["panels"], top_k=1)[0][0][0] == "d4"
    with pytest.raises(ValueError, match="re-index"):
        EmbeddedBM25DocumentStore(index_dir=tmp_path / "idx", analyzer=Analyzer())


def test_retriever_component_round_trip(tmp_path):
    store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "idx")
    store.write_documents(DOCS)
    store.save()
    retriever = EmbeddedBM25Retriever(store, top_k=2)
    documents = retriever.run(query="flutter")["documents"]
    assert [doc.id for doc in documents] == [doc_id for doc_id, _ in store.search_ids(["flutter"], top_k=2)[0]]
    assert all(doc.score > 0 for doc in documents)
    copy = EmbeddedBM25Retriever.from_dict(retriever.to_dict())
    assert [doc.id for doc in copy.run(query="flutter")["documents"]] == [doc.id for doc in documents]


def test_empty_store_and_empty_query_return_nothing():
    store = EmbeddedBM25DocumentStore()
    assert store.search_ids(["anything"], top_k=5) == [[]]
    store.write_documents(DOCS)
    assert store.search_ids(["the of and"], top_k=5) == [[]]


def test_cranfield_bm25_reaches_reference_ndcg(cranfield_dir):
    dataset = load_beir(cranfield_dir, "test")
    store = EmbeddedBM25DocumentStore()
    store.write_documents(list(dataset.documents()))
    hits = store.search_ids(list(dataset.queries.values()), top_k=100)
    run = {qid: dict(ranking) for qid, ranking in zip(dataset.queries, hits)}
    scores = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.R @ 100], dataset.qrels, run)
    assert scores[ir_measures.nDCG @ 10] >= 0.350
    assert scores[ir_measures.R @ 100] >= 0.72


def test_save_keeps_documents_that_have_no_index_terms(tmp_path):
    store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "index")
    store.write_documents([Document(id="a", content="the of and"), Document(id="b", content="")])
    store.save()
    reopened = EmbeddedBM25DocumentStore(index_dir=tmp_path / "index")
    assert sorted(doc.id for doc in reopened.filter_documents()) == ["a", "b"]
    reopened.write_documents([Document(id="c", content="wing flutter")])
    assert [doc_id for doc_id, _ in reopened.search_ids(["flutter"])[0]] == ["c"]
    assert reopened.count_documents() == 3


def test_a_refused_duplicate_leaves_the_store_unchanged():
    store = EmbeddedBM25DocumentStore()
    store.write_documents(DOCS)
    with pytest.raises(DuplicateDocumentError):
        store.write_documents([Document(id="new", content="flutter"), DOCS[0]], policy=DuplicatePolicy.FAIL)
    assert store.count_documents() == len(DOCS)
    store.write_documents([Document(id="d4", content="wing flutter")])
    assert "d4" in [doc_id for doc_id, _ in store.search_ids(["flutter"])[0]]
