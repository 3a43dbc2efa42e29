"""Index folders on disk: a settings JSON that is also the manifest of its data files, replaced atomically.

Every index that rerank-pipeline writes (embedded BM25, FAISS, hybrid, a record of an Elasticsearch index) is a
folder holding ``index.json``; its ``backend`` key says which store reopens it. The folder is one *generation*:

- **Manifest.** ``index.json`` names the generation (a random id) and every data file with its size and sha256
  (``files``), as Lucene's ``segments_N`` does. :func:`open_generation` verifies the files before loading and
  checks the generation did not change while it read, so a reader never mixes two saves, and a damaged, shuffled
  or truncated file is named in an :class:`IndexFolderError`. The journal (appended to, see below) and nested
  index folders (which carry their own manifest) are not listed.
- **One writer.** :func:`folder_lock` is a file lock (``.NAME.lock`` beside the folder; ``.NAME.lock.holder``
  names the holder) held by every change; a second writer waits up to :data:`LOCK_TIMEOUT_S` seconds, then fails
  with one line naming the holder.
- **No crash window.** :func:`atomic_directory` stages the new generation in ``.NAME.tmp-*/new``, fsyncs it, moves
  the live folder into ``.NAME.old-*/previous`` and the new one in. Both containers carry a marker file naming
  their creator; only marked containers are ever removed, and only while the live folder exists. A kill between the
  two renames leaves no live folder: :func:`read_settings` then puts the staged (complete) or previous generation
  back, so an index is never reported as empty.
- **Journal.** Changes after a snapshot are appended to ``journal.jsonl`` one fsynced line each; each line is
  checked as untrusted input (:func:`read_journal`).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from filelock import FileLock
from filelock import Timeout as LockTimeout
from haystack import Document

from rerank_pipeline.output_paths import check_replaceable_folder
from rerank_pipeline.provenance import file_sha256

logger = logging.getLogger(__name__)

SETTINGS_FILE = "index.json"
DOCUMENTS_FILE = "documents.jsonl"
JOURNAL_FILE = "journal.jsonl"
STAGING_MARKER = ".rerank-pipeline-staging.json"  # in each .NAME.tmp-*/.NAME.old-* container this package made
LOCK_TIMEOUT_S = float(os.environ.get("RERANK_PIPELINE_LOCK_TIMEOUT", "60"))
JOURNAL_OPS = ("write", "delete", "clear")
OPEN_ATTEMPTS = 5  # a reader retries when a writer swapped the folder in while it read
VERIFY_AT_OPEN_BYTES = 32 << 20  # larger data files are checked by size at open, by sha256 in the background
DIFFERS = f"content differs from {SETTINGS_FILE}'s sha256 (damaged, or changed by another program)"
LOAD_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError, OSError)  # what bad data raises

T = TypeVar("T")


class IndexFolderError(ValueError):
    """A file of an index folder is missing, damaged or not of this generation; the message names the file."""


class IndexFolderLocked(IndexFolderError):
    """Another writer holds the index folder's lock past the timeout; the message names it."""


# --------------------------------------------------------------------------------------------- settings / manifest


def read_settings(index_dir: str | Path) -> dict[str, Any] | None:
    """The settings of the index in ``index_dir``, or None when the folder holds no index.

    A swap interrupted by a crash (no live folder, a complete staged or previous generation beside it) is
    recovered first. A settings file that is not a JSON object raises :class:`IndexFolderError` naming it.
    """
    path = Path(index_dir) / SETTINGS_FILE
    if not path.is_file() and not recover_interrupted_swap(index_dir):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFolderError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(settings, dict):
        raise IndexFolderError(f"{path}: expected a JSON object, found a {type(settings).__name__}")
    return settings


def require_index(index_dir: str | Path) -> None:
    """Raise ``FileNotFoundError`` naming ``index_dir`` when it holds no index (missing, moved or deleted)."""
    if read_settings(index_dir) is None:
        state = "has no index.json" if Path(index_dir).is_dir() else "does not exist"
        raise FileNotFoundError(
            f"index folder {index_dir} {state} (moved or deleted?); build it with `rerank-pipeline index` "
            "or export the pipeline again with the folder's new path"
        )


