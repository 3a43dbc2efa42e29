"""Before/after evaluation of a trained reranker and the tables for its model card and report."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_pipeline.components.pair_ranking import ScorerRanker
from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval.metrics import full_ranking_metrics, relevance_kind
from rerank_pipeline.eval.scorers import CachedScorer
from rerank_pipeline.eval.significance import PairedTest, compare_per_query, format_delta
from rerank_pipeline.reranking import rerank

REPORT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")
CARD_SECTION_MARKER = "<!-- rerank-pipeline training report -->"


@dataclass
class BeforeAfter:
    """Full-ranking metrics of each system on one split, plus the R-k protocol figures of the reranker, with paired
    tests (``tests``: row -> metric -> test dict) of every row against the first stage."""

    split: str
    rows: dict[str, dict[str, float]]
    protocol: dict[str, float] = field(default_factory=dict)
    protocol_name: str = ""
    seconds: float = 0.0
    baseline: str = ""
    tests: dict[str, dict[str, dict]] = field(default_factory=dict)
    protocol_tests: dict[str, dict] = field(default_factory=dict)
    relevance: str = "graded"

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "rows": self.rows, "protocol_name": self.protocol_name, "protocol": self.protocol,
                "baseline": self.baseline, "relevance": self.relevance, "paired_tests": self.tests, "protocol_paired_tests": self.protocol_tests,
                "seconds": round(self.seconds, 1)}


def evaluate_before_after(
    model,
    dataset: RetrievalDataset,
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    fusion_weight: float,
    first_stage_name: str = "hybrid",
    extra_first_stages: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]] | None = None,
    depth: int = 100,
    protocol_k: int = 100,
    batch_size: int = 64,
    show_progress: bool = False,
) -> BeforeAfter:
    """Rerank the top ``depth`` of ``rankings`` with ``model`` and compare, end to end (ir_measures, graded qrels):
    each extra first stage, the first stage, the reranker alone, the reranker fused with the first stage at
    ``fusion_weight``; then the R``protocol_k`` protocol (pairs already scored are not scored again)."""
    from rerank_pipeline.eval.protocol import rerank_protocol

    started = time.perf_counter()
    judged = dataset.judged_queries()
    rankings = {qid: list(rankings[qid]) for qid in judged}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for name, extra in (extra_first_stages or {}).items():
        per_query[name] = full_ranking_metrics(dataset.qrels, {qid: [d for d, _ in extra[qid]] for qid in judged})[1]
    scorer = model if isinstance(model, CachedScorer) else CachedScorer(model)
    reranked = rerank(ScorerRanker(scorer, batch_size=batch_size, show_progress_bar=show_progress), dataset.queries,
                      rankings, dataset.document_text, depth)
    per_query[first_stage_name] = full_ranking_metrics(dataset.qrels, reranked.fused(0.0))[1]
    per_query[f"{first_stage_name} → reranker"] = full_ranking_metrics(dataset.qrels, reranked.fused(1.0))[1]
    if fusion_weight not in (0.0, 1.0):
        per_query[f"{first_stage_name} → reranker ⊕ {first_stage_name} (w={fusion_weight:g})"] = full_ranking_metrics(
            dataset.qrels, reranked.fused(fusion_weight)
        )[1]
    rows = {name: {m: sum(q[m] for q in values.values()) / len(values) for m in next(iter(values.values()))}
            for name, values in per_query.items()}
    others = [name for name in per_query if name != first_stage_name]
    tests = {name: {metric: test.to_dict() for metric, test in compare_per_query(
        per_query[first_stage_name], per_query[name], comparisons=len(others)).items()} for name in others}
    protocol = rerank_protocol(dataset, rankings, scorer, rerank_k=protocol_k, batch_size=batch_size, name=dataset.name)
    return BeforeAfter(
        split=dataset.name, rows=rows, protocol=protocol.metrics, protocol_name=protocol.prefix,
        seconds=time.perf_counter() - started, baseline=first_stage_name, tests=tests, relevance=relevance_kind(dataset.qrels),
        protocol_tests={metric: test.to_dict() for metric, test in protocol.paired_tests().items()},
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: float, test: Mapping[str, Any] | None) -> str:
    if test is None:
        return f"{value:.4f}"
    return format_delta(PairedTest(**test))


def before_after_table(result: BeforeAfter, metrics: Sequence[str] = REPORT_METRICS) -> str:
    """One row per system, one column per full-ranking metric; rows other than the first stage show the change
    and the paired-test p-values (t-test/randomization, Bonferroni over the rows) against it."""
    return markdown_table(["system", *metrics], [
        [name, *(_cell(values[m], result.tests.get(name, {}).get(m)) for m in metrics)] for name, values in result.rows.items()
    ])


def protocol_table(result: BeforeAfter) -> str:
    """The R-k protocol table in the model-card shape: first stage order vs reranked, with the change and the
    paired-test p-values."""
    names = [key for key in result.protocol if not key.startswith("base_")]
    rows = [[name, f"{result.protocol[f'base_{name}']:.4f}",
             _cell(result.protocol[name], result.protocol_tests.get(name))] for name in names]
    return markdown_table(["metric", "first stage order", f"{result.protocol_name} reranked"], rows)


def dev_table(curve: Mapping[float, Mapping[str, float]], weight: float, tuned: float | None = None) -> str:
    """Dev-split nDCG@10 of the fused ranking for each weight (0 = first stage, 1 = reranker alone); marks the
    served weight and, when the guard fell back, the tuned one."""
    def label(w: float) -> str:
        return f"{w:g}" + (" (served)" if w == weight else " (best on dev, not served)" if w == tuned else "")

    rows = [[label(w), f"{m['ndcg@10']:.4f}"] for w, m in curve.items()]
    return markdown_table(["reranker weight", "dev nDCG@10"], rows)


def card_section(
    config: Mapping[str, Any], pair_counts: Mapping[str, int], curve: Mapping[float, Mapping[str, float]], weight: float,
    training_seconds: float, evaluation: BeforeAfter | None = None, command: str | None = None,
    guard=None, provenance: Mapping[str, Any] | None = None, collection: str | None = None,
) -> str:
    """The model-card section: the collection adapted to, before/after tables with paired tests, the dev fusion
    curve and guard, training data counts, config and provenance."""
    parts = [CARD_SECTION_MARKER, "## Training report (rerank-pipeline)", ""]
    if collection:
        parts += [f"Adapted to the collection `{collection}`: the fusion weight and the figures below hold for it, "
                  "not for other collections.", ""]
    if command:
        parts += ["Command:", "", "```", command, "```", ""]
    if evaluation is not None:
        significance = ("Cells: value (change against the first stage, p = paired t-test / randomization test, "
                        "two-sided, Bonferroni-corrected); * = both p < 0.05.")
        parts += [f"### Before / after on `{evaluation.split}` (full ranking, ir_measures, {evaluation.relevance} "
                  "relevance, fractions)", "", significance, "", before_after_table(evaluation), "",
                  f"### {evaluation.protocol_name} protocol on `{evaluation.split}` (R-k with always_rerank_positives, "
                  "binary relevance, fractions)", "", protocol_table(evaluation), ""]
    parts += ["### Dev split: fusion weight", "", "Fused score = w · minmax(reranker) + (1 − w) · minmax(first stage); "
              "the served w is stored in `fusion.json`.", ""]
    if guard is not None:
        parts += [guard.sentence()[0].upper() + guard.sentence()[1:] + ".", ""]
    parts += [dev_table(curve, weight, guard.tuned_weight if guard is not None else None), "",
              "### Training data", "", markdown_table(["count", "value"], [[k, v] for k, v in pair_counts.items()]), "",
              f"Training time: {training_seconds / 60:.1f} min.", "", "### Training config", "", "```json"]
    import json

    parts += [json.dumps(dict(config), indent=2), "```", ""]
    if provenance is not None:
        from rerank_pipeline.provenance import markdown_section

        parts += [markdown_section(provenance)]
    return "\n".join(parts)


def write_card_section(model_dir: str | Path, section: str) -> Path:
    """Append (or replace) the training-report section of ``model_dir/README.md``."""
    from rerank_pipeline.eval.reports import write_text_atomic

    path = Path(model_dir) / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else "# Cross-encoder reranker\n"
    if CARD_SECTION_MARKER in existing:
        existing = existing[: existing.index(CARD_SECTION_MARKER)].rstrip() + "\n"
    return write_text_atomic(path, existing.rstrip() + "\n\n" + section)


def evaluate_held_out(result, candidates, held_out: RetrievalDataset, split: str, show_progress: bool = False) -> BeforeAfter:
    """The trained model of ``result`` (a :class:`~rerank_pipeline.training.trainer.TrainingResult`) on the
    held-out ``held_out`` collection: :func:`evaluate_before_after` on ``candidates``' rankings (the training run's
    first stage), with BM25 as an extra row when that first stage is not BM25; ``split`` names the qrels split."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from rerank_pipeline.training.candidates import CandidateSource

    config = result.config
    rankings = candidates.retrieve(held_out.judged_queries(), top_k=config.rerank_fusion_depth)
    extra = {}
    if config.first_stage != "bm25":
        extra["BM25"] = CandidateSource.build(held_out, "bm25").retrieve(held_out.judged_queries(), top_k=config.rerank_fusion_depth)
    trained = CrossEncoder(str(result.output_dir), device="cuda" if torch.cuda.is_available() else "cpu")
    evaluation = evaluate_before_after(
        trained, held_out, rankings, result.fusion_weight, first_stage_name=config.first_stage,
        extra_first_stages=extra, depth=config.rerank_fusion_depth, protocol_k=config.rerank_fusion_depth, show_progress=show_progress,
    )
    evaluation.split = f"{held_out.name}/{split}"
    return evaluation


