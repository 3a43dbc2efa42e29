"""FAISS document store: exact search equals brute force, ANN recall, replace-by-id, persistence."""

from __future__ import annotations

import json

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


# --- index_factory types, memory mapping, float32 (issue 20 item 6) -------------------------------------------------


def recall_at(found: list, truth: list, k: int) -> float:
    return float(np.mean([len({d for d, _ in f[:k]} & {d for d, _ in t[:k]}) / k for f, t in zip(found, truth)]))


@pytest.mark.parametrize("index_type", ["IVF16,Flat", "IVF16,PQ8", "SQ8", "HNSW16"])
def test_factory_strings_round_trip_through_index_json(tmp_path, index_type):
    vectors, queries = clustered(2000), clustered(10, seed=3)
    folder = tmp_path / "idx"
    store = FAISSDocumentStore(index_dir=folder, index_type=index_type, nprobe=4)
    store.write_documents(documents(vectors))
    before = store.search_ids(queries, top_k=10)
    store.save()
    settings = json.loads((folder / "index.json").read_text())
    assert settings["index_type"] == index_type and settings["faiss_factory"] == index_type
    assert settings["vector_dtype"] == "float32" and np.load(folder / "embeddings.npy").dtype == np.float32
    reopened = FAISSDocumentStore(index_dir=folder)
    assert reopened.index_type == index_type and reopened.index_memory_mapped
    assert reopened.search_ids(queries, top_k=10) == before  # the same index, nprobe restored from index.json


def test_ivf_pq_recall_at_10_against_exact_search():
    vectors, queries = clustered(4000), clustered(50, seed=4)
    exact, pq = FAISSDocumentStore(), FAISSDocumentStore(index_type="IVF32,PQ16", nprobe=8)
    exact.write_documents(documents(vectors))
    pq.write_documents(documents(vectors))
    recall = recall_at(pq.search_ids(queries, top_k=10), exact.search_ids(queries, top_k=10), 10)
    assert recall >= 0.7  # measured 0.86; a broken index (untrained, unnormalized, wrong rows) is near 0.01


def test_aliases_resolve_to_factory_strings(tmp_path):
    vectors = clustered(400)
    for alias, factory in (("flat", "Flat"), ("hnsw", "HNSW32"), ("ivf", "IVF10,Flat")):
        store = FAISSDocumentStore(index_dir=tmp_path / alias, index_type=alias)
        store.write_documents(documents(vectors))
        settings = json.loads((tmp_path / alias / "index.json").read_text())
        assert (settings["index_type"], settings["faiss_factory"]) == (alias, factory)


def test_bad_factory_strings_are_one_line_value_errors():
    with pytest.raises(ValueError, match="'Bogus12'") as refused:
        FAISSDocumentStore(index_type="Bogus12")
    assert "\n" not in str(refused.value)
    store = FAISSDocumentStore(index_type="IVF8,PQ7")  # parses; 32 dimensions do not split into 7 sub-vectors
    store.write_documents(documents(clustered(300)))
    with pytest.raises(ValueError, match="'IVF8,PQ7'") as refused:
        store.search_ids(clustered(1), top_k=1)
    assert "\n" not in str(refused.value)


def test_saved_index_is_read_memory_mapped(tmp_path, monkeypatch):
    import faiss

    from rerank_pipeline.components import faiss_store

    folder = tmp_path / "idx"
    vectors, queries = clustered(2000), clustered(5, seed=5)
    store = FAISSDocumentStore(index_dir=folder, index_type="IVF16,PQ8")
    store.write_documents(documents(vectors))
    flags = []
    real_read_index = faiss.read_index
    monkeypatch.setattr(
        faiss_store.faiss, "read_index", lambda path, *args: flags.append(args) or real_read_index(path, *args)
    )
    reopened = FAISSDocumentStore(index_dir=folder)
    assert flags == [(faiss.IO_FLAG_MMAP,)]
    ivf = faiss.extract_index_ivf(reopened._index)
    assert isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)  # lists stay on disk
    expected = store.search_ids(queries, top_k=5)
    assert reopened.search_ids(queries, top_k=5) == expected
    # a mapped, unchanged index is saved elsewhere byte for byte; an addition rebuilds it in memory
    copy = tmp_path / "copy"
    reopened.save(copy)
    assert (copy / "faiss.index").read_bytes() == (folder / "faiss.index").read_bytes()
    assert FAISSDocumentStore(index_dir=copy).search_ids(queries, top_k=5) == expected
    # another process swaps a new generation in: the mapped one stays readable (its files are unlinked, not rewritten)
    other = FAISSDocumentStore(index_dir=folder)
    other.delete_documents([f"d{i}" for i in range(1000)])
    other.save()
    assert reopened.search_ids(queries, top_k=5) == expected
    reopened.write_documents([Document(id="new", embedding=queries[0].tolist())])  # catches up, then adds
    assert reopened.count_documents() == 1001
    assert reopened.search_ids(queries[:1], top_k=1)[0][0][0] == "new" and not reopened.index_memory_mapped


def test_float64_folder_of_format_1_still_loads(tmp_path):
    from rerank_pipeline.components.index_folder import write_manifest

    folder = tmp_path / "idx"
    vectors = clustered(50)
    FAISSDocumentStore(index_dir=folder).write_documents(documents(vectors))
    np.save(folder / "embeddings.npy", vectors.astype(np.float64))  # what format 1 wrote
    settings = json.loads((folder / "index.json").read_text())
    for key in ("faiss_factory", "vector_dtype", "files", "generation"):
        settings.pop(key, None)
    (folder / "index.json").write_text(json.dumps(settings))
    write_manifest(folder)
    store = FAISSDocumentStore(index_dir=folder)
    assert store.count_documents() == 50 and store._vectors.dtype == np.float32
    assert store.search_ids(vectors[3:4], top_k=1)[0][0][0] == "d3"
    assert store.filter_documents()[3].embedding == vectors[3].tolist()  # float32 values as written


def test_the_store_holds_no_float64_array(tmp_path):
    folder = tmp_path / "idx"
    store = FAISSDocumentStore(index_dir=folder)
    store.write_documents(documents(clustered(100).astype(np.float64)))
    store.search_ids(clustered(1), top_k=3)
    reopened = FAISSDocumentStore(index_dir=folder)
    reopened.search_ids(clustered(1), top_k=3)
    for held in (store, reopened):
        arrays = [value for value in vars(held).values() if isinstance(value, np.ndarray)]
        assert arrays and all(array.dtype == np.float32 for array in arrays)
    assert isinstance(reopened._vectors, np.memmap)  # opened, not copied: embeddings.npy is mapped read-only
