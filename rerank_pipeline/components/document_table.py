"""Stored documents on disk: a snapshot read row by row, under the changes made since.

A store's snapshot (written at every save by :class:`SnapshotWriter`) is four files; opening one reads none of the
documents, so it costs the same at any size, and a read touches only the rows it needs:

- ``documents.jsonl``: one document a line (everything but the score; embeddings as base64 float64), read by
  ``pread`` at the offsets of ``documents.offsets.npy`` (N + 1 byte offsets). Not memory-mapped: random reads of a
  mapped file pull their neighbours into the process's memory (fault-around), 64 KB for each row read.
- ``documents.ids.arrow``: the ids sorted, with their rows (a lookup by id is a binary search), and the id of each row.
- ``documents.meta.arrow``: one column per top-level meta key, for filters: typed (int64, float64, bool, string)
  when every value of the key has that type, else each value's JSON. Memory-mapped: a filter scans its column.

Filters (:meth:`Snapshot.mask`) are Haystack's, evaluated column by column: a comparison's verdict depends only on
the document's value of its field, so it is decided once per distinct value with Haystack's own
``document_matches_filter`` (a number column against a number is compared by Arrow directly), and turned into a row
mask by Arrow's ``is_in``; ``AND``, ``OR`` and ``NOT`` combine the masks. The result equals Haystack's on every
document (``tests/test_document_table.py`` and the store suite check it), at the cost of a pass over one column in
C, not a Document a row.

:class:`DocumentTable` is what a store holds: the snapshot, the rows deleted or replaced since, and the documents
written since (kept in memory until the next save).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import fields
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from haystack import Document
from haystack.errors import FilterError
from haystack.utils.filters import COMPARISON_OPERATORS, LOGICAL_OPERATORS, document_matches_filter

from rerank_pipeline.components.index_folder import (
    DOCUMENTS_FILE,
    BackgroundCheck,
    IndexFolderError,
    document_from_row,
    document_row,
)

OFFSETS_FILE = "documents.offsets.npy"
META_ARROW = "documents.meta.arrow"
IDS_ARROW = "documents.ids.arrow"
SNAPSHOT_FILES = (DOCUMENTS_FILE, OFFSETS_FILE, META_ARROW, IDS_ARROW)
BATCH_ROWS = 10_000  # documents a writer or a sequential reader handles at a time
IDS_SCHEMA = pa.schema([("id", pa.large_string()), ("row", pa.int64()), ("row_id", pa.large_string())])
_TYPES = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string(), "json": pa.string()}
_NUMBER_OPERATORS = {"==": pc.equal, "!=": pc.not_equal, ">": pc.greater, ">=": pc.greater_equal,
                     "<": pc.less, "<=": pc.less_equal}
_DOCUMENT_FIELDS = frozenset(f.name for f in fields(Document))


def _kind(value: Any) -> str | None:
    """The meta column type a value fits: None (missing), bool, int, float, str, or json (anything else)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "json"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else "json"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


class _MetaColumns:
    """Collects one typed column per meta key, batch by batch (compact Arrow arrays, not Python objects)."""

    def __init__(self) -> None:
        self.lengths: list[int] = []
        self.chunks: dict[str, dict[int, tuple[str, pa.Array]]] = {}  # key -> batch index -> (kind, array)

    def add(self, metas: list[dict[str, Any]]) -> None:
        index = len(self.lengths)
        self.lengths.append(len(metas))
        for key in dict.fromkeys(key for meta in metas for key in meta):
            values = [meta.get(key) for meta in metas]
            kinds = {_kind(value) for value in values} - {None}
            kind = kinds.pop() if len(kinds) == 1 else "json"
            array = pa.array([_json(v) for v in values] if kind == "json" else values, type=_TYPES[kind])
            self.chunks.setdefault(str(key), {})[index] = (kind, array)

    def table(self) -> pa.Table:
        columns, names = [], []
        for key, chunks in self.chunks.items():
            kinds = {kind for kind, array in chunks.values() if array.null_count < len(array)}
            kind = kinds.pop() if len(kinds) == 1 else ("json" if kinds else "str")
            arrays = []
            for index, length in enumerate(self.lengths):
                chunk_kind, array = chunks.get(index, (kind, pa.nulls(length, _TYPES[kind])))
                if chunk_kind != kind:
                    array = pa.array([_json(v) for v in array.to_pylist()], type=pa.string())
                arrays.append(array.cast(_TYPES[kind]))
            columns.append(pa.chunked_array(arrays, type=_TYPES[kind]))
            names.append(pa.field(key, _TYPES[kind], metadata={"kind": kind}))
        return pa.Table.from_arrays(columns, schema=pa.schema(names))


