"""Score fusion of a reranker with the first stage: the reranker's graceful fallback.

The fused score of a candidate is ``weight * minmax(reranker) + (1 - weight) * minmax(first stage)``, min-max
normalised over one query's candidates. ``weight = 1`` is the reranker alone, ``weight = 0`` the first stage
alone. A trained model folder stores its dev-tuned weight in ``fusion.json`` (see :func:`save_fusion_settings`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict

from rerank_pipeline.atomic import atomic_write
from rerank_pipeline.components.rrf import FUSION_DEPTH, RRF_K, ReciprocalRankFusion
from rerank_pipeline.options import FUSION_METHODS

FUSION_FILE = "fusion.json"
"""After the ranker: the model folder's ``fusion.json`` (when it has one), nothing, or RRF with the first stage."""


def min_max(scores: Sequence[float] | np.ndarray, constant: float = 0.5) -> np.ndarray:
    """Scale scores to [0, 1]; constant scores all become ``constant`` (0.5: no information either way)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.full_like(values, constant)
    return (values - low) / (high - low)


def fuse_scores(reranker_scores: Sequence[float] | np.ndarray, first_stage_scores: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """Convex combination of one query's min-max normalised reranker and first-stage scores."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    reranker = np.asarray(reranker_scores, dtype=np.float64)
    first_stage = np.asarray(first_stage_scores, dtype=np.float64)
    if reranker.shape != first_stage.shape:
        raise ValueError(f"got {reranker.shape[0]} reranker scores for {first_stage.shape[0]} first-stage scores")
    return weight * min_max(reranker) + (1.0 - weight) * min_max(first_stage)


def save_fusion_settings(model_dir: str | Path, weight: float, **details: Any) -> Path:
    """Write ``fusion.json`` (``{"method": "minmax", "weight": ...}`` plus ``details``) atomically into ``model_dir``."""
    path = Path(model_dir) / FUSION_FILE
    payload = {"method": "minmax", "weight": float(weight), **details}
    with atomic_write(path) as out:  # e.g. details that are not JSON: no half-written file, old one kept
        json.dump(payload, out, indent=2)
    return path


def load_fusion_weight(model_dir: str | Path) -> float | None:
    """The weight stored in ``model_dir/fusion.json``, or ``None`` when the folder has none."""
    path = Path(model_dir) / FUSION_FILE
    if not path.is_file():
        return None
    payload = json.loads(path.read_text(encoding="utf-8"))
    weight = float(payload["weight"])
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{path}: fusion weight must be in [0, 1], got {weight}")
    return weight


@dataclass(frozen=True)
class FusionChoice:
    """What follows the ranker: ``method`` ``"model"`` (score fusion with ``weight``), ``"rrf"`` or ``"none"``."""

    method: str
    weight: float | None = None
    model: str | None = None
    reason: str = ""

    def summary(self) -> str:
        """One line for the console, e.g. ``fusion: fusion.json of models/x, weight 0.3 (...)``."""
        if self.method == "model":
            meaning = {0.0: "0: serves the first-stage order", 1.0: "1: the reranker alone"}.get(
                self.weight, "the reranker's share of the min-max fused score")
            return f"fusion: {FUSION_FILE} of {self.model}, weight {self.weight:g} ({meaning})"
        if self.method == "rrf":
            return "fusion: rrf of the first stage and the reranker (reciprocal rank fusion, untuned)"
        return f"fusion: none ({self.reason})"

    def component(self, top_k: int | None = None, depth: int = FUSION_DEPTH):
        """The component that puts this fusion after a ranker (None for ``"none"``): a :class:`RerankerScoreFusion`
        fed the ranker's and the first stage's documents, or a ``ReciprocalRankFusion`` of the first stage's
        order and the ranker's (in that order), each cut to ``depth``."""
        if self.method == "model":
            return RerankerScoreFusion(weight=self.weight, top_k=top_k)
        if self.method == "rrf":
            return ReciprocalRankFusion(rrf_k=RRF_K, fusion_depth=depth, top_k=top_k)
        return None


