"""``rerank-pipeline train``: fine-tune a cross-encoder reranker on your corpus and judgements."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from rerank_pipeline.cli import add_progress_flag
from rerank_pipeline.options import (
    DISTILLATION_MODES,
    LOSSES,
    PRECISIONS,
    TRAINING_FIRST_STAGES,
    FirstStageOptions,
    add_first_stage_options,
)
from rerank_pipeline.training.config import TrainingConfig

DEFAULTS = TrainingConfig()


def register(subparsers) -> None:
    """Add the ``train`` subcommand to the ``rerank-pipeline`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a cross-encoder reranker on a corpus and training judgements",
        description=__doc__,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--beir-dir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    data.add_argument("--train-split", default="train", help="qrels split of --beir-dir to train on (never the test split)")
    data.add_argument("--judgements", help="JSONL/CSV of query + positive id or text (instead of a BEIR split)")
    data.add_argument("--corpus", help="corpus JSONL (_id, title, text) for --judgements, when not using --beir-dir")
    data.add_argument("--eval-split", help="after training, evaluate end to end on this held-out split of --beir-dir")
    model = parser.add_argument_group("model")
    model.add_argument("--base-model", default=DEFAULTS.base_model, help="Hub id or local folder of an encoder or cross-encoder")
    model.add_argument("--output", required=True, help="folder for the trained model (refused if it exists, unless --overwrite/--resume)")
    model.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    model.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    model.add_argument("--keep-checkpoints", action="store_true", help="keep output/checkpoints after training finishes")
    mining = parser.add_argument_group("first stage and negatives")
    add_first_stage_options(mining, kinds=TRAINING_FIRST_STAGES, default=DEFAULTS.first_stage,
                            help="first stage that mines negatives")
    mining.add_argument("--num-negatives", type=int, default=DEFAULTS.num_negatives, help="hard negatives per judged query")
    mining.add_argument("--negative-ranks", type=int, nargs=2, metavar=("LOW", "HIGH"), default=list(DEFAULTS.negative_rank_range),
                        help="first-stage rank range (1-based, inclusive) negatives are drawn from")
    mining.add_argument("--false-negative-margin", type=float, default=DEFAULTS.false_negative_margin,
                        help="skip candidates scoring within this relative margin of the best positive")
    mining.add_argument("--self-supervised-pairs", type=int, default=DEFAULTS.self_supervised_pairs,
                        help="title/first-sentence pseudo-queries drawn from the corpus (0 turns them off)")
    distillation = parser.add_argument_group("distillation warm start (first-stage scores as soft labels)")
    distillation.add_argument("--distillation", choices=DISTILLATION_MODES, default=DEFAULTS.distillation,
                              help="auto: only for a base without a trained cross-encoder head")
    distillation.add_argument("--distillation-queries", type=int, default=DEFAULTS.distillation_queries,
                              help="pseudo-queries from the corpus added to the training queries")
    distillation.add_argument("--distillation-epochs", type=float, default=DEFAULTS.distillation_epochs,
                              help="epochs over the soft labels before the judged pairs")
    distillation.add_argument("--distillation-learning-rate", type=float, default=DEFAULTS.distillation_learning_rate,
                              help="peak learning rate of the distillation warm start")
    training = parser.add_argument_group("training on the judged pairs")
    training.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss, help="bce (pointwise) or lambda (listwise LambdaLoss)")
    training.add_argument("--epochs", type=float, default=DEFAULTS.num_epochs, help="passes over the judged pairs (fractions allowed)")
    training.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate, help="peak learning rate (AdamW, linear warm-up and decay)")
    training.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="training pairs per step and device")
    training.add_argument("--max-length", type=int, default=DEFAULTS.max_length, help="token window of a (query, document) pair")
    training.add_argument("--dev-fraction", type=float, default=DEFAULTS.dev_fraction, help="share of judged queries held out for model selection")
    training.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision,
                          help="auto: bf16/fp16 on a GPU, fp32 on CPU")
    training.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds data order, negatives, pseudo-queries and initialisation")
    training.add_argument("--fusion-alpha", type=float, default=DEFAULTS.fusion_alpha,
                          help="serve the dev-tuned fusion weight only if the fused ranking beats the first stage on dev at this significance level")
    training.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
    parser.add_argument("--report-dir", help="also write report.md and results.json here")
    add_progress_flag(parser, "--quiet", help="print nothing: no stage lines, progress bars or tables")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`TrainingConfig` the command line asks for."""
    first_stage = FirstStageOptions.from_args(args)
    return TrainingConfig(
        base_model=args.base_model, first_stage=first_stage.kind, embedding_model=first_stage.embedding_model,
        loss=args.loss,
        num_epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size, max_length=args.max_length,
        num_negatives=args.num_negatives, negative_rank_range=tuple(args.negative_ranks),
        false_negative_margin=args.false_negative_margin, self_supervised_pairs=args.self_supervised_pairs,
        dev_fraction=args.dev_fraction, precision=args.precision, seed=args.seed, distillation=args.distillation,
        distillation_queries=args.distillation_queries, distillation_epochs=args.distillation_epochs,
        distillation_learning_rate=args.distillation_learning_rate, fusion_alpha=args.fusion_alpha,
    )


def run(args: argparse.Namespace) -> int:
    """Train, print the dev comparison, optionally evaluate on ``--eval-split`` and print the before/after table.

    Output paths are checked before any work; a run that fails or is interrupted before its first checkpoint
    removes the output folder it created, so the same command runs again.
    """
    from rerank_pipeline.output_paths import check_writable_folder, is_empty_folder
    from rerank_pipeline.provenance import PhaseTimer
    from rerank_pipeline.training.trainer import prepare_output_dir

    timer = PhaseTimer(since_process_start=True)
    if args.eval_split and not args.beir_dir:
        raise ValueError("--eval-split needs --beir-dir")
    if args.eval_split and args.eval_split == args.train_split and not args.judgements:
        raise ValueError(f"--eval-split {args.eval_split!r} is the training split; evaluate on a held-out split")
    config = config_from_args(args)
    if args.overwrite and args.resume:
        raise ValueError("choose either --overwrite or --resume, not both")
    # fail before any slow work, but create nothing: --overwrite empties the folder once the data has loaded
    output = check_writable_folder(args.output)
    if not (args.resume or args.overwrite) and output.is_dir() and not is_empty_folder(output):
        prepare_output_dir(output)  # raises its "already exists" error
    if args.report_dir:
        check_writable_folder(args.report_dir, "report folder")
    # the folder holding files before this run; --overwrite replaces it by a new one (a new inode) once data loaded
    previous = output.stat().st_ino if output.is_dir() and not is_empty_folder(output) else None
    try:
        return _train(args, config, timer)
    except BaseException as error:
        created = output.is_dir() and not args.resume and (previous is None or output.stat().st_ino != previous)
        if created and not _holds_progress(output):
            shutil.rmtree(output, ignore_errors=True)  # nothing to resume from: the same command can run again
        elif output.is_dir() and isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt(f"{output} kept: rerun with --resume to continue from its checkpoints") from None
        raise


def _holds_progress(output: Path) -> bool:
    """True once training saved something ``--resume`` continues from (a checkpoint, the distilled or final model)."""
    from rerank_pipeline.training.distillation import distilled_model_dir
    from rerank_pipeline.training.trainer import DISTILLATION_DIR, last_checkpoint

    return bool(
        last_checkpoint(output) or last_checkpoint(output / DISTILLATION_DIR)
        or (distilled_model_dir(output) / "config.json").is_file() or (output / "config.json").is_file()
    )


def _train(args: argparse.Namespace, config, timer) -> int:
    from rerank_pipeline.datasets import load_beir
    from rerank_pipeline.provenance import collect, header_lines
    from rerank_pipeline.training.candidates import CandidateSource
    from rerank_pipeline.training.judgements import check_held_out, load_training_collection
    from rerank_pipeline.training.report import before_after_table, dev_table, evaluate_held_out, protocol_table, write_training_report
    from rerank_pipeline.training.trainer import is_main_process, make_deterministic, train_reranker

    with timer.phase("load"):
        dataset = load_training_collection(args.beir_dir, args.train_split, args.judgements, args.corpus)
        held_out = load_beir(args.beir_dir, args.eval_split) if args.eval_split else None
    if held_out is not None:  # refuse a leaking held-out split before training, not after
        check_held_out(dataset, held_out, args.eval_split)
    quiet = args.no_progress or not is_main_process()
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    show = (lambda text: None) if quiet else print
    if quiet:
        silence_libraries()
    make_deterministic(config.seed)
    say(f"[data] {len(dataset.judged_queries())} judged queries, {len(dataset.corpus)} documents "
        f"({timer.seconds['load']:.1f} s)")
    with timer.phase("index"):
        candidates = CandidateSource.build(dataset, config.first_stage, config.embedding_model)
    say(f"[index] {config.first_stage} first stage over {len(dataset.corpus)} documents ({timer.seconds['index']:.1f} s)")
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    with timer.phase("train"):
        result = train_reranker(
            dataset, args.output, config, candidates, overwrite=args.overwrite, resume=args.resume,
            show_progress=not quiet, keep_checkpoints=args.keep_checkpoints, say=say, **overrides,
        )
    if not is_main_process():  # under torchrun / accelerate, rank 0 evaluates and writes the report
        return 0
    show(f"\nTrained in {result.training_seconds / 60:.1f} min; model saved to {result.output_dir}")
    show(f"\nDev split ({len(result.dev_queries)} queries), full-ranking nDCG@10 by reranker weight:\n")
    show(dev_table(result.dev_fusion_curve, result.fusion_weight, result.tuned_fusion_weight))
    show(f"\n{result.guard.sentence()}")
    evaluation = None
    if held_out is not None:
        with timer.phase("evaluate"):
            evaluation = evaluate_held_out(result, candidates, held_out, args.eval_split, show_progress=not quiet)
        say(f"[evaluate] {len(held_out.judged_queries())} {args.eval_split} queries ({timer.seconds['evaluate']:.1f} s)")
        show(f"\nBefore / after on {evaluation.split} (full ranking, {evaluation.relevance} relevance; "
             "value (change, p = t-test/randomization)):\n")
        show(before_after_table(evaluation))
        show(f"\n{evaluation.protocol_name} protocol (always_rerank_positives, binary relevance):\n")
        show(protocol_table(evaluation))
    command = "rerank-pipeline " + " ".join(shlex.quote(part) for part in sys.argv[1:]) if sys.argv[1:] else None
    provenance = collect(
        models={"base": config.base_model, "embedding": config.embedding_model, "trained": result.output_dir},
        datasets=[dataset, *([held_out] if held_out is not None else [])], seed=config.seed,
        timings={**timer.timings(), **{f"train: {stage}": s for stage, s in result.stage_seconds.items()}},
    )
    for line in header_lines(provenance):
        say(f"[provenance] {line}")
    write_training_report(result, evaluation, command, provenance, collection=dataset.name, report_dir=args.report_dir,
                          total_seconds=timer.elapsed())
    say(f"[done] total {timer.elapsed() / 60:.1f} min")
    return 0


def silence_libraries() -> None:
    """No progress bars or load reports from transformers, datasets and the Hub client (``--quiet``)."""
    import datasets
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    disable_progress_bars()
