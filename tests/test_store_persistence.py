"""Stores opened on an index folder keep what is written to them, and the retrievers follow Haystack's conventions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack.document_stores.types import FilterPolicy

from rerank_pipeline.components import (
    EmbeddedBM25DocumentStore,
    EmbeddedBM25Retriever,
    FAISSDocumentStore,
    FAISSEmbeddingRetriever,
)
from rerank_pipeline.components.index_folder import JOURNAL_FILE

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    Document(id="a", content="supersonic flutter of wing panels", meta={"year": 1960}, embedding=[1.0, 0.0, 0.0]),
    Document(id="b", content="heat transfer in hypersonic flow", meta={"year": 1962}, embedding=[0.0, 1.0, 0.0]),
    Document(id="c", content="panel flutter at high mach number", meta={"year": 1962}, embedding=[0.9, 0.1, 0.0]),
]
REOPEN = """
import json, sys
from rerank_pipeline.components import {cls}
store = {cls}(index_dir=sys.argv[1])
print(json.dumps({{d.id: [d.content, d.embedding] for d in store.filter_documents()}}))
"""


def stored_embedding(cls: type, embedding: list[float]) -> list[float]:
    """What a store gives back for ``embedding``: the FAISS store keeps float32 (its documented contract)."""
    return [float(np.float32(value)) for value in embedding] if cls is FAISSDocumentStore else embedding


def reopen_in_new_process(cls: type, folder: Path) -> dict:
    script = REOPEN.format(cls=cls.__name__)
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cls", [EmbeddedBM25DocumentStore, FAISSDocumentStore])
def test_a_document_writer_pipeline_persists_without_extra_code(cls, tmp_path):
    folder = tmp_path / "index"
    for batch in (DOCS[:2], DOCS[2:]):  # the first write creates the folder, the second goes to its journal
        pipeline = Pipeline()
        pipeline.add_component("writer", DocumentWriter(document_store=cls(index_dir=folder)))
        pipeline.run({"writer": {"documents": batch}})
    assert (folder / JOURNAL_FILE).is_file()
    expected = {d.id: [d.content, stored_embedding(cls, d.embedding)] for d in DOCS}
    assert reopen_in_new_process(cls, folder) == expected
    cls(index_dir=folder).delete_documents(["b"])
    del expected["b"]
    assert reopen_in_new_process(cls, folder) == expected


def test_a_torn_journal_line_is_ignored_and_cut_off(tmp_path):
    folder = tmp_path / "index"
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    store.write_documents(DOCS[:1])
    store.write_documents(DOCS[1:2])
    with open(folder / JOURNAL_FILE, "a", encoding="utf-8") as handle:
        handle.write('{"op": "write", "documents": [{"id": "x", "cont')  # a crash mid-append
    assert sorted(d.id for d in EmbeddedBM25DocumentStore(index_dir=folder).filter_documents()) == ["a", "b"]
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(DOCS[2:])
    reopened = EmbeddedBM25DocumentStore(index_dir=folder)
    assert sorted(d.id for d in reopened.filter_documents()) == ["a", "b", "c"]
    assert reopened.bm25_retrieval("flutter", top_k=1)[0].id in {"a", "c"}


def test_save_compacts_the_journal(tmp_path):
    folder = tmp_path / "index"
    store = FAISSDocumentStore(index_dir=folder)
    store.write_documents(DOCS[:1])
    store.write_documents(DOCS[1:])
    assert (folder / JOURNAL_FILE).is_file()
    store.save()
    assert not (folder / JOURNAL_FILE).exists()
    assert FAISSDocumentStore(index_dir=folder).filter_documents() == store.filter_documents()


def bm25_retriever(**kwargs) -> EmbeddedBM25Retriever:
    store = EmbeddedBM25DocumentStore()
    store.write_documents(DOCS)
    return EmbeddedBM25Retriever(store, **kwargs)


def faiss_retriever(**kwargs) -> FAISSEmbeddingRetriever:
    store = FAISSDocumentStore()
    store.write_documents(DOCS)
    return FAISSEmbeddingRetriever(store, **kwargs)


RETRIEVERS = {
    "bm25": (bm25_retriever, {"query": "flutter panel"}),
    "faiss": (faiss_retriever, {"query_embedding": [1.0, 0.05, 0.0]}),
}


@pytest.mark.parametrize("kind", RETRIEVERS)
def test_filter_policy_replace_and_merge(kind):
    make, inputs = RETRIEVERS[kind]
    year_1962 = {"field": "meta.year", "operator": "==", "value": 1962}
    only_a = {"field": "id", "operator": "==", "value": "a"}
    replacing = make(filters=year_1962)
    assert {d.id for d in replacing.run(**inputs)["documents"]} == {"c"} | ({"b"} if kind == "faiss" else set())
    assert [d.id for d in replacing.run(**inputs, filters=only_a)["documents"]] == ["a"]
    merging = make(filters=year_1962, filter_policy=FilterPolicy.MERGE)
    assert merging.run(**inputs, filters=only_a)["documents"] == []  # year 1962 AND id a: nothing
    copy = type(merging).from_dict(merging.to_dict())
    assert copy.filter_policy == FilterPolicy.MERGE and merging.to_dict()["init_parameters"]["filter_policy"] == "merge"


@pytest.mark.parametrize("kind", RETRIEVERS)
def test_top_k_is_checked_at_init_and_at_run(kind):
    make, inputs = RETRIEVERS[kind]
    with pytest.raises(ValueError, match="top_k"):
        make(top_k=0)
    retriever = make(top_k=2)
    assert len(retriever.run(**inputs)["documents"]) == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match="top_k"):
            retriever.run(**inputs, top_k=bad)


@pytest.mark.parametrize(("retriever", "store", "wrong"), [
    (EmbeddedBM25Retriever, "EmbeddedBM25DocumentStore", FAISSDocumentStore),
    (FAISSEmbeddingRetriever, "FAISSDocumentStore", EmbeddedBM25DocumentStore),
])
def test_a_wrong_store_type_is_a_type_error_as_in_haystack(retriever, store, wrong):
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever

    with pytest.raises(TypeError, match="document_store must be an instance of InMemoryDocumentStore"):
        InMemoryBM25Retriever(document_store=EmbeddedBM25DocumentStore())  # the convention followed
    with pytest.raises(TypeError, match=f"document_store must be an instance of {store}, got {wrong.__name__}"):
        retriever(wrong())
    with pytest.raises(TypeError, match=f"must be an instance of {store}, got dict"):
        retriever({"type": store})  # e.g. a serialized store passed where the store belongs


@pytest.mark.parametrize("kind", RETRIEVERS)
def test_scale_score_maps_scores_like_the_in_memory_retrievers(kind):
    make, inputs = RETRIEVERS[kind]
    raw = make().run(**inputs)["documents"]
    scaled = make(scale_score=True).run(**inputs)["documents"]
    assert [d.id for d in scaled] == [d.id for d in raw]
    for plain, mapped in zip(raw, scaled):
        if kind == "faiss":
            assert mapped.score == pytest.approx((plain.score + 1) / 2)
        else:
            assert mapped.score == pytest.approx(1 / (1 + 2.718281828459045 ** (-plain.score / 8)))
    assert make(scale_score=True).run(**inputs, scale_score=False)["documents"] == raw


@pytest.mark.parametrize("kind", RETRIEVERS)
def test_run_async_in_an_async_pipeline_equals_run(kind):
    make, inputs = RETRIEVERS[kind]
    retriever = make(top_k=2)
    pipeline = Pipeline()
    pipeline.add_component("retriever", retriever)
    result = asyncio.run(pipeline.run_async({"retriever": inputs}))
    assert result["retriever"]["documents"] == retriever.run(**inputs)["documents"]


def test_the_journal_is_compacted_once_it_outgrows_the_snapshot(tmp_path):
    from rerank_pipeline.components.index_folder import snapshot_bytes

    folder = tmp_path / "index"
    store = FAISSDocumentStore(index_dir=folder)
    sizes = []
    for i in range(40):
        store.write_documents([Document(id=f"x{i}", content=f"document {i}", embedding=[float(i), 1.0, 0.0])])
        journal = folder / JOURNAL_FILE
        sizes.append(journal.stat().st_size if journal.exists() else 0)
        assert sizes[-1] <= snapshot_bytes(folder)
    assert 0 in sizes[2:] and max(sizes) > 0  # journaled, then compacted into a new snapshot
    assert FAISSDocumentStore(index_dir=folder).filter_documents() == store.filter_documents()
