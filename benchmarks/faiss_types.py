"""FAISS index types through the store's own code: build, open (memory-mapped), memory, queries/s, recall@100.

Each type is built with ``build_faiss_index`` (what ``FAISSDocumentStore`` builds), written with
``faiss.write_index`` and reopened with ``read_faiss_index`` (``IO_FLAG_MMAP`` / ``IO_FLAG_MMAP_IFC`` where the type
allows). Vectors are clustered synthetic float32 (dimension 384, Gaussian clusters around random centres, as in
``first_stage.py``), queries drawn near data points. The anchor is exact search (``Flat``) measured in the same run:
queries/s is given as a ratio to it and recall@100 is against its results on the same queries.

Memory: ``B/vector`` is the saved index file, less what the trained index holds without vectors (centroids,
codebooks: ``fixed MB``), over the vector count; a 10M estimate is ``fixed + 10M x B/vector``. ``build RSS`` is the resident growth while building. Opening and querying run in a fresh process (freed build
memory cannot hide growth there): ``open anon/file`` is the growth of resident anonymous memory (heap, never evicted)
and of resident file pages (the mapped index: evictable page cache) once opened, ``queried`` the same after the
queries (a mapped index pages in only what the queries touch). The store's ``embeddings.npy`` (4 x dim bytes a
vector) is memory-mapped too and only read for filters, ``return_embedding`` and rebuilds.

    flock /tmp/cpu.lock python benchmarks/faiss_types.py --count 100000      # ~ a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from rerank_pipeline.components.faiss_store import build_faiss_index, read_faiss_index, set_search_parameters
from rerank_pipeline.hardware import cpu_flags as hardware_cpu_flags


def rss_mb() -> float:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def rss_anon_file_mb() -> tuple[float, float]:
    """Resident anonymous memory (heap: cannot be evicted) and resident file pages (mapped files: evictable), MB."""
    gc.collect()
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile"))  # type: ignore[return-value]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_flags() -> str:
    """The SIMD flags FAISS's kernels use, from :func:`rerank_pipeline.hardware.cpu_flags`."""
    return ",".join(sorted(hardware_cpu_flags() & {"avx2", "avx512f", "avx512bw", "fma", "sse4_2", "neon"})) or "unknown"


def bench_type(factory: str, vectors: np.ndarray, queries: np.ndarray, folder: Path, *, top_k: int, nprobe: int,
               ef_search: int) -> tuple[dict, np.ndarray]:
    row: dict = {"type": factory}
    base = rss_mb()
    start = time.perf_counter()
    index = build_faiss_index(vectors, factory, nprobe=nprobe, ef_search=ef_search)
    row["build_s"] = time.perf_counter() - start
    row["build_rss_mb"] = rss_mb() - base
    path = folder / "faiss.index"
    faiss.write_index(index, str(path))
    row["file_bytes"] = path.stat().st_size
    index.reset()  # what stays without vectors: centroids, codebooks, SQ ranges
    row["fixed_bytes"] = int(faiss.serialize_index(index).nbytes)
    row["bytes_per_vector"] = (row["file_bytes"] - row["fixed_bytes"]) / len(vectors)
    del index
    np.save(folder / "queries.npy", queries)
    done = subprocess.run(
        [sys.executable, __file__, "--open-and-query", str(path), factory, str(top_k), str(nprobe), str(ef_search)],
        capture_output=True, text=True, check=True,
    )
    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    found = np.load(folder / "found.npy")
    path.unlink()
    return row, found


