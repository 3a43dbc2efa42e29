"""Index folders on disk: a small settings JSON plus data files, replaced atomically.

Every index that rerank-pipeline writes (embedded BM25, FAISS, hybrid, a record of
an Elasticsearch index) is a folder holding ``index.json``; its ``backend`` key
says which store reopens it. Folders are written into a temporary sibling and then
swapped in, so a failure midway leaves the previous index (or nothing) in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from haystack import Document

SETTINGS_FILE = "index.json"
DOCUMENTS_FILE = "documents.jsonl"


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
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it replaces ``target``.

    On an exception the temporary folder is removed and ``target`` is left untouched.
    """
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
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
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
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


def write_documents_jsonl(path: str | Path, documents: Iterator[Document] | list[Document]) -> None:
    """Write documents (without embeddings) one JSON object a line."""
    with open(path, "w", encoding="utf-8") as handle:
        for document in documents:
            row = document.to_dict(flatten=False)
            row.pop("embedding", None)
            row.pop("sparse_embedding", None)
            row.pop("score", None)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_documents_jsonl(path: str | Path) -> list[Document]:
    """Read documents written by :func:`write_documents_jsonl`."""
    with open(path, encoding="utf-8") as handle:
        return [Document.from_dict(json.loads(line)) for line in handle if line.strip()]


class SavesToIndexFolder:
    """Mixin for stores persisted to a folder: :meth:`save` stages the files of ``write_to`` and swaps them in."""

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
