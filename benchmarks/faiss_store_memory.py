"""What a FAISSDocumentStore opened on a folder keeps resident, per document, besides its mapped files.

Builds a folder of ``--count`` documents (~300-character passages, random float32 vectors of dimension 384,
``--index-type``), then measures in this process the growth of resident anonymous memory (``RssAnon``: the heap, which
cannot be evicted) when a new store opens it, and the open time. The FAISS index and ``embeddings.npy`` are
memory-mapped, so what grows is the documents and their ids. ``uptime`` is printed before and after.

    python benchmarks/faiss_store_memory.py --count 50000
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from haystack import Document

from rerank_pipeline.components import FAISSDocumentStore


def rss_anon_mb() -> float:
    gc.collect()
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["RssAnon"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--index-type", default="IVF256,PQ48")
    args = parser.parse_args()
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.count, 384), dtype=np.float32)
    words = "the of flow pressure panel flutter supersonic heat transfer boundary layer".split()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "idx"
        store = FAISSDocumentStore(index_type=args.index_type)
        store.write_documents([
            Document(id=f"doc{i}", content=" ".join(rng.choice(words, 50)), meta={"title": ""},
                     embedding=vectors[i].tolist())
            for i in range(args.count)
        ])
        store.save(folder)
        del store
        base = rss_anon_mb()
        start = time.perf_counter()
        opened = FAISSDocumentStore(index_dir=folder)
        open_s = time.perf_counter() - start
        opened.search_ids(vectors[:10], top_k=100)
        grown = rss_anon_mb() - base
        sizes = {path.name: f"{path.stat().st_size / 2**20:.0f} MB" for path in sorted(folder.iterdir())}
        print(f"{args.count} documents, {args.index_type}: open {open_s:.1f} s, resident anonymous growth {grown:.0f} MB"
              f" = {grown * 2**20 / args.count:.0f} B a document; index memory-mapped: {opened.index_memory_mapped};"
              f" files {sizes}")
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
