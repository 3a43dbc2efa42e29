"""Write cost of the embedded stores on an index folder: in memory vs journal (what the stores do) vs full snapshot.

``N`` documents are written in batches of ``B`` (one ``write_documents`` call a batch, as a ``DocumentWriter`` pipeline
run does) in three ways, each on a fresh store:

- ``memory``: no ``index_dir``; nothing is persisted (the anchor);
- ``journal``: ``index_dir`` set; the first write saves a snapshot, every later write appends one fsynced line to the
  folder's journal (the stores' persistence rule);
- ``snapshot``: an atomic full ``save()`` after every write (the alternative: every write rewrites the whole folder).

BM25 documents are Cranfield text made distinct (see ``benchmarks/first_stage.py``); FAISS documents carry a random
384-dimensional embedding (all-MiniLM-L6-v2's size). Printed: docs/s of the write phase, the ratio to ``memory`` in
the same run, and the seconds a new store takes to reopen the folder (journal replayed).

    python benchmarks/store_writes.py                      # 100k documents, batches of 10k, both stores
    python benchmarks/store_writes.py --batch-size 1000 --modes memory,journal
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from haystack import Document

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_stage import DEFAULT_BEIR, synthetic_corpus  # noqa: E402

from rerank_pipeline.components import EmbeddedBM25DocumentStore, FAISSDocumentStore  # noqa: E402
from rerank_pipeline.datasets import load_beir  # noqa: E402

STORES = {"bm25": EmbeddedBM25DocumentStore, "faiss": FAISSDocumentStore}
EMBEDDING_DIM = 384


def corpus(kind: str, size: int, beir_dir: Path) -> list[Document]:
    if kind == "bm25":
        return synthetic_corpus(list(load_beir(beir_dir, "test").documents()), size)
    vectors = np.random.default_rng(0).normal(size=(size, EMBEDDING_DIM)).astype(np.float32)
    return [Document(id=f"d{i}", content=f"document {i}", embedding=v.tolist()) for i, v in enumerate(vectors)]


def measure(kind: str, mode: str, documents: list[Document], batch_size: int, workdir: Path) -> dict:
    folder = workdir / f"{kind}-{mode}"
    store = STORES[kind](index_dir=folder if mode == "journal" else None)
    started = time.perf_counter()
    for start in range(0, len(documents), batch_size):
        store.write_documents(documents[start : start + batch_size])
        if mode == "snapshot":
            store.save(folder)
    seconds = time.perf_counter() - started
    result = {"store": kind, "mode": mode, "documents": len(documents), "batch_size": batch_size,
              "seconds": round(seconds, 2), "docs_per_s": round(len(documents) / seconds)}
    if mode != "memory":
        started = time.perf_counter()
        reopened = STORES[kind](index_dir=folder)
        assert reopened.count_documents() == len(documents)
        result["reopen_s"] = round(time.perf_counter() - started, 2)
        result["folder_mb"] = round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--stores", default="bm25,faiss")
    parser.add_argument("--modes", default="memory,journal,snapshot")
    parser.add_argument("--beir-dir", type=Path, default=DEFAULT_BEIR)
    parser.add_argument("--workdir", type=Path, default=None, help="where the index folders go (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="store-writes-", dir=args.workdir))
    try:
        for kind in args.stores.split(","):
            documents = corpus(kind, args.documents, args.beir_dir)
            anchor = None
            for mode in args.modes.split(","):
                result = measure(kind, mode, documents, args.batch_size, workdir)
                anchor = anchor or (result["docs_per_s"] if mode == "memory" else None)
                if anchor:
                    result["ratio_to_memory"] = round(result["docs_per_s"] / anchor, 3)
                print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
