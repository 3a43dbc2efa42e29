"""Fine-tune a cross-encoder on a user's corpus and judgements with sentence-transformers' CrossEncoderTrainer.

:func:`train_reranker` runs the whole recipe: first-stage candidates, hard negatives, self-supervised pairs,
training with dev-split model selection (our R-k protocol), a dev-tuned fusion weight, and a model folder that
``CrossEncoderRanker`` and ``sentence_transformers.CrossEncoder`` both load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rerank_pipeline.atomic import write_text_atomic
from rerank_pipeline.components.pair_ranking import ScorerRanker
from rerank_pipeline.components.score_fusion import save_fusion_settings
from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval.scorers import CachedScorer
from rerank_pipeline.reranking import rerank
from rerank_pipeline.training.candidates import CandidateSource
from rerank_pipeline.training.config import TrainingConfig
from rerank_pipeline.training.distillation import (
    build_distillation_pairs,
    distilled_model_dir,
    is_trained_cross_encoder,
)
from rerank_pipeline.training.fusion_tuning import FusionGuard, choose_fusion_weight, fusion_curve, guard_fusion_weight
from rerank_pipeline.training.judgements import split_dev
from rerank_pipeline.training.negatives import mine_hard_negatives, sample_random_negatives
from rerank_pipeline.training.pairs import TrainingPairs, build_training_pairs
from rerank_pipeline.training.self_supervised import sample_pseudo_queries

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
DISTILLATION_DIR = "distillation"
CONFIG_FILE = "training_config.json"
SUMMARY_FILE = "training_summary.json"


class OutputExistsError(ValueError):
    """The output folder already holds files and neither overwrite nor resume was asked for."""


@dataclass
class TrainingResult:
    """What a training run produced: the model folder, dev figures and timings."""

    output_dir: Path
    config: TrainingConfig
    train_queries: list[str]
    dev_queries: list[str]
    pair_counts: dict[str, int]
    dev_fusion_curve: dict[float, dict[str, float]]
    fusion_weight: float
    dev_protocol: dict[str, float]
    training_seconds: float
    total_seconds: float
    log_history: list[dict[str, Any]] = field(default_factory=list)
    guard: FusionGuard | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dev_first_stage(self) -> dict[str, float]:
        return self.dev_fusion_curve[0.0]

    @property
    def dev_reranker(self) -> dict[str, float]:
        return self.dev_fusion_curve[1.0]

    @property
    def dev_fused(self) -> dict[str, float]:
        """Dev metrics at the served weight (the first stage's when the guard fell back to w = 0)."""
        return self.dev_fusion_curve[self.fusion_weight]

    @property
    def tuned_fusion_weight(self) -> float:
        """The best dev weight of the grid, before the guard."""
        return self.guard.tuned_weight if self.guard else self.fusion_weight


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels (``transformers.enable_full_determinism``,
    warn-only: on a GPU a few kernels have no deterministic version, and cuDNN/cuBLAS reductions may still differ
    between GPU models). On CPU, a run is bit-for-bit repeatable for the same thread count and library versions."""
    from transformers import enable_full_determinism

    enable_full_determinism(seed, warn_only=True)


def is_main_process() -> bool:
    """True on the process that writes files: the only one, or rank 0 under torchrun / accelerate."""
    return int(os.environ.get("RANK", "0")) == 0


def prepare_output_dir(output_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse a non-empty output folder unless ``overwrite`` (emptied first) or ``resume`` (kept) is set."""
    output = Path(output_dir)
    if overwrite and resume:
        raise ValueError("choose either overwrite or resume, not both")
    if not is_main_process():  # rank 0 checks and clears the folder; the others only write checkpoints into it
        output.mkdir(parents=True, exist_ok=True)
        return output
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output path {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        if overwrite:
            shutil.rmtree(output)
        elif not resume:
            raise OutputExistsError(
                f"output folder {output} already exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue from its last checkpoint"
            )
    output.mkdir(parents=True, exist_ok=True)
    return output


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder under ``output_dir/checkpoints``, or ``None``."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = sorted(folder.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[-1]) if path.name.split("-")[-1].isdigit() else -1)
    return str(found[-1]) if found else None


def precision_flags(precision: str = "auto", cuda: bool | None = None, bf16_supported: bool | None = None) -> dict[str, bool]:
    """Trainer precision flags: bf16 (else fp16) on a GPU for ``auto``, fp32 on CPU."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if bf16_supported is None:
        bf16_supported = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        precision = ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if precision in ("bf16", "fp16") and not cuda:
        raise ValueError(f"precision {precision} needs a GPU; use fp32 (or auto) on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def build_training_arguments(
    config: TrainingConfig,
    output_dir: str | Path,
    num_examples: int,
    world_size: int | None = None,
    cuda: bool | None = None,
    bf16_supported: bool | None = None,
    metric_for_best_model: str | None = "eval_dev_R30_ndcg@10",
    **overrides: Any,
):
    """``CrossEncoderTrainingArguments`` for the recipe.

    Evaluation and checkpointing happen ``config.evaluations_per_epoch`` times an epoch (counted in optimizer steps
    of one process: under torchrun/accelerate with ``WORLD_SIZE`` processes each sees ``1/WORLD_SIZE`` of the
    batches), the best dev checkpoint is loaded at the end.
    """
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = max(1, math.ceil(num_examples / (config.batch_size * max(1, world_size))))
    eval_steps = max(1, steps_per_epoch // max(1, config.evaluations_per_epoch))
    total_steps = math.ceil(steps_per_epoch * config.num_epochs)
    arguments = dict(
        output_dir=str(Path(output_dir) / CHECKPOINT_DIR),
        num_train_epochs=config.num_epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=max(1, round(config.warmup_ratio * total_steps)),
        weight_decay=config.weight_decay,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric_for_best_model,
        greater_is_better=True,
        logging_steps=max(1, min(50, eval_steps // 2)),
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **precision_flags(config.precision, cuda=cuda, bf16_supported=bf16_supported),
    )
    arguments.update(overrides)
    return CrossEncoderTrainingArguments(**arguments)


def make_loss(config: TrainingConfig, model, pairs: TrainingPairs):
    """BCE with ``pos_weight = negatives / positives`` (default) or LambdaLoss (listwise)."""
    from sentence_transformers.cross_encoder import losses

    if config.loss == "lambda":
        return losses.LambdaLoss(model)
    pos_weight = torch.tensor(max(pairs.negatives, 1) / max(pairs.positives, 1))
    return losses.BinaryCrossEntropyLoss(model, pos_weight=pos_weight)


def without_raw_log_lines(trainer, show_progress: bool):
    """Keep the trainer's progress bar (with ETA) when ``show_progress``, but never print its raw loss dictionaries:
    the losses stay in ``trainer.state.log_history`` and the report."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if show_progress:
        trainer.add_callback(BarOnly)
    return trainer


def load_base_model(config: TrainingConfig):
    """The base model as a one-label ``CrossEncoder``; a bi-encoder or plain encoder gets a fresh seeded head."""
    from sentence_transformers.cross_encoder import CrossEncoder

    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return CrossEncoder(config.base_model, num_labels=1, max_length=config.max_length, device=device)
    except OSError as error:
        raise RuntimeError(
            f"cannot load base model {config.base_model!r} (a Hub id needs network or a cached copy; "
            f"a local folder works offline): {error}"
        ) from error


def merge_negatives(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """Concatenate per-query negative lists, dropping repeats."""
    merged: dict[str, list[str]] = {}
    for source in sources:
        for query_id, doc_ids in source.items():
            merged[query_id] = list(dict.fromkeys([*merged.get(query_id, []), *doc_ids]))
    return merged


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def wants_distillation(config: TrainingConfig, model) -> bool:
    """``on``/``off`` as given; ``auto`` distils only a base without a trained one-label classification head."""
    if config.distillation == "auto":
        return not is_trained_cross_encoder(model)
    return config.distillation == "on"


def warm_start_by_distillation(
    model,
    dataset: RetrievalDataset,
    train_ids: list[str],
    candidates: CandidateSource,
    config: TrainingConfig,
    output: Path,
    resume: bool,
    show_progress: bool,
    **argument_overrides: Any,
) -> tuple[Any, dict[str, int]]:
    """Train ``model`` on first-stage soft labels (:mod:`~rerank_pipeline.training.distillation`) and return it
    with the pair counts. The result is saved in ``output/distilled``; a resumed run loads it from there."""
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, losses

    saved = distilled_model_dir(output)
    if resume and (saved / "config.json").is_file():
        logger.info("resuming after the distillation stage: loading %s", saved)
        return CrossEncoder(str(saved), num_labels=1, max_length=config.max_length, device=model.device), {}
    pseudo = sample_pseudo_queries(dataset.corpus, config.distillation_queries, config.seed)
    queries = {qid: dataset.queries[qid] for qid in train_ids} | {f"pseudo:{p.doc_id}": p.query for p in pseudo}
    fused, per_retriever = candidates.retrieve_with_side_rankings(
        queries, top_k=config.distillation_depth, side_top_k=config.rerank_fusion_depth
    )
    pairs = build_distillation_pairs(
        queries, fused, per_retriever, dataset.document_text, sorted(dataset.corpus), config.distillation_depth,
        config.distillation_random_documents, config.seed,
    )
    counts = {"distillation_queries": len(queries), "distillation_pairs": len(pairs)}
    logger.info("distillation warm start: %s", counts)
    stage = replace(config, num_epochs=config.distillation_epochs, learning_rate=config.distillation_learning_rate)
    stage_dir = output / DISTILLATION_DIR
    arguments = build_training_arguments(
        stage, stage_dir, len(pairs), metric_for_best_model=None, eval_strategy="no", load_best_model_at_end=False,
        disable_tqdm=not show_progress, **argument_overrides,
    )
    trainer = CrossEncoderTrainer(
        model=model, args=arguments, train_dataset=pairs.pairwise_dataset().shuffle(seed=config.seed),
        loss=losses.BinaryCrossEntropyLoss(model),
    )
    without_raw_log_lines(trainer, show_progress)
    trainer.train(resume_from_checkpoint=last_checkpoint(stage_dir) if resume else None)
    if is_main_process():
        model.save_pretrained(str(saved))
    return model, counts


def train_reranker(
    dataset: RetrievalDataset,
    output_dir: str | Path,
    config: TrainingConfig | None = None,
    candidates: CandidateSource | None = None,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    keep_checkpoints: bool = False,
    say: Callable[[str], None] | None = None,
    **argument_overrides: Any,
) -> TrainingResult:
    """Train a reranker on ``dataset`` (its queries and qrels are the training judgements) into ``output_dir``.

    A base without a trained scoring head is first warm-started by distillation from the first stage
    (``config.distillation``), then trained on the judged pairs.

    ``candidates`` supplies first-stage rankings (built from ``config.first_stage`` when ``None``).
    ``argument_overrides`` go to ``CrossEncoderTrainingArguments`` (e.g. ``max_steps`` for a smoke test).
    Checkpoints (``output_dir/checkpoints``, ``output_dir/distillation`` and the warm-started ``output_dir/distilled``,
    what ``resume`` continues from) are removed once the model is saved, unless ``keep_checkpoints``.
    ``say`` receives one line per stage (mining, distillation, judged pairs, model selection, fusion tuning) with
    its counts and elapsed time.

    :raises DatasetError: If there are too few judged queries to hold out ``config.min_dev_queries`` for the dev
        split and train on the rest (checked before ``output_dir`` is touched).
    :raises OutputExistsError: If ``output_dir`` is a file, or a non-empty folder and neither ``overwrite`` nor
        ``resume`` is set.
    :raises ValueError: If both ``overwrite`` and ``resume`` are set, or ``config.precision`` needs a GPU there is not.
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    make_deterministic(config.seed)
    stage_seconds: dict[str, float] = {}
    stage_started = [time.perf_counter()]

    def stage_done(name: str, text: str) -> None:
        stage_seconds[name] = time.perf_counter() - stage_started[0]
        stage_started[0] = time.perf_counter()
        if say is not None and is_main_process():
            say(f"[{name}] {text} ({stage_seconds[name]:.1f} s)")

    judged = list(dataset.judged_queries())
    train_ids, dev_ids = split_dev(judged, config.dev_fraction, config.min_dev_queries, config.seed)
    output = prepare_output_dir(output_dir, overwrite=overwrite, resume=resume)  # after the checks: overwrite deletes
    logger.info("training on %d judged queries, %d held out for dev", len(train_ids), len(dev_ids))

    candidates = candidates or CandidateSource.build(dataset, config.first_stage, config.embedding_model)
    depth = max(config.rerank_fusion_depth, config.negative_rank_range[1], config.dev_rerank_depth)
    rankings = candidates.retrieve({qid: dataset.queries[qid] for qid in judged}, top_k=depth)
    train_rankings = {qid: rankings[qid] for qid in train_ids}
    doc_ids = sorted(dataset.corpus)
    negatives = merge_negatives(
        mine_hard_negatives(train_rankings, dataset.qrels, config.num_negatives, config.negative_rank_range,
                            config.false_negative_margin, config.seed),
        sample_random_negatives(train_rankings, dataset.qrels, doc_ids, config.num_random_negatives, depth, config.seed),
    )
    pseudo = sample_pseudo_queries(dataset.corpus, config.self_supervised_pairs, config.seed)
    pseudo_negatives = {}
    if pseudo and (config.self_supervised_negatives or config.self_supervised_random_negatives):
        pseudo_qrels = {p.doc_id: {p.doc_id: 1} for p in pseudo}
        pseudo_depth = max(config.negative_rank_range[1], config.dev_rerank_depth)
        pseudo_rankings = candidates.retrieve({p.doc_id: p.query for p in pseudo}, top_k=pseudo_depth)
        pseudo_negatives = merge_negatives(
            mine_hard_negatives(pseudo_rankings, pseudo_qrels, config.self_supervised_negatives,
                                config.negative_rank_range, None, config.seed),
            sample_random_negatives(pseudo_rankings, pseudo_qrels, doc_ids, config.self_supervised_random_negatives,
                                    pseudo_depth, config.seed),
        )
    pairs = build_training_pairs(
        dataset.queries, dataset.qrels, negatives, dataset.document_text, pseudo, pseudo_negatives, config.graded_labels
    )
    counts = {
        "judged_pairs": pairs.judged_pairs, "self_supervised_pairs": pairs.self_supervised_pairs,
        "positives": pairs.positives, "negatives": pairs.negatives, "train_queries": len(train_ids),
        "dev_queries": len(dev_ids), "pseudo_queries": len(pseudo),
    }
    logger.info("training pairs: %s", counts)
    stage_done("mining", f"{len(train_ids)} training queries, {len(dev_ids)} dev; {pairs.judged_pairs} judged pairs "
               f"({pairs.positives} positives, {pairs.negatives} negatives), {len(pseudo)} pseudo-queries")
    if is_main_process():
        write_json_atomic(output / CONFIG_FILE, config.to_dict())

    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    from rerank_pipeline.eval.evaluator import RerankingEvaluator

    model = load_base_model(config)
    training_started = time.perf_counter()  # both stages count as training time
    if wants_distillation(config, model):
        model, distillation_counts = warm_start_by_distillation(
            model, dataset, train_ids, candidates, config, output, resume, show_progress, **argument_overrides
        )
        counts.update(distillation_counts)
        stage_done("distillation", f"{distillation_counts.get('distillation_pairs', 0)} soft-labelled pairs from "
                   f"{distillation_counts.get('distillation_queries', 0)} queries" if distillation_counts
                   else "resumed from the saved warm start")
    dev_dataset = RetrievalDataset(
        name="dev", corpus=dataset.corpus, queries={qid: dataset.queries[qid] for qid in dev_ids},
        qrels={qid: dataset.qrels[qid] for qid in dev_ids},
    )
    dev_rankings = {qid: rankings[qid] for qid in dev_ids}
    evaluator = RerankingEvaluator(dev_dataset, dev_rankings, rerank_k=config.dev_rerank_depth, name="dev", write_csv=False)
    train_data = pairs.listwise_dataset() if config.loss == "lambda" else pairs.pairwise_dataset()
    arguments = build_training_arguments(
        config, output, len(train_data), metric_for_best_model=f"eval_{evaluator.primary_metric}",
        disable_tqdm=not show_progress, **argument_overrides,
    )
    trainer = CrossEncoderTrainer(
        model=model, args=arguments, train_dataset=train_data.shuffle(seed=config.seed),
        loss=make_loss(config, model, pairs), evaluator=evaluator,
    )
    without_raw_log_lines(trainer, show_progress)
    resume_from = last_checkpoint(output) if resume else None
    if resume and resume_from is None:
        logger.warning("no checkpoint under %s; training from the start", output / CHECKPOINT_DIR)
    trainer.train(resume_from_checkpoint=resume_from)
    training_seconds = time.perf_counter() - training_started
    stage_done("judged pairs", f"{len(train_data)} training examples, {trainer.state.global_step} optimizer steps")
    best = trainer.state.best_metric
    stage_done("model selection", f"checkpoint {Path(trainer.state.best_model_checkpoint or 'last').name} kept, "
               f"dev {evaluator.primary_metric} {best:.4f}" if best is not None else "no dev evaluation ran; last weights kept")

    scorer = CachedScorer(model)  # the dev protocol below scores these pairs again: answered from the cache
    reranked = rerank(ScorerRanker(scorer, batch_size=64), dataset.queries, dev_rankings, dataset.document_text,
                      config.rerank_fusion_depth)
    dev_protocol = evaluator(scorer)
    curve = fusion_curve(reranked, dataset.qrels)
    guard = guard_fusion_weight(reranked, dataset.qrels, choose_fusion_weight(curve), alpha=config.fusion_alpha)
    weight = guard.served_weight
    logger.info(guard.sentence())
    stage_done("fusion tuning", guard.sentence())

    if is_main_process():
        model.save_pretrained(str(output))
        save_fusion_settings(
            output, weight, first_stage=config.first_stage, depth=config.rerank_fusion_depth,
            dev_ndcg_at_10={str(w): round(m["ndcg@10"], 4) for w, m in curve.items()}, guard=guard.to_dict(),
            collection=dataset.name,
        )
    if not keep_checkpoints and is_main_process():
        for intermediate in (output / CHECKPOINT_DIR, output / DISTILLATION_DIR, distilled_model_dir(output)):
            shutil.rmtree(intermediate, ignore_errors=True)
    result = TrainingResult(
        output_dir=output, config=config, train_queries=train_ids, dev_queries=dev_ids, pair_counts=counts,
        dev_fusion_curve=curve, fusion_weight=weight, dev_protocol=dev_protocol, training_seconds=training_seconds,
        total_seconds=time.perf_counter() - started, log_history=list(trainer.state.log_history), guard=guard,
        stage_seconds=stage_seconds,
    )
    if is_main_process():
        write_json_atomic(output / SUMMARY_FILE, summary_payload(result))
    return result


def summary_payload(result: TrainingResult) -> dict[str, Any]:
    """The JSON-able essentials of a :class:`TrainingResult` (``training_summary.json``)."""
    return {
        "config": result.config.to_dict(),
        "pair_counts": result.pair_counts,
        "dev_queries": result.dev_queries,
        "fusion_weight": result.fusion_weight,
        "fusion_guard": result.guard.to_dict() if result.guard else None,
        "stage_seconds": {stage: round(seconds, 1) for stage, seconds in result.stage_seconds.items()},
        "dev_fusion_curve": {str(weight): metrics for weight, metrics in result.dev_fusion_curve.items()},
        "dev_protocol": result.dev_protocol,
        "training_seconds": round(result.training_seconds, 1),
        "total_seconds": round(result.total_seconds, 1),
        "loss_history": [
            {key: entry[key] for key in ("step", "epoch", "loss") if key in entry} for entry in result.log_history if "loss" in entry
        ],
    }
