"""FAISS document store: exact search equals brute force, ANN recall, replace-by-id, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from haystack import Document
from haystack.document_stores.types import DuplicatePolicy

from rerank_pipeline.components import FAISSDocumentStore, FAISSEmbeddingRetriever


def clustered(count: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    return (centers[rng.integers(0, clusters, count)] + 0.3 * rng.normal(size=(count, dim))).astype(np.float32)


def documents(vectors: np.ndarray, prefix: str = "d") -> list[Document]:
    return [Document(id=f"{prefix}{i}", content=f"doc {i}", embedding=v.tolist()) for i, v in enumerate(vectors)]


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_search_matches_brute_force_cosine():
    vectors = clustered(300)
    store = FAISSDocumentStore()
    store.write_documents(documents(vectors))
    queries = clustered(5, seed=1)
    expected = np.argsort(-(unit(queries) @ unit(vectors).T), axis=1)[:, :10]
    hits = store.search_ids(queries, top_k=10)
    assert [[int(d[1:]) for d, _ in row] for row in hits] == expected.tolist()
    best = expected[0, 0]
    assert hits[0][0][1] == pytest.approx(float(unit(queries)[0] @ unit(vectors)[best]), rel=1e-5)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_ann_recall_close_to_exact(index_type):
    vectors, queries = clustered(2000), clustered(20, seed=2)
    exact, approx = FAISSDocumentStore(), FAISSDocumentStore(index_type=index_type, nprobe=8)
    exact.write_documents(documents(vectors))
    approx.write_documents(documents(vectors))
    truth = exact.search_ids(queries, top_k=20)
    found = approx.search_ids(queries, top_k=20)
    recall = np.mean([len({d for d, _ in a} & {d for d, _ in t}) / 20 for a, t in zip(found, truth)])
    assert recall >= 0.9


def test_replace_by_id_and_additions_after_search():
    vectors = clustered(50)
    store = FAISSDocumentStore(index_type="hnsw")
    store.write_documents(documents(vectors))
    store.search_ids(vectors[:1], top_k=1)
    moved = Document(id="d0", content="moved", embedding=vectors[7].tolist())
    store.write_documents([moved], policy=DuplicatePolicy.OVERWRITE)
    store.write_documents([Document(id="new", content="added", embedding=vectors[9].tolist())])
    assert store.count_documents() == 51
    top = {d for d, _ in store.search_ids(vectors[7:8], top_k=2)[0]}
    assert top == {"d0", "d7"}
    assert {d for d, _ in store.search_ids(vectors[9:10], top_k=2)[0]} == {"d9", "new"}


def test_persist_and_reload(tmp_path):
    vectors = clustered(100)
    for index_type in ("flat", "hnsw"):
        store = FAISSDocumentStore(index_dir=tmp_path / index_type, index_type=index_type, embedding_model="m")
        store.write_documents(documents(vectors))
        before = store.search_ids(vectors[:3], top_k=5)
        store.save()
        loaded = FAISSDocumentStore(index_dir=tmp_path / index_type)
        assert loaded.index_type == index_type and loaded.embedding_model == "m"
        assert loaded.search_ids(vectors[:3], top_k=5) == before
        assert (tmp_path / index_type / "faiss.index").is_file() == (index_type == "hnsw")


def test_bad_input_is_refused():
    store = FAISSDocumentStore()
    store.write_documents(documents(clustered(5)))
    with pytest.raises(ValueError, match="dimension"):
        store.write_documents([Document(id="ok", embedding=[0.0] * 32), Document(id="y", embedding=[1.0, 0.0])])
    assert store.count_documents() == 5  # the whole batch was refused
    with pytest.raises(ValueError, match="index_type"):
        FAISSDocumentStore(index_type="lsh")


def test_documents_without_embedding_are_kept_but_never_searched(tmp_path):
    vectors = clustered(5)
    store = FAISSDocumentStore(index_dir=tmp_path / "idx")
    store.write_documents([*documents(vectors), Document(id="plain", content="no vector", meta={"part": 1})])
    assert store.count_documents() == 6
    assert [d.id for d in store.filter_documents({"field": "meta.part", "operator": "==", "value": 1})] == ["plain"]
    assert "plain" not in {d for d, _ in store.search_ids(vectors, top_k=10)[0]}
    # replacing an embedded document by one without embedding takes it out of vector search too
    store.write_documents([Document(id="d0", content="now plain")], policy=DuplicatePolicy.OVERWRITE)
    assert "d0" not in {d for d, _ in store.search_ids(vectors[:1], top_k=10)[0]}
    reopened = FAISSDocumentStore(index_dir=tmp_path / "idx")
    embeddings = {d.id: d.embedding for d in store.filter_documents()}
    assert {d.id: d.embedding for d in reopened.filter_documents()} == embeddings
    assert len(reopened.search_ids(vectors[:1], top_k=10)[0]) == 4


def test_embeddings_come_back_rounded_to_float32():
    """The documented contract: vectors are kept as float32, so each value comes back as float(np.float32(x))."""
    store = FAISSDocumentStore()
    written = [0.1, 0.2, 0.30000000000000004]
    store.write_documents([Document(id="x", content="text", embedding=written)])
    as_float32 = [float(np.float32(value)) for value in written]
    assert store.filter_documents() == [Document(id="x", content="text", embedding=as_float32)]
    assert as_float32 != written  # the rounding is real, and it is what readers get
    retriever = FAISSEmbeddingRetriever(store, return_embedding=True)
    assert retriever.run(query_embedding=[0.1, 0.2, 0.3])["documents"][0].embedding == as_float32
    assert FAISSEmbeddingRetriever(store).run(query_embedding=[0.1, 0.2, 0.3])["documents"][0].embedding is None


def test_retriever_component_with_filters(tmp_path):
    vectors = clustered(40)
    docs = documents(vectors)
    for i, doc in enumerate(docs):
        doc.meta["part"] = i % 2
    store = FAISSDocumentStore(index_dir=tmp_path / "idx")
    store.write_documents(docs)
    store.save()
    retriever = FAISSEmbeddingRetriever(store, top_k=5, filters={"field": "meta.part", "operator": "==", "value": 1})
    found = retriever.run(query_embedding=vectors[0].tolist())["documents"]
    assert len(found) == 5 and all(doc.meta["part"] == 1 for doc in found)
    copy = FAISSEmbeddingRetriever.from_dict(retriever.to_dict())
    assert [d.id for d in copy.run(query_embedding=vectors[0].tolist())["documents"]] == [d.id for d in found]
