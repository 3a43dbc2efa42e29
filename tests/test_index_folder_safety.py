"""Index folders across processes, threads and crashes: one writer at a time, one generation per reader, no crash
window, and every file treated as untrusted input (docs/bad_input.md, "Index folders (issue 19)")."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from haystack import Document
from haystack.document_stores.types import DuplicatePolicy

from rerank_pipeline.cli import main
from rerank_pipeline.components import EmbeddedBM25DocumentStore, FAISSDocumentStore
from rerank_pipeline.components import index_folder
from rerank_pipeline.components.index_folder import (
    DOCUMENTS_FILE,
    JOURNAL_FILE,
    SETTINGS_FILE,
    STAGING_MARKER,
    IndexFolderError,
    IndexFolderLocked,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = "wing flutter panel supersonic heat transfer boundary layer shock wave nozzle jet noise plate cone".split()


def docs(prefix: str, count: int, dim: int = 4) -> list[Document]:
    rng = random.Random(prefix)
    return [
        Document(id=f"{prefix}{i}", content=" ".join(rng.choice(WORDS) for _ in range(8)), meta={"n": i},
                 embedding=[rng.random() + 0.01 for _ in range(dim)])
        for i in range(count)
    ]


def ids(folder: Path, cls=EmbeddedBM25DocumentStore) -> set[str]:
    return {doc.id for doc in cls(index_dir=folder).filter_documents()}


def python(script: str, *args: str, wait: bool = True, **kwargs):
    command = [sys.executable, "-c", script, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if wait:
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, **kwargs)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- one writer at a time, across processes

WRITER = """
import sys
from haystack import Document
from rerank_pipeline.components import {cls}
folder, prefix, count, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = {cls}(index_dir=folder)
for start in range(0, count, batch):
    store.write_documents([Document(id=f"{{prefix}}{{i}}", content=f"wing panel flutter {{prefix}} {{i}}",
                                    embedding=[1.0, float(i % 7), 0.5, 0.25])
                           for i in range(start, min(start + batch, count))])
print("acknowledged", count)
"""


@pytest.mark.parametrize("cls", [EmbeddedBM25DocumentStore, FAISSDocumentStore])
def test_two_writer_processes_on_one_folder_lose_nothing(cls, tmp_path):
    folder = tmp_path / "index"
    cls(index_dir=folder).write_documents(docs("seed", 5))
    count, batch = 1500, 25
    script = WRITER.format(cls=cls.__name__)
    writers = [python(script, folder, prefix, count, batch, wait=False) for prefix in ("x", "y")]
    outputs = [writer.communicate(timeout=600) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    assert all(f"acknowledged {count}" in out for out, _ in outputs)
    stored = ids(folder, cls)
    expected = {f"{p}{i}" for p in ("x", "y") for i in range(count)} | {f"seed{i}" for i in range(5)}
    assert stored == expected  # before: 31,401 of 60,000 kept, silently


def test_a_second_writer_that_cannot_get_the_lock_fails_in_one_line_naming_the_holder(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    store.write_documents(docs("a", 3))
    holder = python(
        "import sys, time\nfrom rerank_pipeline.components.index_folder import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('holding', flush=True)\n    time.sleep(60)\n",
        folder, wait=False,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr(index_folder, "LOCK_TIMEOUT_S", 0.5)
        with pytest.raises(IndexFolderLocked) as refused:
            store.write_documents(docs("b", 1))
    finally:
        holder.kill()
        holder.wait()
    message = str(refused.value)
    assert "\n" not in message and f"process {holder.pid}" in message and str(folder) in message
    assert store.count_documents() == 3 and ids(folder) == {"a0", "a1", "a2"}  # nothing changed
    store.write_documents(docs("b", 1))  # the holder is gone: the lock is free again
    assert ids(folder) == {"a0", "a1", "a2", "b0"}


# ---------------------------------------------------------------- readers see one generation

SAVER = """
import sys
from haystack import Document
from haystack.document_stores.types import DuplicatePolicy
from rerank_pipeline.components import EmbeddedBM25DocumentStore
folder, rounds = sys.argv[1], int(sys.argv[2])
for round_ in range(rounds):  # each round replaces the folder with a whole new generation
    tag = "even" if round_ % 2 == 0 else "odd"
    store = EmbeddedBM25DocumentStore()
    store.write_documents([Document(id=f"{tag}{i}", content=f"{tag} wing flutter {i} " + "panel " * (i % 5))
                           for i in range(300 + 50 * (round_ % 2))])
    store.save(folder)
