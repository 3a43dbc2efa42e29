"""The embedded BM25 store's delta: writes after the matrix was built cost their own documents, are scored by the
stated rule, and a compaction gives every score of a fresh index (issue 20, item 4)."""

from __future__ import annotations

import math
import random

import pytest
from haystack import Document
from haystack.document_stores.types import DuplicatePolicy

from rerank_pipeline.components import EmbeddedBM25DocumentStore

WORDS = ("wing flutter panel supersonic heat transfer boundary layer shock wave nozzle jet noise plate cone "
         "laminar turbulent pressure drag lift").split()
QUERIES = ["wing flutter", "heat transfer boundary layer", "shock wave cone", "jet noise", "turbulent drag lift",
           "panel panel flutter", "zeppelin"]


def corpus(prefix: str, count: int, seed: int = 0) -> list[Document]:
    rng = random.Random(f"{prefix}{seed}")
    return [Document(id=f"{prefix}{i}", content=" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))),
                     meta={"year": 1950 + i % 5}) for i in range(count)]


@pytest.fixture()
def opened(tmp_path) -> EmbeddedBM25DocumentStore:
    EmbeddedBM25DocumentStore(index_dir=tmp_path / "index").write_documents(corpus("m", 300))
    store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "index")
    assert store._engine is not None and store._terms is None  # the matrix as saved, nothing analyzed
    return store


def ranked(store: EmbeddedBM25DocumentStore, query: str, top_k: int = 20, filters=None) -> list[tuple[str, float]]:
    return [(doc.id, round(doc.score, 4)) for doc in store.bm25_retrieval(query, top_k=top_k, filters=filters)]


def test_a_write_to_an_opened_folder_is_searched_without_a_rebuild(opened):
    matrix = opened._engine
    opened.write_documents([Document(id="new", content="zeppelin wing flutter")])
    assert ranked(opened, "zeppelin")[0][0] == "new"
    assert opened._engine is matrix and opened._terms is None  # no corpus re-analysis, no new matrix
    reopened = EmbeddedBM25DocumentStore(index_dir=opened.index_dir)  # the journal replays into the delta
    assert reopened._terms is None and set(reopened._delta) == {"new"}
    assert ranked(reopened, "zeppelin")[0][0] == "new"


def test_delta_documents_are_scored_by_the_stated_rule(opened):
    added = corpus("d", 12, seed=1)
    opened.write_documents(added)
    analyze = opened.analyzer.analyze
    main_terms = [analyze(doc.content) for doc in corpus("m", 300)]  # the matrix's documents, title "" indexed too
    delta_terms = {doc.id: analyze(doc.content) for doc in added}
    n = len(main_terms) + len(delta_terms)
    avgdl = sum(map(len, main_terms)) / len(main_terms)
    everything = main_terms + list(delta_terms.values())
    for query in QUERIES[:5]:
        expected = {}
        for doc_id, terms in delta_terms.items():
            score = 0.0
            for term in analyze(query):
                tf = terms.count(term)
                if tf:
                    df = sum(term in doc_terms for doc_terms in everything)
                    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                    score += idf * tf / (opened.k1 * (1 - opened.b + opened.b * len(terms) / avgdl) + tf)
            if score > 0:
                expected[doc_id] = score
        got = {doc_id: score for doc_id, score, _ in opened._search_delta([analyze(query)], 100, None)[0]}
        assert got.keys() == expected.keys() and all(got[k] == pytest.approx(expected[k], rel=1e-9) for k in got)


def test_after_compaction_every_score_equals_a_fresh_index(opened):
    opened.write_documents(corpus("d", 40, seed=2))
    replaced = [Document(id=f"m{i}", content="jet noise of a supersonic cone") for i in range(0, 30, 3)]
    opened.write_documents(replaced, policy=DuplicatePolicy.OVERWRITE)
    opened.delete_documents([f"m{i}" for i in range(1, 60, 4)] + ["d3"])
    before = {query: ranked(opened, query, 300) for query in QUERIES}
    deleted = {f"m{i}" for i in range(1, 60, 4)} | {"d3"}
    assert not any(doc_id in deleted for hits in before.values() for doc_id, _ in hits)  # deleted: never found
    jet = dict(before["jet noise"])
    assert all(f"m{i}" in jet for i in range(0, 30, 3) if f"m{i}" not in deleted)  # found by their new text
    fresh = EmbeddedBM25DocumentStore()
    fresh.write_documents(opened.filter_documents())
    opened.compact()
    assert not opened._delta and not opened._dead
    for query in QUERIES:
        assert ranked(opened, query, 300) == ranked(fresh, query, 300), query
    assert sorted(map(tuple, ranked(opened, "wing", 300))) == sorted(map(tuple, ranked(fresh, "wing", 300)))
    opened.save()  # a save compacts too: the reopened folder scores as a fresh index
    assert ranked(EmbeddedBM25DocumentStore(index_dir=opened.index_dir), "shock wave cone", 300) == ranked(
        fresh, "shock wave cone", 300)


def test_filters_apply_to_the_delta_and_the_matrix(opened):
    opened.write_documents([Document(id="new", content="wing flutter wing", meta={"year": 1999})])
    year = {"field": "meta.year", "operator": "==", "value": 1999}
    assert [doc_id for doc_id, _ in ranked(opened, "wing flutter", filters=year)] == ["new"]
    older = {"field": "meta.year", "operator": "<", "value": 1952}
    hits = opened.bm25_retrieval("wing flutter", top_k=50, filters=older)
    assert hits and all(hit.meta["year"] < 1952 for hit in hits)


def test_a_large_delta_is_folded_into_a_new_matrix(opened, monkeypatch):
    import rerank_pipeline.components.bm25 as bm25

    monkeypatch.setattr(bm25, "DELTA_MIN", 10)
    matrix = opened._engine
    opened.write_documents(corpus("d", 40, seed=3))  # over 10% of 340 documents and over DELTA_MIN
    ranked(opened, "wing")
    assert opened._engine is not matrix and not opened._delta