def resolve_fusion(ranker_model: str | Path | None, fusion: str = "model") -> FusionChoice:
    """The fusion to put after ``ranker_model`` for the ``--fusion`` choice (see :data:`~rerank_pipeline.options.FUSION_METHODS`).

    ``"model"`` uses the model folder's ``fusion.json`` and falls back to none (saying why) when there is none.
    """
    if fusion not in FUSION_METHODS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSION_METHODS)}")
    if not ranker_model:
        if fusion == "rrf":
            raise ValueError("fusion 'rrf' fuses the reranker's order with the first stage's: it needs a reranker model")
        return FusionChoice("none", reason="no reranker: the first-stage order")
    if fusion == "none":
        return FusionChoice("none", model=str(ranker_model), reason="the reranker's order")
    if fusion == "rrf":
        return FusionChoice("rrf", model=str(ranker_model))
    weight = load_fusion_weight(Path(ranker_model).expanduser())
    if weight is None:
        return FusionChoice("none", model=str(ranker_model), reason=f"{ranker_model} has no {FUSION_FILE}: the reranker's order")
    return FusionChoice("model", weight=weight, model=str(ranker_model))


@component
class RerankerScoreFusion:
    """Fuse a reranker's scores with the first stage's, for the same candidates.

    Put it after a ranker: ``documents`` come from the ranker (scores = reranker scores), ``first_stage_documents``
    from the retriever (scores = first-stage scores), matched by ``Document.id``. A document missing from the first
    stage counts as its lowest score. Output documents carry the fused ``score`` and keep both inputs in
    ``meta["reranker_score"]`` / ``meta["first_stage_score"]``.

    Usage:
        fusion = RerankerScoreFusion.from_model_folder("models/my-reranker")  # dev-tuned weight from fusion.json
        fusion.run(documents=ranked, first_stage_documents=retrieved)["documents"]
    """

    def __init__(self, weight: float = 0.5, top_k: int | None = None) -> None:
        """:param weight: Share of the reranker in [0, 1] (1: reranker alone). :param top_k: Documents returned."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        self.weight = float(weight)
        self.top_k = top_k

    @classmethod
    def from_model_folder(cls, model_dir: str | Path, top_k: int | None = None) -> RerankerScoreFusion:
        """Use the weight a training run tuned on its dev split (``fusion.json``); a folder without one raises."""
        weight = load_fusion_weight(model_dir)
        if weight is None:
            raise FileNotFoundError(f"no {FUSION_FILE} in {model_dir}: it was not trained by rerank-pipeline train")
        return cls(weight=weight, top_k=top_k)

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document], first_stage_documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """Return ``documents`` ordered by fused score, best first; equal fused scores keep the first stage's order
        (so ``weight = 0`` returns exactly the first stage's ranking)."""
        top_k = self.top_k if top_k is None else top_k
        if not documents:
            return {"documents": []}
        first_stage: dict[str, float] = {}
        rank_of: dict[str, int] = {}
        for rank, document in enumerate(first_stage_documents):
            rank_of.setdefault(document.id, rank)
            if document.score is not None:
                first_stage.setdefault(document.id, document.score)
        floor = min(first_stage.values()) if first_stage else 0.0
        reranker_scores = [document.score if document.score is not None else 0.0 for document in documents]
        first_stage_scores = [first_stage.get(document.id, floor) for document in documents]
        fused = fuse_scores(reranker_scores, first_stage_scores, self.weight)
        order = sorted(range(len(documents)), key=lambda i: (-fused[i], rank_of.get(documents[i].id, len(rank_of)), i))
        ranked = [
            replace(documents[i], score=float(fused[i]),
                    meta={**documents[i].meta, "reranker_score": reranker_scores[i], "first_stage_score": first_stage_scores[i]})
            for i in order
        ]
        return {"documents": ranked[:top_k] if top_k is not None else ranked}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document], first_stage_documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """Same as :meth:`run` (pure computation)."""
        return self.run(documents, first_stage_documents, top_k)

    def run_batch(self, documents: list[list[Document]], first_stage_documents: list[list[Document]], top_k: int | None = None) -> dict[str, list[list[Document]]]:
        """:meth:`run` for many queries at once: ``documents[q]`` and ``first_stage_documents[q]`` are query ``q``'s."""
        if len(documents) != len(first_stage_documents):
            raise ValueError(f"got {len(documents)} reranked lists for {len(first_stage_documents)} first-stage lists")
        return {"documents": [self.run(ranked, retrieved, top_k)["documents"] for ranked, retrieved in zip(documents, first_stage_documents)]}

    def to_dict(self) -> dict[str, Any]:
        """Serialize the init parameters."""
        return default_to_dict(self, weight=self.weight, top_k=self.top_k)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankerScoreFusion:
        """Deserialize from :meth:`to_dict` output."""
        return default_from_dict(cls, data)
