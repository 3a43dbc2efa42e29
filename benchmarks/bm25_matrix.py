"""Time and peak memory of a BM25 matrix: ``bm25s.BM25.index`` on all term lists vs ``BM25MatrixBuilder`` in batches.

Builds a deterministic synthetic corpus of ``--documents`` documents of 30-90 terms (60 on average) drawn from a Zipf
distribution (exponent ``--zipf``, truncated) over a vocabulary of ``--vocabulary`` words: the Cranfield collection's
analyzed terms by frequency (when ``../shared/datasets/cranfield`` exists) followed by made-up words. Each side runs in
its own spawned child process, which makes the documents itself, batch by batch (``--batch``, each seeded on its own):

* bm25s: all the term lists in one list, then ``index`` (what the embedded store does today);
* ours: each batch handed to ``add`` and dropped, then ``build``.

Reported per side: build wall time (term generation excluded), the child's peak resident memory (``VmHWM``, which
includes its interpreter and imports: the resident size before the first document is printed too), and the ratio
ours / bm25s. Both engines answer the same 20 queries (top 10) and the results are compared. The CPU model is
printed, and ``uptime`` before and after.

    python benchmarks/bm25_matrix.py --documents 200000

Results (2-core AMD EPYC, load ~1.8, N=200,000; batches of 10,000): bm25s 9.3 s, peak 870 MB; ours 3.8 s, 454 MB
(ratios 0.41 time, 0.52 peak, 0.30 peak above the 272 MB the child held before its documents); same results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import time
from pathlib import Path

CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield" / "corpus.jsonl"


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def vocabulary(size: int) -> list[str]:
    """Cranfield's analyzed terms, most frequent first, then made-up words up to ``size``."""
    from collections import Counter

    from rerank_pipeline.components.bm25 import Analyzer

    words: list[str] = []
    if CRANFIELD.is_file():
        analyzer, counts = Analyzer(), Counter()
        with open(CRANFIELD, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                counts.update(analyzer.analyze(row.get("title", "") + " " + row.get("text", "")))
        words = [term for term, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))][:size]
    return words + [f"x{i}" for i in range(size - len(words))]


def batches(args, words: list[str]):
    """The corpus's term lists, ``args.batch`` documents at a time, each batch seeded on its own."""
    import numpy as np

    cdf = np.cumsum(1.0 / np.arange(1, len(words) + 1) ** args.zipf)
    cdf /= cdf[-1]
    for index, start in enumerate(range(0, args.documents, args.batch)):
        rng = np.random.default_rng([args.seed, index])
        n = min(args.batch, args.documents - start)
        lengths = rng.integers(30, 91, size=n)
        ranks = np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right").clip(max=len(words) - 1)
        flat = [words[r] for r in ranks.tolist()]
        bounds = np.r_[0, np.cumsum(lengths)].tolist()
        yield [flat[bounds[i]:bounds[i + 1]] for i in range(n)]


def queries(words: list[str]) -> list[list[str]]:
    import numpy as np

    rng = np.random.default_rng(12345)
    return [[words[r] for r in rng.integers(0, min(len(words), 3000), size=3).tolist()] for _ in range(20)]


def child(side: str, args, words: list[str], out) -> None:
    import logging

    import bm25s
    import numpy as np

    from rerank_pipeline.components.bm25_matrix import BM25MatrixBuilder

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    base_mb = status_mb("VmRSS")
    build_s = 0.0
    if side == "bm25s":
        corpus = [doc for batch in batches(args, words) for doc in batch]
        lists_mb = status_mb("VmRSS") - base_mb
        start = time.perf_counter()
        engine = bm25s.BM25(k1=args.k1, b=args.b, method="lucene")
        engine.index(corpus, show_progress=False)
        avgdl = float(np.mean([len(doc) for doc in corpus]))
        build_s = time.perf_counter() - start
        tokens = sum(len(doc) for doc in corpus)
        del corpus
    else:
        lists_mb = None
        builder = BM25MatrixBuilder(args.k1, args.b)
        tokens = 0
        for batch in batches(args, words):
            tokens += sum(len(doc) for doc in batch)
            start = time.perf_counter()
            builder.add(batch)
            build_s += time.perf_counter() - start
        del batch
        start = time.perf_counter()
        engine, avgdl = builder.build()
        build_s += time.perf_counter() - start
    result = engine.retrieve(queries(words), k=10, show_progress=False)
    out.put({
        "side": side, "build_s": build_s, "peak_mb": status_mb("VmHWM"), "base_mb": base_mb, "lists_mb": lists_mb,
        "tokens": tokens, "nnz": int(len(engine.scores["data"])), "vocabulary": len(engine.vocab_dict),
        "avgdl": avgdl, "documents": result.documents.tolist(), "scores": result.scores.tolist(),
    })


def run(side: str, args, words: list[str]) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=child, args=(side, args, words, out))
    start = time.perf_counter()
    process.start()
    result = out.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{side} child exited with {process.exitcode}")
    result["child_s"] = time.perf_counter() - start
    return result


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--vocabulary", type=int, default=100_000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--k1", type=float, default=0.9)
    parser.add_argument("--b", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from rerank_pipeline.hardware import cpu_description

    print(f"CPU: {cpu_description()}", flush=True)
    print("uptime before:", uptime(), flush=True)
    words = vocabulary(args.vocabulary)
    results = {side: run(side, args, words) for side in ("bm25s", "ours")}
    theirs, ours = results["bm25s"], results["ours"]
    print(f"{args.documents} documents, {theirs['tokens']} terms ({theirs['tokens'] / args.documents:.1f} a"
          f" document), {theirs['nnz']} matrix entries, vocabulary {theirs['vocabulary']} (with the empty token);"
          f" batches of {args.batch}")
    for r in (theirs, ours):
        lists = f", term lists {r['lists_mb']:.0f} MB" if r["lists_mb"] is not None else ""
        print(f"  {r['side']:5}: build {r['build_s']:6.1f} s (child {r['child_s']:.1f} s),"
              f" peak RSS {r['peak_mb']:6.0f} MB (before the documents {r['base_mb']:.0f} MB{lists})")
    above = (ours["peak_mb"] - ours["base_mb"]) / (theirs["peak_mb"] - theirs["base_mb"])
    print(f"  ours / bm25s: time {ours['build_s'] / theirs['build_s']:.2f},"
          f" peak RSS {ours['peak_mb'] / theirs['peak_mb']:.2f}, peak RSS above the start {above:.2f}")
    same = (ours["documents"] == theirs["documents"] and ours["scores"] == theirs["scores"]
            and ours["avgdl"] == theirs["avgdl"] and ours["nnz"] == theirs["nnz"]
            and ours["tokens"] == theirs["tokens"])
    print(f"  same top-10 documents and scores for 20 queries, same average length {ours['avgdl']:.3f}: {same}")
    print("uptime after:", uptime())
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
