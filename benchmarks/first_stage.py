"""First-stage speed: embedded BM25 vs rank-bm25 vs Haystack InMemoryBM25Retriever; FAISS exact vs ANN.

BM25 corpora are built from real text (a BEIR corpus, Cranfield by default):
document i is source document i mod n with ~25% of its words dropped and a few
words borrowed from another document, so copies are distinct bags of words.
Queries are the collection's queries. rank-bm25 and Haystack's in-memory BM25
score every document in Python, so only ``--slow-queries`` queries are timed for
them. Ratios are against rank-bm25 measured in the same run; overlap is the
share of our top-100 found in the other engine's top-100 on the same queries.

FAISS uses clustered synthetic vectors (dimension 384, Gaussian clusters around
random centres), with queries drawn near data points; ANN recall@100 is against
exact search on the same queries.

    flock /tmp/cpu.lock python benchmarks/first_stage.py              # ~ a few minutes
    python benchmarks/first_stage.py --bm25-sizes 10000 --faiss-sizes 100000   # quick
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
from haystack import Document

from rerank_pipeline.components.bm25 import Analyzer, EmbeddedBM25DocumentStore, document_text
from rerank_pipeline.components.faiss_store import build_faiss_index
from rerank_pipeline.datasets import load_beir

DEFAULT_BEIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield"


def rss_mb() -> float:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def synthetic_corpus(source: list[Document], size: int, seed: int = 0) -> list[Document]:
    """``size`` distinct documents made from the words of ``source`` documents."""
    rng = np.random.default_rng(seed)
    words = [document_text(doc).split() for doc in source]
    documents = []
    for i in range(size):
        base = words[i % len(words)]
        keep = rng.random(len(base)) > 0.25
        donor = words[rng.integers(len(words))]
        borrowed = [donor[j] for j in rng.integers(0, len(donor), size=min(5, len(donor)))] if donor else []
        text = " ".join([w for w, k in zip(base, keep) if k] + borrowed)
        documents.append(Document(id=f"doc{i}", content=text, meta={"title": ""}))
    return documents


def overlap(ours: list[list[str]], theirs: list[list[str]]) -> float:
    shares = [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(ours, theirs) if a]
    return float(np.mean(shares)) if shares else float("nan")


def bench_bm25(documents: list[Document], queries: list[str], slow_queries: int, top_k: int = 100) -> dict:
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from rank_bm25 import BM25Okapi

    analyzer = Analyzer()
    result: dict = {"documents": len(documents)}

    base = rss_mb()
    start = time.perf_counter()
    store = EmbeddedBM25DocumentStore()
    store.write_documents(documents)
    store.search_ids(["warm"], top_k=1)  # builds the BM25 matrix
    result["ours_index_s"] = time.perf_counter() - start
    result["ours_rss_mb"] = rss_mb() - base
    start = time.perf_counter()
    ours = store.search_ids(queries, top_k=top_k)
    result["ours_qps"] = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for query in queries[:slow_queries * 4]:
        store.search_ids([query], top_k=top_k)
    result["ours_qps_one_by_one"] = min(len(queries), slow_queries * 4) / (time.perf_counter() - start)
    ours_ids = [[d for d, _ in hits] for hits in ours[:slow_queries]]

    base = rss_mb()
    start = time.perf_counter()
    tokenized = analyzer.analyze_many([document_text(doc) for doc in documents])
    okapi = BM25Okapi(tokenized, k1=0.9, b=0.4)
    result["rank_bm25_index_s"] = time.perf_counter() - start
    result["rank_bm25_rss_mb"] = rss_mb() - base
    ids = [doc.id for doc in documents]
    start = time.perf_counter()
    rank_ids = []
    for query in queries[:slow_queries]:
        scores = okapi.get_scores(analyzer.analyze(query))
        top = np.argsort(-scores)[:top_k]
        rank_ids.append([ids[i] for i in top if scores[i] > 0])
    result["rank_bm25_qps"] = slow_queries / (time.perf_counter() - start)
    del okapi, tokenized

    base = rss_mb()
    start = time.perf_counter()
    memory_store = InMemoryDocumentStore(bm25_algorithm="BM25Okapi", bm25_parameters={"k1": 0.9, "b": 0.4})
    memory_store.write_documents(documents)
    result["haystack_index_s"] = time.perf_counter() - start
    result["haystack_rss_mb"] = rss_mb() - base
    retriever = InMemoryBM25Retriever(memory_store, top_k=top_k)
    start = time.perf_counter()
    haystack_ids = [[doc.id for doc in retriever.run(query=q)["documents"]] for q in queries[:slow_queries]]
    result["haystack_qps"] = slow_queries / (time.perf_counter() - start)
    del memory_store, retriever

    result["qps_ratio_vs_rank_bm25"] = result["ours_qps"] / result["rank_bm25_qps"]
    result["haystack_qps_ratio_vs_rank_bm25"] = result["haystack_qps"] / result["rank_bm25_qps"]
    result["index_time_ratio_rank_bm25_over_ours"] = result["rank_bm25_index_s"] / result["ours_index_s"]
    result["top100_overlap_rank_bm25"] = overlap(ours_ids, rank_ids)
    result["top100_overlap_haystack"] = overlap(ours_ids, haystack_ids)
    result["timed_queries"] = {"ours": len(queries), "rank_bm25": slow_queries, "haystack": slow_queries}
    return result


def clustered_vectors(count: int, dim: int, clusters: int, rng: np.random.Generator, spread: float) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        stop = min(count, start + 100_000)
        vectors[start:stop] = centres[rng.integers(0, clusters, stop - start)]
        vectors[start:stop] += spread * rng.standard_normal((stop - start, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def bench_faiss(
    count: int, ann: str, queries: int, dim: int = 384, top_k: int = 100, nprobe: int = 16, spread: float = 0.5
) -> dict:
    import faiss

    rng = np.random.default_rng(count)
    vectors = clustered_vectors(count, dim, clusters=max(100, count // 500), rng=rng, spread=spread)
    picks = vectors[rng.integers(0, count, queries)]
    query_vectors = picks + 0.1 * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(dim)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    result: dict = {"vectors": count, "dim": dim, "ann": ann, "spread": spread, "threads": faiss.omp_get_max_threads()}

    for name, index_type in (("exact", "flat"), ("ann", ann)):
        base = rss_mb()
        start = time.perf_counter()
        index = build_faiss_index(vectors, index_type, nprobe=nprobe, ef_search=128)
        result[f"{name}_build_s"] = time.perf_counter() - start
        result[f"{name}_rss_mb"] = rss_mb() - base
        index.search(query_vectors[:2], top_k)  # warm
        start = time.perf_counter()
        _, found = index.search(query_vectors, top_k)
        result[f"{name}_qps"] = queries / (time.perf_counter() - start)
        result[f"{name}_ids"] = found
        del index
    exact, approx = result.pop("exact_ids"), result.pop("ann_ids")
    result["ann_recall_at_100"] = float(np.mean([len(set(a) & set(e)) / top_k for a, e in zip(approx, exact)]))
    result["ann_qps_ratio"] = result["ann_qps"] / result["exact_qps"]
    result["vectors_mb"] = vectors.nbytes / 2**20
    return result


def write_report(path: str | Path, report: dict) -> None:
    """Write ``report`` as JSON to ``path``, replacing it atomically."""
    from rerank_pipeline.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir-dir", default=str(DEFAULT_BEIR), help="BEIR folder whose text builds the corpora")
    parser.add_argument("--bm25-sizes", default="10000,100000", help="comma-separated corpus sizes ('' to skip)")
    parser.add_argument("--faiss-sizes", default="100000,1000000", help="comma-separated vector counts ('' to skip)")
    parser.add_argument(
        "--ann", default="ivf", help="ANN index compared with exact search: ivf, hnsw or a faiss.index_factory string"
    )
    parser.add_argument("--nprobe", type=int, default=16, help="IVF cells searched per query")
    parser.add_argument("--slow-queries", type=int, default=5, help="queries timed for rank-bm25 and Haystack")
    parser.add_argument("--faiss-queries", type=int, default=200, help="queries for the FAISS comparison")
    parser.add_argument(
        "--spread", type=float, default=0.5,
        help="cluster spread per dimension (centres are N(0,1)); larger values make clusters overlap",
    )
    parser.add_argument("--output", help="also write the results as JSON here")
    args = parser.parse_args()

    report: dict = {"bm25": [], "faiss": []}
    bm25_sizes = [int(s) for s in args.bm25_sizes.split(",") if s]
    if bm25_sizes:
        dataset = load_beir(args.beir_dir, "test")
        queries = list(dataset.queries.values())
        source = list(dataset.documents())
        print(f"BM25: corpora from {dataset.name} ({len(source)} source documents), {len(queries)} queries")
        for size in bm25_sizes:
            row = bench_bm25(synthetic_corpus(source, size), queries, args.slow_queries)
            report["bm25"].append(row)
            print(
                f"  {size:>8} docs | index s: ours {row['ours_index_s']:.2f}, rank-bm25 {row['rank_bm25_index_s']:.2f}, "
                f"haystack {row['haystack_index_s']:.2f} | q/s: ours {row['ours_qps']:.0f} (batch), "
                f"{row['ours_qps_one_by_one']:.0f} (one by one), rank-bm25 {row['rank_bm25_qps']:.2f}, "
                f"haystack {row['haystack_qps']:.2f}"
            )
            print(
                f"           ratios vs rank-bm25: ours q/s x{row['qps_ratio_vs_rank_bm25']:.0f}, "
                f"haystack q/s x{row['haystack_qps_ratio_vs_rank_bm25']:.1f}, "
                f"index time rank-bm25/ours {row['index_time_ratio_rank_bm25_over_ours']:.2f} | "
                f"top-100 overlap with ours: rank-bm25 {row['top100_overlap_rank_bm25']:.2f}, "
                f"haystack {row['top100_overlap_haystack']:.2f} | RSS MB: ours {row['ours_rss_mb']:.0f}, "
                f"rank-bm25 {row['rank_bm25_rss_mb']:.0f}, haystack {row['haystack_rss_mb']:.0f}"
            )
    for size in [int(s) for s in args.faiss_sizes.split(",") if s]:
        row = bench_faiss(size, args.ann, args.faiss_queries, nprobe=args.nprobe, spread=args.spread)
        report["faiss"].append(row)
        print(
            f"FAISS {size:>8} x {row['dim']} (spread {row['spread']}, {row['threads']} threads) | build s: exact {row['exact_build_s']:.1f}, "
            f"{row['ann']} {row['ann_build_s']:.1f} | q/s: exact {row['exact_qps']:.0f}, {row['ann']} {row['ann_qps']:.0f} "
            f"(x{row['ann_qps_ratio']:.1f}) | {row['ann']} recall@100 {row['ann_recall_at_100']:.3f} | "
            f"RSS MB: vectors {row['vectors_mb']:.0f}, exact {row['exact_rss_mb']:.0f}, {row['ann']} {row['ann_rss_mb']:.0f}"
        )
    if args.output:
        write_report(args.output, report)


if __name__ == "__main__":
    main()