def write_settings(folder: str | Path, settings: dict[str, Any]) -> None:
    """Write ``index.json`` into ``folder`` (a staging folder; :func:`atomic_directory` adds the manifest)."""
    with open(Path(folder) / SETTINGS_FILE, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _data_files(folder: Path) -> Iterator[Path]:
    """The files a generation's manifest lists: all but ``index.json``, the journal and nested index folders."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if not (entry / SETTINGS_FILE).is_file():
                for path in _data_files(entry):
                    yield path
        elif entry.name not in (SETTINGS_FILE, JOURNAL_FILE):
            yield entry


def write_manifest(folder: str | Path) -> str:
    """Record a new generation id and every data file's size and sha256 in ``folder``'s ``index.json``."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in _data_files(folder)
    }
    generation = uuid.uuid4().hex
    write_settings(folder, {**(read_settings(folder) or {}), "generation": generation, "files": files})
    return generation


class BackgroundCheck:
    """The sha256 check of a generation's large files, run in a daemon thread after open; :meth:`check` raises
    :class:`IndexFolderError` naming a file found to differ (from then on, at every call)."""

    def __init__(self, files: list[tuple[Any, str, Path]]) -> None:
        self.message: str | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(files,), daemon=True, name="index-folder-sha256").start()

    def _run(self, files: list[tuple[Any, str, Path]]) -> None:
        try:
            for handle, expected, path in files:
                digest, block = hashlib.sha256(), bytearray(1 << 20)  # one buffer: no allocation a block
                with handle:
                    while size := handle.readinto(block):
                        digest.update(memoryview(block)[:size])
                    if digest.hexdigest() != expected:
                        self.message = f"{path}: {DIFFERS}"
                        logger.error("%s", self.message)
                        return
        finally:
            for handle, _, _ in files:
                handle.close()
            self.done.set()

    def check(self) -> None:
        """Raise when the check found a damaged file."""
        if self.message is not None:
            raise IndexFolderError(self.message)


def verify_manifest(folder: str | Path, settings: dict[str, Any],
                    deferred: list[tuple[Any, str, Path]] | None = None) -> None:
    """Raise :class:`IndexFolderError` naming the first file that is missing or differs from the manifest.

    Sizes are always checked; sha256 too, except for files over :data:`VERIFY_AT_OPEN_BYTES` when ``deferred`` is
    given: their open handles are appended to it for a :class:`BackgroundCheck`. A folder written before manifests
    existed (no ``files`` key) is not checked.
    """
    files = settings.get("files")
    if files is None:
        return
    folder = Path(folder)
    if not isinstance(files, dict):
        raise IndexFolderError(f"{folder / SETTINGS_FILE}: 'files' is not an object")
    for name, expected in files.items():
        path = folder / name
        if not isinstance(expected, dict) or ".." in Path(name).parts or Path(name).is_absolute():
            raise IndexFolderError(f"{folder / SETTINGS_FILE}: bad manifest entry {name!r}")
        if not path.is_file():
            raise IndexFolderError(f"{path}: missing (listed in {SETTINGS_FILE})")
        size = path.stat().st_size
        if size != expected.get("size"):
            raise IndexFolderError(
                f"{path}: {size} bytes, {SETTINGS_FILE} says {expected.get('size')} (damaged, or changed by another "
                "program)"
            )
        if deferred is not None and size > VERIFY_AT_OPEN_BYTES:
            deferred.append((open(path, "rb"), expected.get("sha256"), path))  # noqa: SIM115 - closed by the check
        elif file_sha256(path) != expected.get("sha256"):
            raise IndexFolderError(f"{path}: {DIFFERS}")