print("saved", rounds)
"""


def test_a_reader_racing_a_saver_never_sees_a_mix(tmp_path):
    folder = tmp_path / "index"
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(
        [Document(id=f"even{i}", content=f"even wing flutter {i} " + "panel " * (i % 5)) for i in range(300)]
    )
    saver = python(SAVER, folder, 60, wait=False)
    opened = 0
    try:
        while saver.poll() is None and opened < 400:
            store = EmbeddedBM25DocumentStore(index_dir=folder)
            documents = store.filter_documents()
            tags = {doc.id.rstrip("0123456789") for doc in documents}
            assert len(tags) == 1 and len(documents) == (300 if tags == {"even"} else 350), (len(documents), tags)
            alone = EmbeddedBM25DocumentStore()  # the same documents indexed afresh: the scores a reader must see
            alone.write_documents(documents)
            query = "wing flutter panel"
            assert [(h.id, round(h.score, 4)) for h in store.bm25_retrieval(query, top_k=10)] == [
                (h.id, round(h.score, 4)) for h in alone.bm25_retrieval(query, top_k=10)]
            opened += 1
    finally:
        out, err = saver.communicate(timeout=600)
    assert saver.returncode == 0, err
    assert opened >= 5  # the race was run (several opens while the saver swapped generations)


# ---------------------------------------------------------------- no crash window

def _run_killed_at(folder: Path, step: int, after: bool) -> int:
    """In a forked child: write 'b' documents and save, SIGKILLed at the ``step``-th rename/fsync (before or after
    it runs). Returns the number of such steps the child reached (the kill never came when ``step`` is larger)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count every rename and fsync, die at one of them
        os.close(read_end)
        calls = [0]

        def fatal(function):
            def wrapper(*args, **kwargs):
                calls[0] += 1
                os.write(write_end, b".")
                if calls[0] == step and not after:
                    os.kill(os.getpid(), signal.SIGKILL)
                result = function(*args, **kwargs)
                if calls[0] == step and after:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result
            return wrapper

        try:
            os.replace, os.rename, os.fsync = fatal(os.replace), fatal(os.rename), fatal(os.fsync)
            store = EmbeddedBM25DocumentStore(index_dir=folder)
            store.write_documents(docs("b", 4))
            store.save()
        finally:
            os._exit(0)
    os.close(write_end)
    reached = 0
    while chunk := os.read(read_end, 1024):
        reached += len(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return reached


def test_a_kill_at_every_step_of_a_save_leaves_the_previous_or_the_new_state(tmp_path):
    previous, new = {f"a{i}" for i in range(6)}, {f"a{i}" for i in range(6)} | {f"b{i}" for i in range(4)}
    template = tmp_path / "template"
    EmbeddedBM25DocumentStore(index_dir=template).write_documents(docs("a", 6))
    steps = _run_killed_at(_copy(template, tmp_path / "count"), step=10**6, after=False)
    assert steps >= 6  # the journal's fsync, the staged files' fsyncs, both renames
    seen = set()
    for step in range(1, steps + 1):
        for after in (False, True):
            folder = _copy(template, tmp_path / f"kill-{step}-{after}")
            _run_killed_at(folder, step, after)
            state = ids(folder)  # recovers a generation when the kill fell between the two renames
            assert state in (previous, new), (step, after, sorted(state))
            seen.add(frozenset(state))
            writer = EmbeddedBM25DocumentStore(index_dir=folder)
            writer.write_documents(docs("c", 1))
            writer.save()  # the next save removes what the killed one left
            assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.") and
                        (p / STAGING_MARKER).exists()]
            assert ids(folder) == state | {"c0"}
    assert frozenset(new) in seen  # (a kill cannot undo the journal line's write() once it ran: page cache)


def _copy(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_a_missing_live_folder_is_recovered_from_the_staged_generation_never_opened_empty(tmp_path):
    folder = tmp_path / "index"
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(docs("a", 3))
    # the state a kill between the swap's two renames leaves: live moved aside, the new generation staged
    retired = tmp_path / ".index.old-99999999-x"
    retired.mkdir()
    (retired / STAGING_MARKER).write_text("{}")
    os.replace(folder, retired / "previous")
    assert not folder.exists()
    assert ids(folder) == {"a0", "a1", "a2"}  # not an empty store
    assert folder.is_dir() and not (retired / "previous").exists()


# ---------------------------------------------------------------- files as untrusted input

def _bm25_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    EmbeddedBM25DocumentStore(index_dir=folder).write_documents(docs("a", 40))
    return folder


def _tamper(folder: Path, case: str) -> Path:
    """Damage ``folder`` as the issue's probes did; returns the file the error must name."""
    documents = folder / DOCUMENTS_FILE
    if case == "unknown journal op":
        EmbeddedBM25DocumentStore(index_dir=folder).write_documents(docs("b", 1))
        with open(folder / JOURNAL_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"op": "drop_everything"}) + "\n")
        return folder / JOURNAL_FILE
    if case == "shuffled documents":
        lines = documents.read_text(encoding="utf-8").splitlines(keepends=True)
        random.Random(0).shuffle(lines)
        documents.write_text("".join(lines), encoding="utf-8")
        return documents
    if case == "half the documents removed":
        lines = documents.read_text(encoding="utf-8").splitlines(keepends=True)
        documents.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
        return documents
    if case == "index.json a list":
        (folder / SETTINGS_FILE).write_text("[1, 2]\n")
        return folder / SETTINGS_FILE
    if case == "index.json not JSON":
        (folder / SETTINGS_FILE).write_text("{\"backend\": \n")
        return folder / SETTINGS_FILE
    if case == "bm25s indices out of range":
        import numpy as np

        target = next(path for path in (folder / "bm25s").iterdir() if "indices" in path.name)
        array = np.load(target)
        array[:] = 10**6
        np.save(target, array)
        return target
    if case == "a document file missing":
        documents.unlink()
        return documents
    raise AssertionError(case)


