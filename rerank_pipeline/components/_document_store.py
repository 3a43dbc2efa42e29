"""What the embedded BM25 and FAISS stores share: Haystack's ``DocumentStore`` protocol over documents kept in memory.

``write_documents`` follows ``InMemoryDocumentStore`` (``DuplicatePolicy.NONE`` means ``FAIL``) but checks the whole
batch first, so a refused call changes nothing. The by-filter methods and the ``*_async`` variants of Haystack's store
suite are here too; async calls run in a one-thread executor so the event loop is never blocked.

Persistence rule: a store with an ``index_dir`` persists every change before the call that makes it returns, so a
``DocumentWriter`` pipeline persists without extra code. The first change to a folder without an index writes a full
snapshot (atomically, see :func:`atomic_directory`); later changes are appended to the folder's journal as one
fsynced line each (a crash mid-append leaves a torn last line, which is ignored: the previous state). Once the journal
is larger than the snapshot, the change is followed by a new snapshot (which empties the journal), so the write cost
stays linear and a reopen, which replays the journal, never replays more than the snapshot holds.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from haystack import Document
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.in_memory.document_store import _make_metadata_value_hashable
from haystack.document_stores.types import DuplicatePolicy
from haystack.utils.filters import document_matches_filter

from rerank_pipeline.components.index_folder import (
    SavesToIndexFolder,
    append_journal,
    read_journal,
    read_settings,
    snapshot_bytes,
)

T = TypeVar("T")


def validate_filters(filters: dict[str, Any] | None) -> None:
    """Refuse filters without a top-level ``operator`` or ``conditions`` (Haystack's filter syntax)."""
    if filters and "operator" not in filters and "conditions" not in filters:
        raise ValueError(
            "Invalid filter syntax. See https://docs.haystack.deepset.ai/docs/metadata-filtering for details."
        )


class InMemoryIndexedStore(SavesToIndexFolder):
    """Base of a store that keeps ``self._documents`` (id -> Document) and a search index built from them.

    Subclasses keep their index in step by overriding :meth:`_index_written` (documents added or replaced),
    :meth:`_index_removed` and :meth:`_index_cleared`; :meth:`_check_writable` refuses a batch before anything
    changes; :meth:`_stored_document` is what readers get for a stored document.
    """

    index_dir: str | None
    _documents: dict[str, Document]

    def _init_document_store(self) -> None:
        self._documents = {}
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None

    # --- hooks ---------------------------------------------------------------------------------

    def _check_writable(self, documents: list[Document]) -> None:
        """Raise before any change when ``documents`` cannot be stored."""

    def _index_written(self, documents: list[Document]) -> None:
        """``documents`` (unique ids) were just added or replaced in ``self._documents``."""

    def _index_removed(self, document_ids: list[str]) -> None:
        """``document_ids`` were just removed from ``self._documents``."""

    def _index_cleared(self) -> None:
        """Every document was just removed."""

    def _stored_document(self, document: Document) -> Document:
        """The document handed to readers (``filter_documents``, retrieval) for a stored one."""
        return document

    # --- DocumentStore protocol ---------------------------------------------------------------

    def count_documents(self) -> int:
        """Number of stored documents."""
        return len(self._documents)

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Stored documents matching Haystack ``filters`` (all of them without filters), in write order."""
        with self._lock:
            return [self._stored_document(document) for document in self._matching(filters)]

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Store documents; an id already stored is refused (``NONE``/``FAIL``), skipped or replaced (``OVERWRITE``).

        The whole batch is checked first: a refused call stores nothing. Returns how many documents were written.
        """
        if not isinstance(documents, list) or not all(isinstance(document, Document) for document in documents):
            raise ValueError("write_documents expects a list of haystack Document objects")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.FAIL
        with self._lock:
            accepted: list[Document] = []
            seen: set[str] = set()
            for document in documents:
                if document.id in self._documents or document.id in seen:
                    if policy == DuplicatePolicy.FAIL:
                        raise DuplicateDocumentError(f"ID '{document.id}' already exists.")
                    if policy == DuplicatePolicy.SKIP:
                        continue
                seen.add(document.id)
                accepted.append(document)
            latest = list({document.id: document for document in accepted}.values())
            self._check_writable(latest)
            if latest:
                self._apply({"op": "write", "documents": latest})
            return len(accepted)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Remove documents by id (unknown ids are ignored)."""
        with self._lock:
            removed = [doc_id for doc_id in dict.fromkeys(document_ids) if doc_id in self._documents]
            if removed:
                self._apply({"op": "delete", "ids": removed})

    def delete_all_documents(self) -> None:
        """Remove every document."""
        with self._lock:
            if self._documents:
                self._apply({"op": "clear"})

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Remove the documents matching ``filters``; returns how many."""
        validate_filters(filters)
        with self._lock:
            ids = [document.id for document in self._matching(filters)]
            self.delete_documents(ids)
            return len(ids)

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the meta of the documents matching ``filters``; returns how many."""
        validate_filters(filters)
        with self._lock:
            updated = [
                replace(self._stored_document(document), meta={**document.meta, **meta})
                for document in self._matching(filters)
            ]
            if updated:
                self._apply({"op": "write", "documents": updated})
            return len(updated)

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Number of documents matching ``filters``."""
        with self._lock:
            return sum(1 for _ in self._matching(filters))

    def count_unique_metadata_by_filter(self, filters: dict[str, Any], metadata_fields: list[str]) -> dict[str, int]:
        """For each meta field (``meta.`` prefix optional), how many distinct values the matching documents hold."""
        with self._lock:
            documents = list(self._matching(filters))
        counts = {}
        for field in metadata_fields:
            key = field.removeprefix("meta.")
            counts[key] = len(
                {_make_metadata_value_hashable(doc.meta[key]) for doc in documents if doc.meta.get(key) is not None}
            )
        return counts

    def save(self, index_dir: str | Path | None = None) -> Path:
        """Write a snapshot of the store to ``index_dir`` (default: its own), replacing the folder atomically."""
        with self._lock:
            return super().save(index_dir)

    def _matching(self, filters: dict[str, Any] | None):
        if not filters:
            yield from self._documents.values()
            return
        validate_filters(filters)
        for document in self._documents.values():
            if document_matches_filter(filters=filters, document=document):
                yield document

    def _apply(self, change: dict[str, Any], persist: bool = True) -> None:
        """Make one change (``write`` documents, ``delete`` ids or ``clear``), then persist it when asked."""
        if change["op"] == "write":
            for document in change["documents"]:
                self._documents[document.id] = document
            self._index_written(change["documents"])
        elif change["op"] == "delete":
            for doc_id in change["ids"]:
                self._documents.pop(doc_id, None)
            self._index_removed(change["ids"])
        else:
            self._documents = {}
            self._index_cleared()
        if persist and self.index_dir is not None:
            if read_settings(self.index_dir) is None:
                self.save()
            elif append_journal(self.index_dir, change) > snapshot_bytes(self.index_dir):
                self.save()  # compaction once the journal outgrows the snapshot: O(1) amortized per document

    def _replay_journal(self) -> None:
        """Apply the changes journaled in ``index_dir`` since its snapshot (called after loading the snapshot)."""
        for change in read_journal(self.index_dir):
            self._apply(change, persist=False)

    # --- async variants: the same work in this store's worker thread ----------------------------

    async def _in_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{type(self).__name__}-async")
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def count_documents_async(self) -> int:
        """Async :meth:`count_documents`."""
        return self.count_documents()

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Async :meth:`filter_documents` (runs in a worker thread)."""
        return await self._in_thread(self.filter_documents, filters)

    async def write_documents_async(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        """Async :meth:`write_documents` (runs in a worker thread)."""
        return await self._in_thread(self.write_documents, documents, policy)

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        """Async :meth:`delete_documents` (runs in a worker thread)."""
        await self._in_thread(self.delete_documents, document_ids)

    async def delete_all_documents_async(self) -> None:
        """Async :meth:`delete_all_documents` (runs in a worker thread)."""
        await self._in_thread(self.delete_all_documents)

    async def delete_by_filter_async(self, filters: dict[str, Any]) -> int:
        """Async :meth:`delete_by_filter` (runs in a worker thread)."""
        return await self._in_thread(self.delete_by_filter, filters)

    async def update_by_filter_async(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Async :meth:`update_by_filter` (runs in a worker thread)."""
        return await self._in_thread(self.update_by_filter, filters, meta)

    async def count_documents_by_filter_async(self, filters: dict[str, Any]) -> int:
        """Async :meth:`count_documents_by_filter` (runs in a worker thread)."""
        return await self._in_thread(self.count_documents_by_filter, filters)

    async def count_unique_metadata_by_filter_async(
        self, filters: dict[str, Any], metadata_fields: list[str]
    ) -> dict[str, int]:
        """Async :meth:`count_unique_metadata_by_filter` (runs in a worker thread)."""
        return await self._in_thread(self.count_unique_metadata_by_filter, filters, metadata_fields)