class SnapshotWriter:
    """Writes the snapshot files into ``folder`` from documents given in batches, streaming (see the module doc).

    ``unique``: raise ``ValueError`` naming an id given twice (the caller may know better: a stream where a later
    document replaces an earlier one is rewritten by its writer).
    """

    def __init__(self, folder: str | Path, unique: bool = True) -> None:
        self.folder = Path(folder)
        self.unique = unique
        self.count = 0
        self._meta_columns = _MetaColumns()
        self._id_chunks: list[pa.Array] = []
        self._offsets = [np.zeros(1, dtype=np.int64)]
        self._file = open(self.folder / DOCUMENTS_FILE, "wb")  # noqa: SIM115 - closed by close()

    def add(self, documents: list[Document]) -> None:
        """Append ``documents``."""
        for start in range(0, len(documents), BATCH_ROWS):
            self._add(documents[start : start + BATCH_ROWS])

    def _add(self, documents: list[Document]) -> None:
        rows = [_row(document) for document in documents]
        lines = [(json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8") for row in rows]
        self._file.write(b"".join(lines))
        self._offsets.append(self._offsets[-1][-1] + np.cumsum([len(line) for line in lines], dtype=np.int64))
        self._id_chunks.append(pa.array([row["id"] for row in rows], pa.large_string()))
        self._meta_columns.add([row.get("meta") or {} for row in rows])
        self.count += len(documents)

    def close(self) -> int:
        """Finish the files; returns how many documents were written."""
        self._file.close()
        np.save(self.folder / OFFSETS_FILE, np.concatenate(self._offsets))
        ids = pa.chunked_array(self._id_chunks, type=pa.large_string()).combine_chunks()
        order = pc.sort_indices(ids)
        sorted_ids = ids.take(order)
        if self.unique and len(sorted_ids) > 1:
            same = pc.equal(sorted_ids.slice(1), sorted_ids.slice(0, len(sorted_ids) - 1))
            if pc.any(same).as_py():
                position = int(np.flatnonzero(same.to_numpy(zero_copy_only=False))[0])
                raise ValueError(f"the id {sorted_ids[position].as_py()!r} occurs twice")
        table = pa.Table.from_arrays([sorted_ids, order.cast(pa.int64()), ids], schema=IDS_SCHEMA)
        _write_table(self.folder / IDS_ARROW, table)
        _write_table(self.folder / META_ARROW, self._meta_columns.table())
        return self.count


def _row(document: Document) -> dict[str, Any]:
    """A document's stored line: :func:`document_row`, built directly for the common text-and-meta document."""
    if document.blob is None and document.embedding is None and document.sparse_embedding is None:
        return {"id": document.id, "content": document.content, "meta": document.meta}
    return document_row(document, binary_embedding=True)


def write_snapshot(folder: str | Path, documents: Iterable[Document]) -> int:
    """Write ``documents`` (unique ids) as the snapshot files in ``folder``, streaming; returns how many.

    Raises ``ValueError`` naming an id that occurs twice.
    """
    writer = SnapshotWriter(folder)
    batch: list[Document] = []
    for document in documents:
        batch.append(document)
        if len(batch) == BATCH_ROWS:
            writer.add(batch)
            batch = []
    writer.add(batch)
    return writer.close()


def _write_table(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 30)


def _read_table(path: Path) -> pa.Table:
    """An Arrow IPC file, memory-mapped (zero-copy); a file that is not one raises :class:`IndexFolderError`."""
    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise IndexFolderError(f"{path}: not a readable Arrow file ({error})") from None


def open_documents(folder: str | Path) -> "DocumentTable":
    """The documents of the index in ``folder``: its snapshot.

    A folder written before snapshots (``documents.jsonl`` alone) is read whole into memory.
    """
    folder = Path(folder)
    if (folder / OFFSETS_FILE).is_file() or not (folder / DOCUMENTS_FILE).is_file():
        return DocumentTable(Snapshot(folder))
    table = DocumentTable()
    with open(folder / DOCUMENTS_FILE, "rb") as handle:
        documents = _decode([line for line in handle if line.strip()], folder / DOCUMENTS_FILE, itertools.count())
    for document in documents:
        table[document.id] = document
    if len(table) != len(documents):
        raise IndexFolderError(f"{folder / DOCUMENTS_FILE}: the same id on several lines")
    return table


class _Offsets:
    """``documents.offsets.npy`` (N + 1 int64 line offsets) read with ``pread``, not mapped: reading a row's offsets
    costs no resident page. Checked at open, a block at a time: starts at 0, rises, ends at the documents' size."""

    BLOCK = 1 << 20  # offsets checked at a time

    def __init__(self, path: Path, documents_size: int) -> None:
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                self._data = handle.tell()
        except (OSError, ValueError) as error:
            raise IndexFolderError(f"{path}: not a readable array ({error})") from None
        if len(shape) != 1 or not shape[0] or dtype != np.dtype("<i8") or fortran:
            raise IndexFolderError(f"{path}: not the line offsets of {path.parent / DOCUMENTS_FILE}")
        self.count = shape[0] - 1
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        previous = -1
        for start in range(0, shape[0], self.BLOCK):
            block = self._block(start, min(start + self.BLOCK, shape[0]), path)
            if (start == 0 and block[0] != 0) or block[0] <= previous or (np.diff(block) <= 0).any():
                raise IndexFolderError(f"{path}: not the line offsets of {path.parent / DOCUMENTS_FILE}")
            previous = int(block[-1])
        if previous != documents_size:
            raise IndexFolderError(f"{path}: not the line offsets of {path.parent / DOCUMENTS_FILE}")

    def _block(self, start: int, stop: int, path: Path | None = None) -> np.ndarray:
        data = os.pread(self._fd, 8 * (stop - start), self._data + 8 * start)
        if len(data) != 8 * (stop - start):
            raise IndexFolderError(f"{path or 'documents.offsets.npy'}: shorter than its header says")
        return np.frombuffer(data, dtype="<i8")

    def span(self, start: int, stop: int) -> tuple[np.ndarray, int]:
        """The offsets of rows ``start`` to ``stop`` (stop's too: ``stop - start + 1`` values), and the last one."""
        block = self._block(start, stop + 1)
        return block, int(block[-1])


class Snapshot:
    """The documents of one saved generation: rows read by number or id, filters as row masks."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.path = folder / DOCUMENTS_FILE
        if not self.path.is_file():
            raise IndexFolderError(f"{self.path}: missing")
        self._offsets = _Offsets(folder / OFFSETS_FILE, self.path.stat().st_size)
        self._meta = _read_table(folder / META_ARROW)
        ids = _read_table(folder / IDS_ARROW)
        if not ids.schema.equals(IDS_SCHEMA) or ids.num_rows != len(self):
            raise IndexFolderError(f"{folder / IDS_ARROW}: not the id index of {self.path}")
        if self._meta.num_columns and self._meta.num_rows != len(self):
            raise IndexFolderError(f"{folder / META_ARROW}: {self._meta.num_rows} rows, {self.path} has {len(self)}")
        self._sorted_ids, self._sorted_rows, self._row_ids = (_one_chunk(ids.column(name)) for name in IDS_SCHEMA.names)
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        self._uniques: dict[str, list[Any]] = {}  # meta key -> its distinct values (for filters), once computed
        self.background_check: BackgroundCheck | None = None  # the sha256 check of the files, when still to come

    def _check(self) -> None:
        if self.background_check is not None:
            self.background_check.check()

    def __len__(self) -> int:
        return self._offsets.count

    def row_of(self, doc_id: str) -> int | None:
        """The row holding ``doc_id``, or None."""
        self._check()
        position = bisect.bisect_left(_Keys(self._sorted_ids), doc_id)
        if position < len(self._sorted_ids) and self._sorted_ids[position].as_py() == doc_id:
            row = self._sorted_rows[position].as_py()
            if not 0 <= row < len(self):
                raise IndexFolderError(f"{IDS_ARROW}: row {row} out of range")
            return row
        return None

    def ids(self, rows: Iterable[int] | np.ndarray) -> list[str]:
        """The ids of ``rows``."""
        self._check()
        return self._row_ids.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def documents(self, rows: Iterable[int] | np.ndarray) -> list[Document]:
        """The documents of ``rows``, in that order (one ``pread`` each)."""
        self._check()
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        lines = []
        for row in rows.tolist():
            bounds, end = self._offsets.span(row, row + 1)
            lines.append(self._read(int(bounds[0]), end - int(bounds[0])))
        return _decode(lines, self.path, rows.tolist())

    def _read(self, start: int, size: int) -> bytes:
        data = os.pread(self._fd, size, start)
        while len(data) < size:  # a short read (very large blocks); an empty one means the file was cut
            more = os.pread(self._fd, size - len(data), start + len(data))
            if not more:
                raise IndexFolderError(f"{self.path}: shorter than its offsets say (truncated?)")
            data += more
        return data

    def batches(self) -> Iterator[tuple[int, list[Document]]]:
        """Every document in row order, :data:`BATCH_ROWS` at a time: ``(first row, documents)``.

        Read with ``pread`` from the file this snapshot opened, so a generation swapped in meanwhile is never mixed in.
        """
        self._check()
        for start in range(0, len(self), BATCH_ROWS):
            end = min(start + BATCH_ROWS, len(self))
            bounds, _ = self._offsets.span(start, end)
            block = self._read(int(bounds[0]), int(bounds[-1] - bounds[0]))
            bounds = bounds - bounds[0]
            lines = [block[bounds[i] : bounds[i + 1]] for i in range(end - start)]
            yield start, _decode(lines, self.path, range(start, end))

    # --- filters ----------------------------------------------------------------------------

    def mask(self, filters: dict[str, Any]) -> np.ndarray:
        """A boolean row mask: which documents match Haystack ``filters`` (as ``document_matches_filter`` says)."""
        self._check()
        return self._condition(filters)

    def _condition(self, condition: dict[str, Any]) -> np.ndarray:
        if "field" in condition:
            return self._comparison(condition)
        for key in ("operator", "conditions"):
            if key not in condition:
                raise FilterError(f"'{key}' key missing in {condition}")
        operator = condition["operator"]
        if operator not in LOGICAL_OPERATORS:
            raise FilterError(f"Unknown logical operator '{operator}'. Valid operators are: {sorted(LOGICAL_OPERATORS)}")
        masks = [self._condition(part) for part in condition["conditions"]]
        if operator == "OR":
            return reduce(np.logical_or, masks, np.zeros(len(self), dtype=bool))
        matched = reduce(np.logical_and, masks, np.ones(len(self), dtype=bool))
        return ~matched if operator == "NOT" else matched

    def _comparison(self, condition: dict[str, Any]) -> np.ndarray:
        for key in ("operator", "value"):
            if key not in condition:
                raise FilterError(f"'{key}' key missing in {condition}")
        if condition["operator"] not in COMPARISON_OPERATORS:
            raise FilterError(f"Unknown comparison operator '{condition['operator']}'. Valid operators are: "
                              f"{sorted(COMPARISON_OPERATORS)}")
        field = condition["field"]
        parts = field.split(".")
        if parts[0] == "meta" and len(parts) > 1:
            key, probe = parts[1], lambda value: Document(meta={parts[1]: value})
        elif "." in field or field in ("score", "blob", "sparse_embedding"):
            key, probe = None, None  # the same value (None) for every stored document
        elif field == "id":
            return self._column_mask(pa.chunked_array([self._row_ids]), "str", condition,
                                     lambda value: Document(id=value), cache_key=None)
        elif field in _DOCUMENT_FIELDS:  # content, meta as a whole, embedding: decided document by document
            return np.fromiter((document_matches_filter(condition, document) for _, batch in self.batches()
                                for document in batch), dtype=bool, count=len(self))
        else:
            key, probe = field, lambda value: Document(meta={field: value})  # a legacy filter: a meta key
        if key is None or key not in self._meta.column_names:
            verdict = document_matches_filter(condition, probe(None) if probe else Document(content=""))
            return np.full(len(self), verdict, dtype=bool)
        column = self._meta.column(key)
        kind = (self._meta.schema.field(key).metadata or {}).get(b"kind", b"str").decode()
        return self._column_mask(column, kind, condition, probe, cache_key=key)

    def _column_mask(self, column: pa.ChunkedArray, kind: str, condition: dict[str, Any], probe,
                     cache_key: str | None) -> np.ndarray:
        """Rows whose value in ``column`` satisfies ``condition``, each distinct value judged once by Haystack."""
        none_matches = bool(column.null_count) and document_matches_filter(condition, probe(None))
        value = condition["value"]
        if (kind in ("int", "float") and condition["operator"] in _NUMBER_OPERATORS and _exact_number(value, kind)):
            matched = _NUMBER_OPERATORS[condition["operator"]](column, value)
        else:
            distinct = self._uniques.get(cache_key) if cache_key else None
            if distinct is None:
                distinct = pc.unique(column).drop_null().to_pylist()
                if cache_key:
                    self._uniques[cache_key] = distinct
            decoded = [json.loads(v) for v in distinct] if kind == "json" else distinct
            keep = [raw for raw, v in zip(distinct, decoded) if document_matches_filter(condition, probe(v))]
            matched = pc.is_in(column, value_set=pa.array(keep, type=column.type))
        mask = _bools(matched.fill_null(False))
        if none_matches:
            mask |= _bools(column.is_null())
        return mask


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its only chunk as written (``combine_chunks`` would copy it into memory)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _bools(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], type=pa.bool_())
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def _exact_number(value: Any, kind: str) -> bool:
    """Whether Arrow compares ``value`` with a ``kind`` column exactly as Python would."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int":
        return isinstance(value, int) and -(2**63) <= value < 2**63
    return isinstance(value, float) or abs(value) <= 2**53


class _Keys:
    """The sorted id column as a sequence of str for ``bisect``."""

    def __init__(self, array: pa.Array) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> str:
        return self.array[index].as_py()


def _decode(lines: list[bytes], path: Path, rows: Iterable[int]) -> list[Document]:
    """Stored lines as Documents; a line that is not one raises :class:`IndexFolderError` naming ``path`` and row."""
    documents = []
    for line, row in zip(lines, rows):
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found a {type(data).__name__}")
            documents.append(document_from_row(data))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise IndexFolderError(f"{path}:{row + 1}: not a stored document ({error})") from None
    return documents


class DocumentTable:
    """A store's documents by id: a :class:`Snapshot` (or none), the rows removed from it since, and the documents
    written since, in memory. Iteration: the snapshot's live rows in order, then the written documents."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot
        self.hidden: set[int] = set()  # snapshot rows deleted or replaced
        self.written: dict[str, Document] = {}

    def __len__(self) -> int:
        return (len(self.snapshot) - len(self.hidden) if self.snapshot else 0) + len(self.written)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and (doc_id in self.written or self.row(doc_id) is not None)

    def row(self, doc_id: str) -> int | None:
        """The live snapshot row of ``doc_id`` (None when it is not in the snapshot, or was removed since)."""
        if self.snapshot is None:
            return None
        row = self.snapshot.row_of(doc_id)
        return None if row is None or row in self.hidden else row

    def __getitem__(self, doc_id: str) -> Document:
        document = self.get(doc_id)
        if document is None:
            raise KeyError(doc_id)
        return document

    def get(self, doc_id: str) -> Document | None:
        """The document stored under ``doc_id``, or None."""
        if doc_id in self.written:
            return self.written[doc_id]
        row = self.row(doc_id)
        return None if row is None else self.snapshot.documents([row])[0]

    def get_many(self, doc_ids: list[str]) -> list[Document]:
        """Documents by id, in the order asked (``KeyError`` for an unknown one); snapshot rows read in one go."""
        rows = {doc_id: self.row(doc_id) for doc_id in doc_ids if doc_id not in self.written}
        missing = [doc_id for doc_id, row in rows.items() if row is None]
        if missing:
            raise KeyError(missing[0])
        read = dict(zip(rows, self.snapshot.documents(list(rows.values())))) if rows else {}
        return [self.written[doc_id] if doc_id in self.written else read[doc_id] for doc_id in doc_ids]

    def __setitem__(self, doc_id: str, document: Document) -> None:
        row = self.row(doc_id)
        if row is not None:
            self.hidden.add(row)
        self.written[doc_id] = document

    def pop(self, doc_id: str, default: Any = None) -> Any:
        """Remove ``doc_id``; returns whether it was stored (``default`` when not)."""
        if self.written.pop(doc_id, None) is not None:
            return True
        row = self.row(doc_id)
        if row is None:
            return default
        self.hidden.add(row)
        return True

    def __iter__(self) -> Iterator[str]:
        """The ids, in iteration order (read from the id index: no document is read)."""
        if self.snapshot is not None:
            for start in range(0, len(self.snapshot), BATCH_ROWS):
                stop = min(start + BATCH_ROWS, len(self.snapshot))
                yield from self.snapshot.ids([row for row in range(start, stop) if row not in self.hidden])
        yield from list(self.written)

    def values(self) -> Iterator[Document]:
        """Every document: the snapshot's live rows in order, then those written since."""
        if self.snapshot is not None:
            for start, batch in self.snapshot.batches():
                for offset, document in enumerate(batch):
                    if start + offset not in self.hidden:
                        yield document
        yield from list(self.written.values())

    def matching(self, filters: dict[str, Any] | None) -> Iterator[Document]:
        """The documents matching Haystack ``filters`` (all without), in iteration order."""
        if not filters:
            yield from self.values()
            return
        if self.snapshot is not None and len(self.snapshot):
            rows = np.flatnonzero(self.snapshot_mask(filters))
            for start in range(0, len(rows), BATCH_ROWS):
                yield from self.snapshot.documents(rows[start : start + BATCH_ROWS])
        yield from [doc for doc in list(self.written.values()) if document_matches_filter(filters, doc)]

    def matching_ids(self, filters: dict[str, Any]) -> list[str]:
        """The ids of the documents matching Haystack ``filters``, in iteration order (no document is read)."""
        ids = []
        if self.snapshot is not None and len(self.snapshot):
            ids = self.snapshot.ids(np.flatnonzero(self.snapshot_mask(filters)))
        return ids + [doc.id for doc in list(self.written.values()) if document_matches_filter(filters, doc)]

    def snapshot_mask(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        """Over the snapshot's rows: live and matching ``filters`` (None when all are: no filter, none removed)."""
        if self.snapshot is None:
            return None
        mask = self.snapshot.mask(filters) if filters else None
        if self.hidden:
            mask = np.ones(len(self.snapshot), dtype=bool) if mask is None else mask
            mask[np.fromiter(self.hidden, dtype=np.int64, count=len(self.hidden))] = False
        return mask