def open_generation(
    index_dir: str | Path, load: Callable[[dict[str, Any]], T]
) -> tuple[T, BackgroundCheck | None]:
    """Verify the folder's files, then ``load(settings)``; retried when a writer swapped a new generation in.

    Returns what ``load`` returned and the :class:`BackgroundCheck` of the large files (None when there are none):
    opening costs the same at any size. Errors of a generation that stayed in place are re-raised; the errors bad
    data causes in ``load`` (a missing key, a bad index, a truncated array: :data:`LOAD_ERRORS`) as an
    :class:`IndexFolderError` naming the folder.
    """
    folder = Path(index_dir)
    for _ in range(OPEN_ATTEMPTS):
        settings = read_settings(folder)
        if settings is None:
            raise FileNotFoundError(f"index folder {folder} has no {SETTINGS_FILE}")
        deferred: list[tuple[Any, str, Path]] = []
        try:
            verify_manifest(folder, settings, deferred)
            result = load(settings)
        except Exception as error:  # noqa: BLE001 - judged below: a swapped folder is retried, else named
            for handle, _, _ in deferred:
                handle.close()
            if _generation(folder) != settings.get("generation"):
                continue
            if isinstance(error, IndexFolderError) or not isinstance(error, LOAD_ERRORS):
                raise  # named already, or a bug rather than bad data: keep its traceback
            raise IndexFolderError(f"{folder}: cannot load the index ({type(error).__name__}: {error})") from error
        if _generation(folder) == settings.get("generation"):
            return result, BackgroundCheck(deferred) if deferred else None
        for handle, _, _ in deferred:
            handle.close()
    raise IndexFolderError(f"{folder}: replaced {OPEN_ATTEMPTS} times while it was being opened; try again")


def _generation(folder: Path) -> str | None:
    try:
        return (read_settings(folder) or {}).get("generation")
    except IndexFolderError:
        return None


# --------------------------------------------------------------------------------------------- one writer


