"""Training configuration: the small-data recipe's defaults in one dataclass.

The defaults are what ``rerank-pipeline train`` uses and what the committed
Cranfield report was produced with; nothing in them refers to one collection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from rerank_pipeline.options import DISTILLATION_MODES, LOSSES, PRECISIONS, TRAINING_FIRST_STAGES

RENAMED_KEYS = {"fusion_depth": "rerank_fusion_depth"}
"""Old key -> new key, for ``training_config.json`` files written before the rename."""


@dataclass
class TrainingConfig:
    """Everything that decides what a training run does (saved in the model card and ``training_config.json``).

    Data: ``num_negatives`` hard negatives per judged query, drawn from first-stage ranks
    ``negative_rank_range`` (1-based, inclusive), never a judged positive, plus ``num_random_negatives`` easy
    ones from outside the first stage's top ``rerank_fusion_depth`` (they let a fresh scoring head start learning); a candidate whose first-stage
    score is within ``false_negative_margin`` (relative, 0..1) of the query's lowest-scored positive is
    skipped as a likely unjudged positive (``None`` turns this off). ``self_supervised_pairs`` pseudo-queries
    (a document's title, else its first sentence) are paired with the rest of their document and
    ``self_supervised_negatives`` mined (and ``self_supervised_random_negatives`` random) negatives each, so the fresh scoring head learns term matching from
    the corpus itself before the judged pairs refine it. Distillation warm start
    (``distillation``: ``auto`` = only when the base model has no trained one-label classification head):
    the training queries plus ``distillation_queries`` pseudo-queries, each with its first-stage top
    ``distillation_depth`` and ``distillation_random_documents`` random documents, labelled with the first
    stage's normalised scores, trained with BCE for ``distillation_epochs`` at ``distillation_learning_rate``
    before the judged pairs (see :mod:`rerank_pipeline.training.distillation`). ``dev_fraction`` of the judged queries (at least
    ``min_dev_queries``) are held out for model selection.

    Optimisation: BCE with ``pos_weight = negatives / positives`` (``loss="bce"``) or LambdaLoss
    (``loss="lambda"``), graded labels ``gain / max gain``, evaluation on the dev split every half epoch,
    the best dev nDCG@10 checkpoint kept. Fusion: the first stage's top ``rerank_fusion_depth`` candidates are
    reranked and fused with the first stage's scores (not RRF's per-side ``fusion_depth`` of a hybrid first stage).
    Fusion guard: the dev-tuned fusion weight is served only when the fused ranking beats the first stage on dev by a paired test at ``fusion_alpha`` (else ``fusion.json`` holds w = 0).
    """

    base_model: str = "answerdotai/ModernBERT-base"
    first_stage: str = "hybrid"
    embedding_model: str | None = None
    loss: str = "bce"
    num_epochs: float = 1.0
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 16
    max_length: int = 128
    num_negatives: int = 4
    num_random_negatives: int = 4
    negative_rank_range: tuple[int, int] = (3, 50)
    false_negative_margin: float | None = None
    self_supervised_pairs: int = 0
    self_supervised_negatives: int = 1
    self_supervised_random_negatives: int = 1
    graded_labels: bool = True
    distillation: str = "auto"
    distillation_queries: int = 250
    distillation_depth: int = 14
    distillation_random_documents: int = 3
    distillation_epochs: float = 1.0
    distillation_learning_rate: float = 2e-4
    dev_fraction: float = 0.2
    min_dev_queries: int = 5
    dev_rerank_depth: int = 30
    evaluations_per_epoch: int = 4
    rerank_fusion_depth: int = 100
    seed: int = 42
    precision: str = "auto"
    fusion_alpha: float = 0.05

    def __post_init__(self) -> None:
        """Check every setting when the config is made.

        :raises ValueError: If a setting is not one of its choices or out of range (the message names it and the
            value).
        """
        self.negative_rank_range = tuple(int(r) for r in self.negative_rank_range)  # type: ignore[assignment]
        low, high = self.negative_rank_range
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.first_stage not in TRAINING_FIRST_STAGES:
            raise ValueError(f"first_stage must be one of {TRAINING_FIRST_STAGES}, got {self.first_stage!r}")
        if not 1 <= low <= high:
            raise ValueError(f"negative_rank_range must be 1 <= low <= high, got {self.negative_rank_range}")
        counts = ("num_negatives", "num_random_negatives", "self_supervised_pairs", "self_supervised_negatives",
                  "self_supervised_random_negatives", "distillation_queries", "distillation_depth",
                  "distillation_random_documents")
        negative = [name for name in counts if getattr(self, name) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be between 0 and 1, got {self.dev_fraction}")
        if self.distillation not in DISTILLATION_MODES:
            raise ValueError(f"distillation must be one of {DISTILLATION_MODES}, got {self.distillation!r}")
        if self.distillation_epochs <= 0 or self.distillation_learning_rate <= 0:
            raise ValueError("distillation_epochs and distillation_learning_rate must be > 0")
        if self.num_epochs <= 0 or self.learning_rate <= 0 or self.batch_size <= 0 or self.max_length <= 8:
            raise ValueError("num_epochs, learning_rate, batch_size must be > 0 and max_length > 8")
        if self.false_negative_margin is not None and not 0 <= self.false_negative_margin < 1:
            raise ValueError(f"false_negative_margin must be in [0, 1), got {self.false_negative_margin}")
        if not 0 < self.fusion_alpha <= 1:
            raise ValueError(f"fusion_alpha must be in (0, 1], got {self.fusion_alpha}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists)."""
        data = asdict(self)
        data["negative_rank_range"] = list(self.negative_rank_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; a key of :data:`RENAMED_KEYS` is read under its new name.

        :raises ValueError: An unknown key.
        """
        data = dict(data)
        for old, new in RENAMED_KEYS.items():  # configs saved before a rename
            if old in data and new not in data:
                data[new] = data.pop(old)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}")
        return cls(**data)