TAMPERED = ["unknown journal op", "shuffled documents", "half the documents removed", "index.json a list",
            "index.json not JSON", "bm25s indices out of range", "a document file missing"]


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_folder_is_a_one_line_error_naming_the_file(case, tmp_path, capsys):
    folder = _bm25_folder(tmp_path)
    named = _tamper(folder, case)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    with pytest.raises(IndexFolderError) as refused:
        EmbeddedBM25DocumentStore(index_dir=folder)
    assert str(named) in str(refused.value) and "\n" not in str(refused.value)
    code = main(["search", "wing", "--index-dir", str(folder), "--no-rerank"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(named) in err, err
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before  # nothing changed


def test_an_unknown_journal_op_names_its_line_and_changes_nothing(tmp_path):
    folder = _bm25_folder(tmp_path)
    _tamper(folder, "unknown journal op")
    with pytest.raises(IndexFolderError, match=r"journal\.jsonl:2: unknown journal op 'drop_everything'"):
        EmbeddedBM25DocumentStore(index_dir=folder)


# ---------------------------------------------------------------- a write that cannot be persisted

@pytest.mark.parametrize("cls", [EmbeddedBM25DocumentStore, FAISSDocumentStore])
def test_a_write_that_cannot_be_persisted_leaves_memory_equal_to_disk(cls, tmp_path, monkeypatch):
    folder = tmp_path / "index"
    store = cls(index_dir=folder)
    store.write_documents(docs("a", 3))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import rerank_pipeline.components._document_store as document_store

    monkeypatch.setattr(document_store, "append_journal", full_disk)
    with pytest.raises(OSError, match="nothing was changed"):
        store.write_documents(docs("b", 2))
    assert store.count_documents() == 3 and ids(folder, cls) == {"a0", "a1", "a2"}

    fresh = cls(index_dir=tmp_path / "new")  # the first write to a folder is a snapshot
    monkeypatch.setattr(index_folder, "write_manifest", full_disk)
    with pytest.raises(OSError):
        fresh.write_documents(docs("c", 2))
    assert fresh.count_documents() == 0 and not (tmp_path / "new" / SETTINGS_FILE).exists()


def test_a_failed_journal_append_is_cut_off(tmp_path, monkeypatch):
    folder = _bm25_folder(tmp_path)
    store = EmbeddedBM25DocumentStore(index_dir=folder)
    store.write_documents(docs("b", 1))
    size = (folder / JOURNAL_FILE).stat().st_size
    real_fsync = os.fsync

    def failing_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="nothing was changed"):
        store.write_documents(docs("c", 1))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (folder / JOURNAL_FILE).stat().st_size == size  # the half-written line is gone
    assert store.count_documents() == 41 and len(ids(folder)) == 41


# ---------------------------------------------------------------- threads

@pytest.mark.parametrize("cls", [EmbeddedBM25DocumentStore, FAISSDocumentStore])
@pytest.mark.parametrize("persisted", [False, True])
def test_four_writers_and_four_searchers_on_one_store(cls, persisted, tmp_path):
    store = cls(index_dir=tmp_path / "index" if persisted else None)
    store.write_documents(docs("base", 50))
    errors: list[BaseException] = []
    stop = time.monotonic() + 4

    def writer(worker: int) -> None:
        try:
            round_ = 0
            while time.monotonic() < stop:
                batch = docs(f"w{worker}-{round_}-", 5)
                store.write_documents(batch, policy=DuplicatePolicy.OVERWRITE)
                store.delete_documents([doc.id for doc in batch[:3]])
                round_ += 1
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def searcher() -> None:
        try:
            while time.monotonic() < stop:
                if cls is FAISSDocumentStore:
                    hits = store.embedding_retrieval([0.5, 0.5, 0.5, 0.5], top_k=20)
                else:
                    hits = store.bm25_retrieval("wing flutter panel", top_k=20)
                assert all(hit.id and hit.score is not None for hit in hits)
                store.filter_documents({"field": "meta.n", "operator": "<", "value": 2})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=searcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, repr(errors[:3])
    kept = {doc.id for doc in store.filter_documents()}
    written = kept - {f"base{i}" for i in range(50)}
    assert written and all(doc_id.endswith(("-3", "-4")) for doc_id in written)  # each batch's last two stay
    assert store.count_documents() == len(kept) == 50 + len(written)
    if persisted:
        assert ids(tmp_path / "index", cls) == kept
