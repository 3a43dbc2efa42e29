"""Index folders on disk: a small settings JSON plus data files, replaced atomically.

Every index that rerank-pipeline writes (embedded BM25, FAISS, hybrid, a record of
an Elasticsearch index) is a folder holding ``index.json``; its ``backend`` key
says which store reopens it. Folders are written into a temporary sibling and then
swapped in, so a failure midway leaves the previous index (or nothing) in place.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from haystack import Document

from rerank_pipeline.output_paths import check_replaceable_folder

SETTINGS_FILE = "index.json"
DOCUMENTS_FILE = "documents.jsonl"


def read_settings(index_dir: str | Path) -> dict[str, Any] | None:
    """The settings of the index in ``index_dir``, or None when the folder holds no index."""
    path = Path(index_dir) / SETTINGS_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


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
