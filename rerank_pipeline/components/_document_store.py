"""What the embedded BM25 and FAISS stores share: Haystack's ``DocumentStore`` protocol over a :class:`DocumentTable`.

The documents of a store opened on a folder stay on disk (the folder's snapshot, read row by row); only the changes
made since its last save are held in memory.

``write_documents`` follows ``InMemoryDocumentStore`` (``DuplicatePolicy.NONE`` means ``FAIL``) but checks the whole
batch first, so a refused call changes nothing. The by-filter methods and the ``*_async`` variants of Haystack's store
suite are here too; async calls run in a one-thread executor so the event loop is never blocked.

Persistence rule: a store with an ``index_dir`` persists every change before the call that makes it returns, so a
``DocumentWriter`` pipeline persists without extra code. The first change to a folder without an index writes a full
snapshot (atomically, see :func:`atomic_directory`); later changes are appended to the folder's journal as one
fsynced line each (a crash mid-append leaves a torn last line, which is ignored: the previous state). Once the journal
is larger than the snapshot, the change is followed by a new snapshot (which empties the journal), so the write cost
stays linear and a reopen, which replays the journal, never replays more than the snapshot holds.

Several processes: every change holds the folder's writer lock (:func:`folder_lock`) and first applies what other
processes wrote since this store read the folder (their journal lines, or their new snapshot), so no acknowledged
write is lost. A change that cannot be persisted (read-only folder, full disk) raises and leaves memory equal to the
folder.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from haystack import Document
from haystack.document_stores.errors import DuplicateDocumentError
# Private, kept on purpose: count_unique_metadata_by_filter counts values (lists, dicts) the way the
# InMemoryDocumentStore we extend hashes them; Haystack has no public equivalent.
from haystack.document_stores.in_memory.document_store import _make_metadata_value_hashable
from haystack.document_stores.types import DuplicatePolicy

from rerank_pipeline.components.document_table import DocumentTable
from rerank_pipeline.components.index_folder import (
    JOURNAL_FILE,
    SavesToIndexFolder,
    append_journal,
    folder_lock,
    open_generation,
    read_journal,
    read_settings,
    snapshot_bytes,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


def validate_filters(filters: dict[str, Any] | None) -> None:
    """Refuse filters without a top-level ``operator`` or ``conditions`` (Haystack's filter syntax)."""
    if filters and "operator" not in filters and "conditions" not in filters:
        raise ValueError(
            "Invalid filter syntax. See https://docs.haystack.deepset.ai/docs/metadata-filtering for details."
        )


class InMemoryIndexedStore(SavesToIndexFolder):
    """Base of a store that keeps ``self._documents`` (a :class:`DocumentTable`) and a search index built from them.

    Subclasses keep their index in step by overriding :meth:`_index_written` (documents added or replaced),
    :meth:`_index_removed` and :meth:`_index_cleared`; :meth:`_check_writable` refuses a batch before anything
    changes; :meth:`_stored_document` is what readers get for a stored document.
    """

    index_dir: str | None
    _documents: DocumentTable

    def _init_document_store(self) -> None:
        self._documents = DocumentTable()
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._generation: str | None = None  # the folder generation that memory reflects
        self._journal_end = 0  # bytes of that generation's journal applied to memory

    def _load(self, folder: Path, settings: dict[str, Any]) -> None:  # pragma: no cover - every store defines it
        """Read the snapshot files of ``folder`` into memory (after :meth:`_reset`)."""
        raise NotImplementedError

    def _reset(self) -> None:
        self._documents = DocumentTable()
        self._index_cleared()

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

    def _wants_snapshot(self) -> bool:
        """Whether the changes held in memory call for a new snapshot now (checked after each journaled change)."""
        return False

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
        with self._writing():
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
        with self._writing():
            removed = [doc_id for doc_id in dict.fromkeys(document_ids) if doc_id in self._documents]
            if removed:
                self._apply({"op": "delete", "ids": removed})

    def delete_all_documents(self) -> None:
        """Remove every document."""
        with self._writing():
            if self._documents:
                self._apply({"op": "clear"})

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Remove the documents matching ``filters``; returns how many."""
        validate_filters(filters)
        with self._writing():
            ids = self._documents.matching_ids(filters) if filters else list(self._documents)
            self.delete_documents(ids)
            return len(ids)

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the meta of the documents matching ``filters``; returns how many."""
        validate_filters(filters)
        with self._writing():
            updated = [
                replace(self._stored_document(document), meta={**document.meta, **meta})
                for document in self._matching(filters)
            ]
            if updated:
                self._apply({"op": "write", "documents": updated})
            return len(updated)

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Number of documents matching ``filters``."""
        validate_filters(filters)
        with self._lock:
            return len(self._documents.matching_ids(filters)) if filters else len(self._documents)

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
        """Write a snapshot of the store to ``index_dir`` (default: its own), replacing the folder atomically.

        Saving to the store's own folder first applies what other processes wrote there (under the folder's lock).
        """
        target = index_dir if index_dir is not None else self.index_dir
        if target is None:
            return super().save(target)  # raises: no folder to save to
        own = self.index_dir is None or Path(target).resolve() == Path(self.index_dir).resolve()
        with folder_lock(target), self._lock:
            if own and self.index_dir is not None:
                self._catch_up()
            path = super().save(target)
            if own:
                self._open_folder()  # memory follows the new snapshot: the changes it holds leave memory
            return path

    def attach(self, index_dir: str | Path) -> None:
        """Persist later changes into ``index_dir``, a folder just written from this store's state (reopened)."""
        with self._lock:
            self.index_dir = str(index_dir)
            self._open_folder()

    def refresh(self) -> None:
        """Apply to memory what other processes wrote to this store's folder since it was read."""
        if self.index_dir is not None:
            with folder_lock(self.index_dir), self._lock:
                self._catch_up()

    def _matching(self, filters: dict[str, Any] | None) -> Iterator[Document]:
        validate_filters(filters)
        return self._documents.matching(filters)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the folder's writer lock (when persisted) and this store's lock, with memory caught up."""
        if self.index_dir is None:
            with self._lock:
                yield
            return
        with folder_lock(self.index_dir), self._lock:
            self._catch_up()
            yield

    def _open_folder(self) -> None:
        """Load the folder's snapshot and journal into memory, as one consistent generation."""

        def load(settings: dict[str, Any]) -> tuple[str | None, int]:
            self._reset()
            self._load(Path(self.index_dir), settings)
            changes, end = read_journal(self.index_dir)
            for change in changes:
                self._apply_in_memory(change)
            return settings.get("generation"), end

        (self._generation, self._journal_end), check = open_generation(self.index_dir, load)
        if self._documents.snapshot is not None:
            self._documents.snapshot.background_check = check

    def _catch_up(self) -> None:
        """Apply what other processes wrote to the folder since memory was read: journal lines, or a new snapshot."""
        settings = read_settings(self.index_dir)
        if settings is None:
            return  # no index on disk yet: the next change writes one
        journal = Path(self.index_dir) / JOURNAL_FILE
        size = journal.stat().st_size if journal.is_file() else 0
        if settings.get("generation") != self._generation or size < self._journal_end:
            self._open_folder()
        elif size > self._journal_end:
            changes, self._journal_end = read_journal(self.index_dir, self._journal_end)
            for change in changes:
                self._apply_in_memory(change)

    def _rollback(self) -> None:
        """Make memory equal to the folder again after a change that could not be persisted."""
        if read_settings(self.index_dir) is None:
            self._reset()
            self._generation, self._journal_end = None, 0
        else:
            self._open_folder()

    def _apply(self, change: dict[str, Any]) -> None:
        """Make one change (``write`` documents, ``delete`` ids or ``clear``) and persist it before returning.

        Called under :meth:`_writing`. With a folder, the change is journaled first (or, for a folder without an
        index, written as a snapshot); when that fails, memory is left (or put back) equal to the folder.
        """
        if self.index_dir is None:
            self._apply_in_memory(change)
            return
        if read_settings(self.index_dir) is None:  # the first change to this folder: a full snapshot
            self._apply_in_memory(change)
            try:
                self.save()
            except BaseException:
                self._rollback()
                raise
            return
        journal = Path(self.index_dir) / JOURNAL_FILE
        try:
            self._journal_end = append_journal(self.index_dir, change)
        except OSError as error:
            raise OSError(f"could not write the change to {journal} ({error}); nothing was changed") from error
        try:
            self._apply_in_memory(change)
        except BaseException:
            self._rollback()
            raise
        if self._journal_end > snapshot_bytes(self.index_dir) or self._wants_snapshot():
            try:
                self.save()  # compaction once the journal outgrows the snapshot: O(1) amortized per document
            except Exception as error:  # noqa: BLE001 - the change is durable in the journal; say so and go on
                logger.warning("The change is kept in %s; compacting it into a new snapshot failed: %s", journal, error)

    def _apply_in_memory(self, change: dict[str, Any]) -> None:
        if change["op"] == "write":
            for document in change["documents"]:
                self._documents[document.id] = document
            self._index_written(change["documents"])
        elif change["op"] == "delete":
            for doc_id in change["ids"]:
                self._documents.pop(doc_id, None)
            self._index_removed(change["ids"])
        else:
            self._documents = DocumentTable()
            self._index_cleared()

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
