"""``rerank-pipeline tune``: measure candidate depths, token windows and engines of a reranker on your judgements,
choose the fastest configuration that is not worse than reranking every candidate at full precision (or the best
within a latency budget), and write it as a servable pipeline with the report (:func:`rerank_pipeline.tuning.tune`)."""

from __future__ import annotations

import argparse

from rerank_pipeline.cli import add_progress_flag
from rerank_pipeline.options import (
    CALIBRATION_METHODS,
    TRAINING_FIRST_STAGES,
    add_first_stage_options,
    add_fusion_option,
    positive_int,
)


def _numbers(text: str) -> list[int]:
    """argparse ``type``: comma-separated positive integers, e.g. ``10,20,50``."""
    try:
        values = [positive_int(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated positive integers, e.g. 10,20,50")
    return values


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def run_tune(args: argparse.Namespace) -> int:
    """Parse, tune, write the output folder, print the table and the choice."""
    from rerank_pipeline.output_paths import check_replaceable_folder
    from rerank_pipeline.tuning import tune
    from rerank_pipeline.tuning.grid import DEFAULT_DEPTHS, DEFAULT_WINDOWS
    from rerank_pipeline.tuning.report import REPORT_MARKER, tune_markdown

    check_replaceable_folder(args.output, REPORT_MARKER, "output folder", args.overwrite, "--overwrite")
    engines = None
    if args.engines:
        from rerank_pipeline.hardware import engine_configurations

        available = {engine.label: engine for engine in engine_configurations(args.device)}
        unknown = [label for label in args.engines if label not in available]
        if unknown:
            raise ValueError(f"--engines: {', '.join(unknown)} not supported here; this machine runs: "
                             f"{', '.join(available)}")
        engines = [available[label] for label in args.engines]
    result = tune(
        args.beir_dir or args.dataset, args.index_dir, args.model, split=args.split, max_queries=args.max_queries,
        first_stage=args.first_stage or "bm25", embedding_model=args.embedding_model, depths=args.depths or DEFAULT_DEPTHS,
        windows=args.windows or DEFAULT_WINDOWS, engines=engines, reference_depth=args.candidates, top_k=args.top_k,
        fusion=args.fusion, ranker_options={"allow_untrained_head": True} if args.allow_untrained_head else None,
        alpha=args.alpha, epsilon=args.epsilon, budget_ms=args.budget_ms, latency_queries=args.latency_queries,
        full=args.full_grid, calibration=None if args.calibration == "none" else args.calibration,
        target_precision=args.target_precision, calibrated_scores=args.calibrated_scores, device=args.device,
        progress=not args.no_progress, log=print,
    )
    written = result.save(args.output, overwrite=args.overwrite)
    print(tune_markdown(result))
    print(f"wrote {', '.join(path.name for path in written)} to {args.output}; serve it with: rerank-pipeline serve "
          f"--pipeline {args.output}/pipeline.yml, measure it with: rerank-pipeline eval --pipeline "
          f"{args.output}/pipeline.yml")
    return 0


def register(subparsers) -> None:
    """Add the ``tune`` subcommand to the ``rerank-pipeline`` parser."""
    parser = subparsers.add_parser(
        "tune", help="choose candidate depth, token window and engine on your judgements; write the pipeline",
        description=__doc__,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir-dir", help="BEIR folder with the judgements (corpus.jsonl, queries.jsonl, qrels/)")
    source.add_argument("--dataset", help="NanoBEIR short name or Hugging Face dataset id in BEIR schema")
    parser.add_argument("--split", default="test", help="qrels split to tune on")
    parser.add_argument("--max-queries", type=positive_int, default=None, metavar="N",
                        help="only the first N judged queries")
    parser.add_argument("--index-dir", required=True,
                        help="first-stage index of the collection (built there with --first-stage when missing)")
    add_first_stage_options(parser, kinds=TRAINING_FIRST_STAGES, default=None,
                            help="first stage to build when --index-dir holds no index (default bm25)")
    parser.add_argument("--model", required=True, help="cross-encoder (folder or Hub id)")
    parser.add_argument("--output", required=True, help="folder for pipeline.yml and the tune.* report")
    parser.add_argument("--overwrite", action="store_true", help="replace an --output folder holding other files")
    parser.add_argument("--allow-untrained-head", action="store_true",
                        help="accept a --model without a trained scoring head (it scores with a random head)")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--depths", type=_numbers, default=None, metavar="N,N,...",
                      help="candidate depths to try (default 10,20,30,50,100)")
    grid.add_argument("--windows", type=_numbers, default=None, metavar="N,N,...",
                      help="token windows to try, up to the longest the model's positions take (default 128,256,512; "
                           "the reference keeps the model's own)")
    grid.add_argument("--engines", nargs="+", metavar="LABEL",
                      help="engines to try, e.g. 'torch fp32' 'openvino int8' (default: all this machine supports)")
    grid.add_argument("--candidates", type=positive_int, default=100,
                      help="the reference's depth: candidates reranked at the model's window in fp32")
    grid.add_argument("--top-k", type=positive_int, default=10, help="results the pipeline returns")
    grid.add_argument("--full-grid", action="store_true",
                      help="measure every combination (default: depths, then windows at the chosen depth, then "
                           "engines at the chosen depth and window)")
    grid.add_argument("--latency-queries", type=positive_int, default=20,
                      help="queries timed one at a time for each configuration")
    grid.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    add_fusion_option(parser)
    choice = parser.add_argument_group("choice")
    choice.add_argument("--alpha", type=_probability, default=0.05,
                        help="significance level of the paired t-test and randomization test")
    choice.add_argument("--epsilon", type=float, default=0.005,
                        help="largest drop in mean nDCG@10 a chosen configuration may show")
    choice.add_argument("--budget-ms", type=float, default=None,
                        help="choose the best nDCG@10 within this p50 latency instead")
    calibration = parser.add_argument_group("calibration")
    calibration.add_argument("--calibration", choices=(*CALIBRATION_METHODS, "none"), default="platt",
                             help="fit score -> probability of relevance for the chosen configuration")
    calibration.add_argument("--target-precision", type=_probability, default=0.5,
                             help="report the calibrated score_threshold reaching this precision")
    calibration.add_argument("--calibrated-scores", action="store_true",
                             help="the written pipeline's ranker returns calibrated probabilities as scores")
    add_progress_flag(parser)
    parser.set_defaults(func=run_tune)
