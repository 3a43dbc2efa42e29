"""The PyTorch engine: the Hugging Face sequence classifier run as it is (fp32, autocast bf16/fp16 on CUDA, autocast
bf16 on CPU, or int8 dynamic quantization of its linear layers on CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from rerank_pipeline.components.ranker.loading import model_input_names
from rerank_pipeline.options import PRECISIONS

CPU_FP16_REFUSED = "precision='fp16' runs on CUDA only with the torch engine; on the CPU use 'bf16' or 'fp32'"


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: ``None`` means plain fp32.

    On CPU only ``bf16`` autocasts (``auto`` stays fp32 there: bf16 is fast only on CPUs with AVX512_BF16 or AMX,
    see :func:`rerank_pipeline.hardware.engine_configurations`); on CUDA ``auto`` is bf16 where supported, else fp16.

    :raises ValueError: an unknown ``precision``, or ``fp16`` on the CPU (torch has no fast CPU fp16 path).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cpu" and precision == "fp16":
        raise ValueError(CPU_FP16_REFUSED)
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def quantize_linear_layers_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Int8 dynamic quantization of every ``nn.Linear`` (weights int8, activations quantized per batch; CPU)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class TorchEngine:
    """Forward a padded batch through a Hugging Face sequence classifier; returns fp32 logits ``[batch, labels]``.

    A :class:`~rerank_pipeline.components.ranker.engines.Engine`. ``precision`` picks the autocast dtype
    (:func:`resolve_autocast_dtype`: bf16/fp16 on CUDA, bf16 on CPU); ``quantize`` runs the linear layers int8 (on
    the CPU, whatever ``device`` asked). Needs no calibration.
    """

    def __init__(
        self, model: torch.nn.Module, device: torch.device, precision: str = "auto", quantize: bool = False
    ) -> None:
        self.input_names = model_input_names(model)
        model.eval()
        if quantize:
            model = quantize_linear_layers_int8(model.to("cpu"))
            device = torch.device("cpu")
        self.model = model
        self.device = device
        self.autocast_dtype = resolve_autocast_dtype(precision, device)

    needs_calibration = False  # dynamic int8 measures activation ranges per batch

    def calibrate(self, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Nothing to do: part of the engine protocol for engines with static int8."""

    @torch.inference_mode()
    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        features = {name: tensor.to(self.device, non_blocking=True) for name, tensor in features.items()}
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with autocast:
            logits = self.model(**features, return_dict=True).logits
        return logits.float().cpu()