class _FolderLock:
    """This process's hold on one folder's lock: a thread lock, then the file lock for the outermost holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.threads = threading.RLock()
        self.file = FileLock(str(path), thread_local=False)
        self.depth = 0


_FOLDER_LOCKS: dict[str, _FolderLock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.NAME.lock`` beside it (a side of a hybrid index shares the hybrid's)."""
    folder = Path(folder).resolve()
    parent_settings = folder.parent / SETTINGS_FILE
    if parent_settings.is_file():
        try:
            if json.loads(parent_settings.read_text(encoding="utf-8")).get("backend") == "hybrid":
                folder = folder.parent
        except (ValueError, AttributeError, OSError):
            pass
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def folder_lock(folder: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold ``folder``'s writer lock (reentrant in a thread; other threads and processes wait).

    :raises IndexFolderLocked: when it is not free within ``timeout`` seconds (default :data:`LOCK_TIMEOUT_S`);
        the message names the holder.
    """
    path = lock_path(folder)
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    with _FOLDER_LOCKS_GUARD:
        entry = _FOLDER_LOCKS.setdefault(str(path), _FolderLock(path))
    if not entry.threads.acquire(timeout=timeout):
        raise IndexFolderLocked(f"index folder {folder} is being written by another thread of this process; "
                                f"gave up after {timeout:g} s")
    try:
        if entry.depth == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                entry.file.acquire(timeout=timeout)
            except LockTimeout:
                raise IndexFolderLocked(
                    f"index folder {folder} is being written by {_holder(path)}; gave up after {timeout:g} s "
                    f"(one writer at a time: {path})"
                ) from None
            _write_holder(path)
        entry.depth += 1
        try:
            yield
        finally:
            entry.depth -= 1
            if entry.depth == 0:
                entry.file.release()
    finally:
        entry.threads.release()


def _holder_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".holder")


def _write_holder(lock: Path) -> None:
    text = f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])[:200]}), since {time.ctime()}"
    try:
        _holder_file(lock).write_text(text + "\n", encoding="utf-8")
    except OSError:  # naming the holder is a courtesy; the lock itself is held
        pass


def _holder(lock: Path) -> str:
    try:
        return _holder_file(lock).read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


# --------------------------------------------------------------------------------------------- atomic replacement


def fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then every folder (so a rename after this publishes durable data)."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
    for root, _, _ in os.walk(folder, topdown=False):
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    """fsync a folder's entries (renames and creations in it)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _container(target: Path, kind: str) -> Path:
    """A new ``.NAME.KIND-PID-*`` folder beside ``target`` carrying the marker that names its creator."""
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))
    marker = {"creator": "rerank-pipeline", "target": target.name, "pid": os.getpid(), "host": socket.gethostname(),
              "created": time.time()}
    (folder / STAGING_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
    return folder


@contextmanager
def atomic_directory(
    target: str | Path, marker: str | None = SETTINGS_FILE, what: str = "index folder"
) -> Iterator[Path]:
    """Yield an empty staging folder for ``target``; on success it replaces ``target`` as one generation.

    An existing ``target`` is replaced only when it is empty or holds ``marker`` (``None``: any folder), so a
    folder of other files is refused (:class:`~rerank_pipeline.output_paths.OutputPathError`) before anything is
    written. The whole replacement holds ``target``'s :func:`folder_lock`. A staged ``index.json`` gets the
    manifest (:func:`write_manifest`); the staged files are fsynced before the swap. On an exception the staging
    container is removed and ``target`` is left untouched. Containers left by a killed run are removed first
    (after putting a generation back when the live folder is missing).
    """
    check_replaceable_folder(target, marker, what, overwrite=marker is None)
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target):
        remove_stale_staging(target)
        container = _container(target, "tmp")
        staging = container / "new"
        staging.mkdir()
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # an index gets a normal folder's permissions
        try:
            yield staging
            for settings in sorted(staging.rglob(SETTINGS_FILE), key=lambda path: -len(path.parts)):
                write_manifest(settings.parent)  # nested index folders (a hybrid's sides) first
            fsync_tree(container)
        except BaseException:
            shutil.rmtree(container, ignore_errors=True)
            raise
        retired = None
        if target.exists():
            retired = _container(target, "old")
            fsync_dir(retired)
            os.replace(target, retired / "previous")  # a crash from here to the next rename: recovered on open
            fsync_dir(target.parent)
        os.replace(staging, target)
        fsync_dir(target.parent)
        for folder in (retired, container):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def _containers(target: Path, kind: str) -> list[Path]:
    """The marked ``.NAME.KIND-*`` containers of ``target`` (folders without this package's marker are ignored)."""
    pattern = f".{glob.escape(target.name)}.{kind}-*"
    return sorted(folder for folder in target.parent.glob(pattern) if (folder / STAGING_MARKER).is_file())


def _complete(folder: Path) -> bool:
    """A staged or retired generation that can be put back: its manifest verifies (or it is marked otherwise)."""
    try:
        settings = read_settings(folder)
        if settings is None:
            return False
        verify_manifest(folder, settings)
        return True
    except (IndexFolderError, OSError):
        return False


