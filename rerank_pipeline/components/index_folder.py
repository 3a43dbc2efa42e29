"""Index folders on disk: a small settings JSON plus data files, replaced atomically.

Every index that rerank-pipeline writes (embedded BM25, FAISS, hybrid, a record of
an Elasticsearch index) is a folder holding ``index.json``; its ``backend`` key
says which store reopens it. Folders are written into a temporary sibling and then
swapped in, so a failure midway leaves the previous index (or nothing) in place.
"""

from __future__ import annotations

import base64
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document

from rerank_pipeline.output_paths import check_replaceable_folder

logger = logging.getLogger(__name__)

SETTINGS_FILE = "index.json"
DOCUMENTS_FILE = "documents.jsonl"
JOURNAL_FILE = "journal.jsonl"


def read_settings(index_dir: str | Path) -> dict[str, Any] | None:
    """The settings of the index in ``index_dir``, or None when the folder holds no index."""
    path = Path(index_dir) / SETTINGS_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def require_index(index_dir: str | Path) -> None:
    """Raise ``FileNotFoundError`` naming ``index_dir`` when it holds no index (missing, moved or deleted)."""
    if read_settings(index_dir) is None:
        state = "has no index.json" if Path(index_dir).is_dir() else "does not exist"
        raise FileNotFoundError(
            f"index folder {index_dir} {state} (moved or deleted?); build it with `rerank-pipeline index` "
            "or export the pipeline again with the folder's new path"
        )


def write_settings(folder: str | Path, settings: dict[str, Any]) -> None:
    """Write ``index.json`` into ``folder``."""
    with open(Path(folder) / SETTINGS_FILE, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2, sort_keys=True)
        handle.write("\n")


@contextmanager
def atomic_directory(
    target: str | Path, marker: str | None = SETTINGS_FILE, what: str = "index folder"
) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it replaces ``target``.

    An existing ``target`` is replaced only when it is empty or holds ``marker`` (``None``: any folder), so a
    folder of other files is refused (:class:`~rerank_pipeline.output_paths.OutputPathError`) before anything is
    written. On an exception the temporary folder is removed and ``target`` is left untouched. Staging folders
    left by a killed run are removed first.
    """
    check_replaceable_folder(target, marker, what, overwrite=marker is None)
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the index should get a normal folder's permissions
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.rmdir(retired)
        os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        if retired is not None:
            os.replace(retired, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-*``/``.NAME.old-*`` siblings of ``target`` left by a killed run; return them.

    A staging folder carries its writer's process id; one whose process is still running is left alone.
    """
    removed = []
    for kind in ("tmp", "old"):
        for folder in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"):
            owner = folder.name[len(f".{target.name}.{kind}-"):].split("-", 1)[0]
            if folder.is_dir() and not (owner.isdigit() and _process_is_running(int(owner))):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_index_dir(index_dir: str | Path) -> Path:
    """Refuse, before any work, an ``index_dir`` that is a file or a folder of other files (not an index).

    An index is written only into a new folder, an empty folder or an existing index folder (holding
    ``index.json``), so a folder of unrelated files is never replaced.
    """
    return check_replaceable_folder(index_dir, SETTINGS_FILE, "index folder")


def document_row(document: Document, binary_embedding: bool = False) -> dict[str, Any]:
    """A stored document as a JSON object (everything but the query-dependent ``score``).

    ``binary_embedding`` writes the embedding as base64 float64 bytes (exact, and far faster to write and read than
    decimal floats); :func:`document_from_row` reads both forms.
    """
    row = replace(document, embedding=None, score=None).to_dict(flatten=False)  # to_dict deep-copies every float
    row.pop("score", None)
    if document.embedding is not None:
        row["embedding"] = (
            {"float64_base64": base64.b64encode(np.asarray(document.embedding, dtype="<f8").tobytes()).decode()}
            if binary_embedding
            else list(document.embedding)
        )
    return row


def document_from_row(row: dict[str, Any]) -> Document:
    """Inverse of :func:`document_row`."""
    embedding = row.get("embedding")
    if isinstance(embedding, dict):
        row = {**row, "embedding": np.frombuffer(base64.b64decode(embedding["float64_base64"]), dtype="<f8").tolist()}
    return Document.from_dict(row)


def write_documents_jsonl(path: str | Path, documents: Iterator[Document] | list[Document]) -> None:
    """Write documents one JSON object a line."""
    with open(path, "w", encoding="utf-8") as handle:
        for document in documents:
            handle.write(json.dumps(document_row(document), ensure_ascii=False) + "\n")


def read_documents_jsonl(path: str | Path) -> list[Document]:
    """Read documents written by :func:`write_documents_jsonl`."""
    with open(path, encoding="utf-8") as handle:
        return [document_from_row(json.loads(line)) for line in handle if line.strip()]


def snapshot_bytes(index_dir: str | Path) -> int:
    """Size of the index files in ``index_dir``, the journal left out."""
    return sum(
        path.stat().st_size for path in Path(index_dir).rglob("*") if path.is_file() and path.name != JOURNAL_FILE
    )


def append_journal(index_dir: str | Path, change: dict[str, Any]) -> int:
    """Append one store change (``{"op": "write", "documents": [...]}``, ``delete`` ids, ``clear``) to the journal.

    The line is written with one ``write`` call and fsynced before returning; a crash midway leaves a line without
    its newline, which :func:`read_journal` ignores and the next append cuts off. Returns the journal's size.
    """
    record = dict(change)
    if "documents" in record:
        record["documents"] = [document_row(document, binary_embedding=True) for document in record["documents"]]
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path = Path(index_dir) / JOURNAL_FILE
    with open(path, "a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":  # a torn line from an interrupted append: cut it off
                handle.seek(0)
                handle.truncate(handle.read().rfind(b"\n") + 1)
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def read_journal(index_dir: str | Path) -> list[dict[str, Any]]:
    """The complete changes journaled in ``index_dir`` (a torn last line, from a crash, is left out)."""
    path = Path(index_dir) / JOURNAL_FILE
    if not path.is_file():
        return []
    changes = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                logger.warning("Ignoring an incomplete last change in %s (interrupted write)", path)
                break
            change = json.loads(line)
            if "documents" in change:
                change["documents"] = [document_from_row(row) for row in change["documents"]]
            changes.append(change)
    return changes


class SavesToIndexFolder:
    """Mixin for stores persisted to a folder: :meth:`save` stages the files of ``write_to`` and swaps them in
    (the new folder holds no journal: a save is a compaction)."""

    index_dir: str | None

    def write_to(self, folder: Path) -> None:  # pragma: no cover - every store defines it
        raise NotImplementedError

    def save(self, index_dir: str | Path | None = None) -> Path:
        """Write the index to ``index_dir`` (default: the store's own), replacing it atomically."""
        target = index_dir or self.index_dir
        if target is None:
            raise ValueError("no index_dir: pass one to save() or to the store")
        with atomic_directory(target) as staging:
            self.write_to(staging)
        if self.index_dir is None:
            self.index_dir = str(target)
        return Path(target)
