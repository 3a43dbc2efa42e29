"""Ranker engines: what runs the cross-encoder's forward pass for :class:`CrossEncoderRanker`.

Every engine is a :class:`Engine`: it maps a padded feature batch to fp32 logits. :func:`create_engine` picks
one by name: ``"torch"`` (:class:`~rerank_pipeline.components.ranker.engines.torch.TorchEngine`) or ``"openvino"``
(:class:`~rerank_pipeline.components.ranker.engines.openvino.OpenVinoEngine`: CPU, int8 by static calibration,
cached on disk). The OpenVINO module imports its runtime only when chosen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from rerank_pipeline.components.ranker.engines.torch import TorchEngine
from rerank_pipeline.components.ranker.loading import model_input_names
from rerank_pipeline.options import PRECISIONS, RANKER_ENGINES

if TYPE_CHECKING:
    from rerank_pipeline.components.ranker.engines.openvino import OpenVinoEngine

ENGINES = RANKER_ENGINES

__all__ = ["ENGINES", "PRECISIONS", "OpenVinoEngine", "Engine", "TorchEngine", "create_engine",
           "sample_features"]


@runtime_checkable
class Engine(Protocol):
    """The forward pass of a sequence-classification cross-encoder, as the ranker's scorer calls it.

    ``input_names`` are the tokenizer outputs the engine reads (``None``: all of them); ``device`` is where batches
    run (it sets the ranker's default token budget). An engine whose int8 activation ranges are measured ahead of
    time (OpenVINO static int8) reports ``needs_calibration`` until :meth:`calibrate` has run; the others always
    report ``False`` and their ``calibrate`` does nothing.
    """

    input_names: Collection[str] | None
    device: torch.device

    @property
    def needs_calibration(self) -> bool:
        """True while the engine cannot score before :meth:`calibrate` is called."""
        ...

    def calibrate(self, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Measure what the engine needs on ``batches`` (padded feature batches like those it will score)."""
        ...

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fp32 logits ``[batch, labels]`` (on the CPU) of one padded feature batch."""
        ...


def sample_features(tokenizer: Any, input_names: Collection[str] | None) -> dict[str, torch.Tensor]:
    """A one-pair feature batch holding the inputs the model takes, to trace it for conversion."""
    sample = dict(tokenizer(["a query"], ["a document"], padding=True, return_tensors="pt"))
    return {name: tensor for name, tensor in sample.items() if input_names is None or name in input_names}


def create_engine(
    backend: str,
    model: torch.nn.Module,
    tokenizer: Any,
    device: torch.device,
    *,
    precision: str = "auto",
    quantize: bool = False,
    model_id: str | None = None,
    calibration: str = "first-scored",
    revision: str | None = None,
) -> Engine:
    """The engine ``backend`` (one of :data:`ENGINES`) running ``model`` (a loaded Hugging Face sequence classifier).

    :param backend: ``"torch"`` or ``"openvino"``.
    :param model: The classifier; the torch engine runs it, OpenVINO converts it (traced on a sample pair from
        ``tokenizer``).
    :param device: Where to run (the OpenVINO engine always runs on the CPU).
    :param precision: One of :data:`PRECISIONS` (autocast on CUDA for torch; OpenVINO's inference precision).
    :param quantize: Int8 inference (see ``CrossEncoderRanker``'s ``quantize``).
    :param model_id: Hub id or folder of ``model``: keys the OpenVINO cache (without it OpenVINO converts in memory
        every time).
    :param calibration: Names OpenVINO int8 calibration data in its cache key.
    :param revision: The Hub revision ``model`` was loaded at (part of the OpenVINO cache key).
    :returns: The engine.
    :raises ValueError: for an unknown ``backend``.
    :raises ImportError: when the chosen runtime is not installed.
    """
    if backend == "torch":
        return TorchEngine(model, device, precision=precision, quantize=quantize)
    if backend != "openvino":
        raise ValueError(f"backend must be one of {ENGINES}, got {backend!r}")
    from rerank_pipeline.components.ranker.engines.openvino import OpenVinoEngine

    sample = sample_features(tokenizer, model_input_names(model))
    return OpenVinoEngine(model, sample, precision, quantize, model_id=model_id, calibration=calibration,
                          revision=revision)


def __getattr__(name: str) -> Any:
    """``OpenVinoEngine`` imported on first use (its runtime is optional)."""
    if name == "OpenVinoEngine":
        from rerank_pipeline.components.ranker.engines.openvino import OpenVinoEngine

        return OpenVinoEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
