"""Before/after evaluation of a trained reranker and the tables for its model card and report."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_pipeline.datasets import RetrievalDataset
from rerank_pipeline.eval.metrics import full_ranking_metrics
from rerank_pipeline.training.fusion_tuning import CachedScorer, fused_ranking, score_candidates

REPORT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")
CARD_SECTION_MARKER = "<!-- rerank-pipeline training report -->"


@dataclass
class BeforeAfter:
    """Full-ranking metrics of each system on one split, plus the R-k protocol figures of the reranker."""

    split: str
    rows: dict[str, dict[str, float]]
    protocol: dict[str, float] = field(default_factory=dict)
    protocol_name: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "rows": self.rows, "protocol_name": self.protocol_name, "protocol": self.protocol,
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
    rows: dict[str, dict[str, float]] = {}
    for name, extra in (extra_first_stages or {}).items():
        rows[name] = full_ranking_metrics(dataset.qrels, {qid: [d for d, _ in extra[qid]] for qid in judged})[0]
    scorer = model if isinstance(model, CachedScorer) else CachedScorer(model)
    scored = score_candidates(scorer, dataset.queries, dataset.document_text, rankings, depth, batch_size, show_progress)
    rows[first_stage_name] = full_ranking_metrics(dataset.qrels, fused_ranking(scored, 0.0))[0]
    rows[f"{first_stage_name} → reranker"] = full_ranking_metrics(dataset.qrels, fused_ranking(scored, 1.0))[0]
    rows[f"{first_stage_name} → reranker ⊕ {first_stage_name} (w={fusion_weight:g})"] = full_ranking_metrics(
        dataset.qrels, fused_ranking(scored, fusion_weight)
    )[0]
    protocol = rerank_protocol(dataset, rankings, scorer, rerank_k=protocol_k, batch_size=batch_size, name=dataset.name)
    return BeforeAfter(
        split=dataset.name, rows=rows, protocol=protocol.metrics, protocol_name=protocol.prefix,
        seconds=time.perf_counter() - started,
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def before_after_table(result: BeforeAfter, metrics: Sequence[str] = REPORT_METRICS) -> str:
    """One row per system, one column per full-ranking metric."""
    return markdown_table(["system", *metrics], [[name, *(f"{values[m]:.4f}" for m in metrics)] for name, values in result.rows.items()])


def protocol_table(result: BeforeAfter) -> str:
    """The R-k protocol table in the model-card shape: first stage order vs reranked, with the change."""
    names = [key for key in result.protocol if not key.startswith("base_")]
    rows = []
    for name in names:
        base, after = result.protocol[f"base_{name}"], result.protocol[name]
        rows.append([name, f"{base:.4f}", f"{after:.4f} ({after - base:+.4f})"])
    return markdown_table(["metric", "first stage order", f"{result.protocol_name} reranked"], rows)


def dev_table(curve: Mapping[float, Mapping[str, float]], weight: float) -> str:
    """Dev-split nDCG@10 of the fused ranking for each weight (0 = first stage, 1 = reranker alone)."""
    rows = [[f"{w:g}" + (" (chosen)" if w == weight else ""), f"{m['ndcg@10']:.4f}"] for w, m in curve.items()]
    return markdown_table(["reranker weight", "dev nDCG@10"], rows)


def card_section(
    config: Mapping[str, Any], pair_counts: Mapping[str, int], curve: Mapping[float, Mapping[str, float]], weight: float,
    training_seconds: float, evaluation: BeforeAfter | None = None, command: str | None = None,
) -> str:
    """The model-card section: before/after tables, dev fusion curve, training data counts and config."""
    parts = [CARD_SECTION_MARKER, "## Training report (rerank-pipeline)", ""]
    if command:
        parts += ["Command:", "", "```", command, "```", ""]
    if evaluation is not None:
        parts += [f"### Before / after on `{evaluation.split}` (full ranking, ir_measures, graded qrels)", "",
                  before_after_table(evaluation), "", f"### {evaluation.protocol_name} protocol on `{evaluation.split}`", "",
                  protocol_table(evaluation), ""]
    parts += ["### Dev split: fusion weight", "", "Fused score = w · minmax(reranker) + (1 − w) · minmax(first stage); "
              "the chosen w is stored in `fusion.json`.", "", dev_table(curve, weight), "",
              "### Training data", "", markdown_table(["count", "value"], [[k, v] for k, v in pair_counts.items()]), "",
              f"Training time: {training_seconds / 60:.1f} min.", "", "### Training config", "", "```json"]
    import json

    parts += [json.dumps(dict(config), indent=2), "```", ""]
    return "\n".join(parts)


def write_card_section(model_dir: str | Path, section: str) -> Path:
    """Append (or replace) the training-report section of ``model_dir/README.md``."""
    from rerank_pipeline.eval.reports import write_text_atomic

    path = Path(model_dir) / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else "# Cross-encoder reranker\n"
    if CARD_SECTION_MARKER in existing:
        existing = existing[: existing.index(CARD_SECTION_MARKER)].rstrip() + "\n"
    return write_text_atomic(path, existing.rstrip() + "\n\n" + section)