def open_and_query(path: Path, factory: str, top_k: int, nprobe: int, ef_search: int) -> None:
    """In a fresh process (so freed build memory cannot hide growth): open, search, print the figures as JSON."""
    queries = np.load(path.parent / "queries.npy")
    anon, file = rss_anon_file_mb()
    start = time.perf_counter()
    index, mapped = read_faiss_index(path, factory)
    set_search_parameters(index, nprobe=nprobe, ef_search=ef_search)
    open_s = time.perf_counter() - start
    anon_open, file_open = rss_anon_file_mb()
    index.search(queries[:2], top_k)  # warm
    start = time.perf_counter()
    _, found = index.search(queries, top_k)
    qps = len(queries) / (time.perf_counter() - start)
    anon_after, file_after = rss_anon_file_mb()
    np.save(path.parent / "found.npy", found)
    print(json.dumps({"open_s": open_s, "mapped": mapped, "qps": qps, "open_anon_mb": anon_open - anon,
                      "open_file_mb": file_open - file, "queried_anon_mb": anon_after - anon,
                      "queried_file_mb": file_after - file}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--open-and-query":
        path, factory, top_k, nprobe, ef_search = sys.argv[2:7]
        open_and_query(Path(path), factory, int(top_k), int(nprobe), int(ef_search))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="vectors (keep <= 200k on the shared 2-core box)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nlist", type=int, default=1024, help="IVF cells of the IVF types")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--spread", type=float, default=0.5, help="cluster spread per dimension (centres N(0,1))")
    parser.add_argument("--types", help="comma-free list separated by ';' (default: Flat;HNSW32;IVF,Flat;IVF,PQ48;"
                                        "IVF,SQ8;SQ8 with --nlist cells)")
    parser.add_argument("--output", help="also write the results as JSON here")
    args = parser.parse_args()
    from first_stage import clustered_vectors, write_report  # benchmarks/first_stage.py (the children skip it)

    nl = args.nlist
    types = args.types.split(";") if args.types else [
        "Flat", "HNSW32", f"IVF{nl},Flat", f"IVF{nl},PQ48", f"IVF{nl},SQ8", "SQ8",
    ]
    if types[0] != "Flat":
        types.insert(0, "Flat")  # the anchor
    report: dict = {"uptime_before": uptime(), "cpu_flags": cpu_flags(), "threads": faiss.omp_get_max_threads(),
                    "faiss": faiss.__version__, "count": args.count, "dim": args.dim, "queries": args.queries,
                    "nprobe": args.nprobe, "ef_search": args.ef_search, "rows": []}
    print(f"uptime before: {report['uptime_before']}", flush=True)
    print(f"faiss {faiss.__version__}, {report['threads']} threads, CPU flags {report['cpu_flags']}; "
          f"{args.count} x {args.dim} float32, {args.queries} queries, top-{100}, nprobe {args.nprobe}, "
          f"efSearch {args.ef_search}", flush=True)
    rng = np.random.default_rng(args.count)
    vectors = clustered_vectors(args.count, args.dim, clusters=max(100, args.count // 500), rng=rng,
                                spread=args.spread)
    picks = vectors[rng.integers(0, args.count, args.queries)]
    queries = picks + 0.1 * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = None
    header = (f"{'type':<16} {'build s':>8} {'open s':>7} {'mapped':>6} {'B/vector':>9} {'fixed MB':>8} {'build RSS MB':>12} "
              f"{'open anon/file MB':>17} {'queried anon/file MB':>20} {'q/s':>8} {'q/s vs Flat':>11} {'recall@100':>10}")
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for factory in types:
            row, found = bench_type(factory, vectors, queries, Path(tmp), top_k=100, nprobe=args.nprobe,
                                    ef_search=args.ef_search)
            if exact is None:
                exact, anchor_qps = found, row["qps"]
            row["qps_vs_flat"] = row["qps"] / anchor_qps
            row["recall_at_100"] = float(np.mean([len(set(f) & set(e)) / 100 for f, e in zip(found, exact)]))
            report["rows"].append(row)
            print(f"{factory:<16} {row['build_s']:>8.1f} {row['open_s']:>7.3f} {str(row['mapped']):>6} "
                  f"{row['bytes_per_vector']:>9.1f} {row['fixed_bytes'] / 2**20:>8.1f} {row['build_rss_mb']:>12.0f} {row['open_anon_mb']:>8.0f}/{row['open_file_mb']:<8.0f} {row['queried_anon_mb']:>10.0f}/{row['queried_file_mb']:<9.0f} "
                  f"{row['qps']:>8.0f} {row['qps_vs_flat']:>11.2f} {row['recall_at_100']:>10.3f}", flush=True)
    report["uptime_after"] = uptime()
    print(f"uptime after: {report['uptime_after']}", flush=True)
    for row in report["rows"]:
        if any(key in row["type"] for key in ("PQ", "SQ")):
            at_10m = (row["fixed_bytes"] + row["bytes_per_vector"] * 10_000_000) / 2**30
            print(f"  {row['type']}: {row['bytes_per_vector']:.0f} B/vector -> ~{at_10m:.1f} GiB of index at 10M "
                  f"x {args.dim} (plus {4 * args.dim * 10_000_000 / 2**30:.1f} GiB of embeddings.npy, memory-mapped)")
    if args.output:
        write_report(args.output, report)


if __name__ == "__main__":
    main()
