"""Haystack's own document-store test suites, unmodified, against both embedded stores (sync and async).

Only what the suites say a store's test class must provide is written here: the ``document_store`` fixture and
``test_write_documents`` (the default-policy behaviour the suite leaves to each store; ours is
``InMemoryDocumentStore``'s: ``DuplicatePolicy.NONE`` refuses an id already stored). The FAISS classes also override
``assert_documents_are_equal``, the hook the suite provides for a store that returns documents differently: the FAISS
store keeps vectors as float32, so the expected embeddings are compared rounded to float32 (everything else exactly).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from haystack import Document
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.testing.document_store import (
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    DocumentStoreBaseExtendedTests,
)
from haystack.testing.document_store_async import (
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    CountUniqueMetadataByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
)

from rerank_pipeline.components import EmbeddedBM25DocumentStore, FAISSDocumentStore


def as_float32(documents: list[Document]) -> list[Document]:
    """``documents`` with each embedding value rounded to float32, as the FAISS store returns them."""
    return [
        replace(doc, embedding=None if doc.embedding is None else np.float32(doc.embedding).tolist())
        for doc in documents
    ]


class Float32Embeddings:
    """What the FAISS store returns: the documents as written, embeddings rounded to float32."""

    @staticmethod
    def assert_documents_are_equal(received: list[Document], expected: list[Document]):
        assert received == as_float32(expected)


class HaystackStoreSuite(
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    CountDocumentsAsyncTest,
    WriteDocumentsAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    UpdateByFilterAsyncTest,
    CountDocumentsByFilterAsyncTest,
    CountUniqueMetadataByFilterAsyncTest,
):
    def test_write_documents(self, document_store):
        documents = [Document(id="1", content="first"), Document(id="2", content="second")]
        assert document_store.write_documents(documents) == 2
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([Document(id="1", content="changed"), Document(id="3", content="third")])
        self.assert_documents_are_equal(document_store.filter_documents(), documents)

    @pytest.mark.asyncio
    async def test_write_documents_async(self, document_store):
        documents = [Document(id="1", content="first"), Document(id="2", content="second")]
        assert await document_store.write_documents_async(documents) == 2
        with pytest.raises(DuplicateDocumentError):
            await document_store.write_documents_async([Document(id="1", content="changed")])
        self.assert_documents_are_equal(await document_store.filter_documents_async(), documents)


class TestEmbeddedBM25DocumentStoreSuite(HaystackStoreSuite):
    @pytest.fixture
    def document_store(self):
        return EmbeddedBM25DocumentStore()


class TestFAISSDocumentStoreSuite(Float32Embeddings, HaystackStoreSuite):
    @pytest.fixture
    def document_store(self):
        return FAISSDocumentStore()


def reopened_equals(store) -> None:
    """After a suite test, a new store on the same folder holds exactly the live store's documents."""
    if store.index_dir is None or store.count_documents() == 0 and not Path(store.index_dir).exists():
        return
    by_id = lambda documents: sorted(documents, key=lambda document: document.id)  # noqa: E731
    assert by_id(type(store)(index_dir=store.index_dir).filter_documents()) == by_id(store.filter_documents())


class TestFAISSDocumentStoreOnFolderSuite(Float32Embeddings, HaystackStoreSuite):
    """The same suite on a store opened on an index folder: every change also goes to disk, and a store reopened
    on the folder after each test holds the same documents."""

    @pytest.fixture
    def document_store(self, tmp_path):
        store = FAISSDocumentStore(index_dir=tmp_path / "index")
        yield store
        reopened_equals(store)


class TestEmbeddedBM25DocumentStoreOnFolderSuite(HaystackStoreSuite):
    """As above, for the BM25 store."""

    @pytest.fixture
    def document_store(self, tmp_path):
        store = EmbeddedBM25DocumentStore(index_dir=tmp_path / "index")
        yield store
        reopened_equals(store)
