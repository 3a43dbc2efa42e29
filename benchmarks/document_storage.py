"""How the stores keep documents on disk (issue 20): three layouts measured on the same N documents.

- **jsonl + pread** (what ``document_table.Snapshot`` does): one JSON line a document, read with ``os.pread`` at
  offsets from an ``.npy``; meta in a memory-mapped Arrow column for filters.
- **arrow mmap**: one Arrow IPC file (id, content, meta JSON, year), memory-mapped, rows fetched with ``take`` on
  the record batches holding them (``take`` on the whole table would copy every batch first), the filter as
  ``pyarrow.compute.equal`` on the year column.
- **sqlite**: the standard library's SQLite, a table (rowid, id, content, meta JSON, year) with indexes on id and
  ``year``; rows by rowid, the filter as ``SELECT rowid ... WHERE year = ?``.

For each: write time and folder size; open time; 200 reads of 10 random rows (p50 ms) and the process's RSS growth
over them (each layout in its own child process, so the RSS is its own); the ``meta.year == 1999`` row mask (p50 ms);
a lookup by id (p50 µs). Documents are the scale benchmark's (Cranfield sentences recombined, ``meta.year``).

    python benchmarks/document_storage.py --documents 200000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import DEFAULT_BEIR, corpus_lines, cpu_description, source_sentences, uptime  # noqa: E402

READS, ROWS_A_READ = 200, 10


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def _p50(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write(layout: str, folder: Path, rows: list[dict]) -> None:
    import pyarrow as pa

    from rerank_pipeline.components.document_table import write_snapshot

    if layout == "jsonl-pread":
        from haystack import Document

        write_snapshot(folder, (Document(id=r["_id"], content=r["text"], meta=r["meta"]) for r in rows))
    elif layout == "arrow-mmap":
        table = pa.table({"id": [r["_id"] for r in rows], "content": [r["text"] for r in rows],
                          "meta": [json.dumps(r["meta"]) for r in rows], "year": [r["meta"]["year"] for r in rows]})
        with pa.OSFile(str(folder / "documents.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table, max_chunksize=10_000)
    else:
        connection = sqlite3.connect(folder / "documents.sqlite")
        connection.execute("CREATE TABLE documents (row INTEGER PRIMARY KEY, id TEXT, content TEXT, meta TEXT, "
                           "year INTEGER)")
        connection.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
                               ((i, r["_id"], r["text"], json.dumps(r["meta"]), r["meta"]["year"])
                                for i, r in enumerate(rows)))
        connection.execute("CREATE UNIQUE INDEX by_id ON documents (id)")
        connection.execute("CREATE INDEX by_year ON documents (year)")
        connection.commit()
        connection.close()


def serve(layout: str, folder: str, count: int) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = random.Random(0)
    reads = [[rng.randrange(count) for _ in range(ROWS_A_READ)] for _ in range(READS)]
    ids = [f"doc{rng.randrange(count)}" for _ in range(50)]
    from rerank_pipeline.components.document_table import Snapshot  # imported before the clock starts

    any_key_mask = None
    started = time.perf_counter()
    if layout == "jsonl-pread":
        snapshot = Snapshot(folder)
        opened = time.perf_counter() - started
        read = snapshot.documents
        mask = lambda: snapshot.mask({"field": "meta.year", "operator": "==", "value": 1999})  # noqa: E731
        lookup = lambda doc_id: snapshot.row_of(doc_id)  # noqa: E731
    elif layout == "arrow-mmap":
        table = pa.ipc.open_file(pa.memory_map(f"{folder}/documents.arrow")).read_all()
        opened = time.perf_counter() - started
        batches = table.to_batches()
        starts = np.cumsum([0] + [batch.num_rows for batch in batches])

        def read(rows):
            found = []
            for row in rows:
                index = int(np.searchsorted(starts, row, side="right") - 1)
                found += batches[index].take(pa.array([row - starts[index]])).to_pylist()
            return found

        mask = lambda: pc.equal(table.column("year"), 1999).to_numpy()  # noqa: E731
        lookup = lambda doc_id: pc.index(table.column("id"), doc_id).as_py()  # noqa: E731
    else:
        connection = sqlite3.connect(f"file:{folder}/documents.sqlite?mode=ro", uri=True)
        opened = time.perf_counter() - started

        def read(rows):
            marks = ",".join("?" * len(rows))
            return connection.execute(f"SELECT id, content, meta FROM documents WHERE row IN ({marks})",
                                      rows).fetchall()

        def mask():
            found = np.zeros(count, dtype=bool)
            found[[r for (r,) in connection.execute("SELECT row FROM documents WHERE year = 1999")]] = True
            return found

        lookup = lambda doc_id: connection.execute("SELECT row FROM documents WHERE id = ?",  # noqa: E731
                                                   (doc_id,)).fetchone()

        def any_key_mask():  # a meta key without a column or index of its own: a scan of the JSON
            found = np.zeros(count, dtype=bool)
            query = "SELECT row FROM documents WHERE json_extract(meta, '$.year') = 1999"
            found[[r for (r,) in connection.execute(query)]] = True
            return found
    before = _rss_mb()
    read_p50 = _p50(lambda: read(reads.pop()), READS)
    grown = _rss_mb() - before
    scan = _p50(any_key_mask, 3) * 1000 if layout == "sqlite" else None
    return {"open_ms": opened * 1000, "read_p50_ms": read_p50 * 1000, "rss_growth_mb": grown, "json_mask_ms": scan,
            "mask_p50_ms": _p50(mask, 5) * 1000, "lookup_p50_us": _p50(lambda: lookup(ids.pop()), 50) * 1e6,
            "matches": int(mask().sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(serve(args.child[0], args.child[1], int(args.child[2]))))
        return 0
    print(f"uptime before: {uptime()}\nCPU: {cpu_description()}")
    rows = [json.loads(line) for line in corpus_lines(args.documents, source_sentences(DEFAULT_BEIR))]
    print(f"| layout | write s | folder MB | open ms | 10 rows p50 ms | RSS growth, {READS} reads MB | "
          "year mask p50 ms | id lookup p50 µs |\n|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for layout in ("jsonl-pread", "arrow-mmap", "sqlite"):
            folder = Path(scratch) / layout
            folder.mkdir()
            started = time.perf_counter()
            write(layout, folder, rows)
            written = time.perf_counter() - started
            size = sum(path.stat().st_size for path in folder.iterdir()) / 2**20
            child = subprocess.run([sys.executable, __file__, "--child", layout, str(folder), str(len(rows))],
                                   capture_output=True, text=True, check=True)
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"| {layout} | {written:.1f} | {size:.0f} | {r['open_ms']:.1f} | {r['read_p50_ms']:.3f} | "
                  f"{r['rss_growth_mb']:.1f} | {r['mask_p50_ms']:.1f} | {r['lookup_p50_us']:.0f} |", flush=True)
            if r["json_mask_ms"] is not None:
                print(f"(sqlite, the same mask by json_extract on the meta JSON, no index: {r['json_mask_ms']:.0f} ms)")
    print(f"uptime after: {uptime()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