def recover_interrupted_swap(target: str | Path) -> bool:
    """Put a generation back when ``target`` is missing after a crash between the swap's two renames.

    The staged generation (complete, fsynced) is preferred, else the previous one. A live writer's swap is waited
    for (its lock). Returns whether ``target`` exists afterwards.
    """
    target = Path(target).resolve()
    if target.exists() or not target.parent.is_dir():
        return target.exists()
    if not (_containers(target, "tmp") or _containers(target, "old")):
        return target.exists()  # (a swap may have completed meanwhile)
    try:
        with folder_lock(target):
            if target.exists():  # the writer finished its swap, or another process recovered it
                return True
            candidates = [c / "new" for c in _containers(target, "tmp")] + [c / "previous" for c in
                                                                              _containers(target, "old")]
            for candidate in candidates:
                if candidate.is_dir() and _complete(candidate):
                    os.replace(candidate, target)
                    fsync_dir(target.parent)
                    logger.warning("Recovered index folder %s from %s (a save was interrupted)", target, candidate)
                    return True
    except (IndexFolderLocked, OSError) as error:
        logger.warning("Could not recover index folder %s: %s", target, error)
    return target.exists()


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the marked ``.NAME.tmp-*``/``.NAME.old-*`` containers left by a killed run; return them.

    Called under ``target``'s lock, so no writer is using them. Only containers carrying this package's marker are
    removed, and never one holding the only complete copy: a missing ``target`` is recovered from them first
    (:func:`recover_interrupted_swap`).
    """
    target = Path(target)
    containers = _containers(target, "tmp") + _containers(target, "old")
    if not target.exists() and not recover_interrupted_swap(target):
        if any(_complete(folder / name) for folder in containers for name in ("new", "previous")):
            return []  # recovery failed (see the warning): keep every copy
    removed = []
    for folder in _containers(target, "tmp") + _containers(target, "old"):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


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


def snapshot_bytes(index_dir: str | Path) -> int:
    """Size of the index files in ``index_dir``, the journal left out (from the manifest when there is one)."""
    files = (read_settings(index_dir) or {}).get("files")
    if isinstance(files, dict):
        return (Path(index_dir) / SETTINGS_FILE).stat().st_size + sum(
            entry.get("size", 0) for entry in files.values() if isinstance(entry, dict)
        )
    return sum(
        path.stat().st_size for path in Path(index_dir).rglob("*") if path.is_file() and path.name != JOURNAL_FILE
    )


def append_journal(index_dir: str | Path, change: dict[str, Any]) -> int:
    """Append one store change (``{"op": "write", "documents": [...]}``, ``delete`` ids, ``clear``) to the journal.

    The line is written with one ``write`` call and fsynced before returning; a crash midway leaves a line without
    its newline, which :func:`read_journal` ignores and the next append cuts off. A write that fails (full disk,
    read-only folder) is cut off again, so the journal holds the previous state. Returns the journal's size.
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
                size = handle.read().rfind(b"\n") + 1
                handle.truncate(size)
        try:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            handle.truncate(size)
            raise
        return handle.tell()


def _journal_change(change: Any) -> dict[str, Any]:
    """One journal line checked as untrusted input; raises ``ValueError`` saying what is wrong."""
    if not isinstance(change, dict):
        raise ValueError(f"expected a JSON object, found a {type(change).__name__}")
    op = change.get("op")
    if op not in JOURNAL_OPS:
        raise ValueError(f"unknown journal op {op!r} (known: {', '.join(JOURNAL_OPS)})")
    if op == "write":
        rows = change.get("documents")
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError("a write needs 'documents', a list of objects")
        return {"op": op, "documents": [document_from_row(row) for row in rows]}
    if op == "delete":
        ids = change.get("ids")
        if not isinstance(ids, list) or not all(isinstance(doc_id, str) for doc_id in ids):
            raise ValueError("a delete needs 'ids', a list of strings")
        return {"op": op, "ids": ids}
    return {"op": op}


def read_journal(index_dir: str | Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete changes journaled in ``index_dir`` from byte ``start``, and the byte where they end.

    A torn last line (a crash mid-append) is left out. Every line is checked before any is returned: a line that is
    not a known change raises :class:`IndexFolderError` naming ``journal.jsonl:LINE``, so nothing is applied.
    """
    path = Path(index_dir) / JOURNAL_FILE
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("Ignoring an incomplete last change in %s (interrupted write)", path)
    changes = []
    for offset, line in enumerate(data[:end].splitlines()):
        try:
            changes.append(_journal_change(json.loads(line.decode("utf-8"))))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            number = _line_number(path, start) + offset
            raise IndexFolderError(f"{path}:{number}: {error}; nothing was applied") from None
    return changes, start + end


def _line_number(path: Path, offset: int) -> int:
    """1-based number of the line that starts at byte ``offset``."""
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


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