def write_training_report(result, evaluation: BeforeAfter | None, command: str | None, provenance: Mapping[str, Any],
                          collection: str, report_dir: str | Path | None = None, total_seconds: float | None = None) -> list[Path]:
    """The training report of ``result``: its section of the model card (``README.md`` in the model folder) and,
    with ``report_dir``, ``results.json`` and ``report.md`` there (machine paths made portable)."""
    from rerank_pipeline.eval.reports import portable_paths, write_json, write_text_atomic
    from rerank_pipeline.training.trainer import summary_payload

    section = card_section(result.config.to_dict(), result.pair_counts, result.dev_fusion_curve, result.fusion_weight,
                           result.training_seconds, evaluation, command, guard=result.guard, provenance=provenance,
                           collection=collection)
    written = [write_card_section(result.output_dir, section)]
    if report_dir:
        report = Path(report_dir)
        total = round(total_seconds if total_seconds is not None else result.total_seconds, 1)
        payload = {**summary_payload(result), "command": command, "total_seconds": total,
                   "evaluation": evaluation.to_dict() if evaluation else None, "provenance": dict(provenance)}
        written.append(write_json(report / "results.json", portable_paths(payload)))  # a report may be committed
        written.append(write_text_atomic(report / "report.md", portable_paths(
            "# Training report\n" + section.split("\n", 2)[2]
            + f"\nTotal wall time (indexing, training, evaluation): {total / 60:.1f} min.\n")))
    return written
