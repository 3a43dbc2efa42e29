"""Run a Hugging Face sequence classifier with OpenVINO on CPU: fp32, or static int8 by NNCF post-training quantization.

The torch model is converted in memory (``openvino.convert_model``) when the ranker loads. With ``quantize`` the
weights *and* the activations of the matrix products run in int8 (``nncf.quantize`` with
``ModelType.TRANSFORMER``, i.e. SmoothQuant plus per-tensor activation scales). Activation scales are fixed ahead of
time, so they are calibrated on real feature batches: the caller hands over batches of the text the ranker will
score (see :meth:`OpenVinoLogits.calibrate`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Our precision names -> OpenVINO's ``INFERENCE_PRECISION_HINT`` (fp32 unless asked: bf16 is slower than fp32 on
# CPUs without AMX, and it moves scores).
INFERENCE_PRECISION = {"auto": "f32", "fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def require_openvino() -> None:
    """Raise ``ImportError`` with the install command when OpenVINO (and NNCF) are missing."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "backend='openvino' needs the openvino and nncf packages: pip install 'rerank-pipeline[openvino]'"
        ) from error


class OpenVinoLogits:
    """Forward padded feature batches through an OpenVINO model; same call contract as the torch forward.

    With ``quantize=True`` the model is usable only after :meth:`calibrate`. Each thread gets its own infer request,
    so one instance can score from several threads.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sample_features: dict[str, torch.Tensor],
        precision: str = "auto",
        quantize: bool = False,
    ) -> None:
        require_openvino()
        import openvino as ov

        self._core = ov.Core()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about mask branches that are constant for encoders
            self._fp32_model = ov.convert_model(
                model.eval().to("cpu").float(),
                example_input={name: tensor.cpu() for name, tensor in sample_features.items()},
            )
        self.input_names = [port.get_any_name() for port in self._fp32_model.inputs]
        self._config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        self.quantize = quantize
        self._compiled: Any = None if quantize else self._core.compile_model(self._fp32_model, "CPU", self._config)
        self._per_thread = threading.local()

    @property
    def needs_calibration(self) -> bool:
        """True for an int8 model that has not been calibrated yet."""
        return self._compiled is None

    def calibrate(self, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Quantize to int8 with activation ranges measured on ``batches`` (padded feature batches), then compile."""
        import nncf

        if not batches:
            raise ValueError("int8 calibration needs at least one batch of (query, document) pairs")
        data = [{name: np.asarray(batch[name].cpu().numpy(), dtype=np.int64) for name in self.input_names}
                for batch in batches]
        nncf_logger = logging.getLogger("nncf")
        level = nncf_logger.level
        nncf_logger.setLevel(logging.WARNING)  # NNCF prints a progress table per algorithm at INFO
        try:
            quantized = nncf.quantize(
                self._fp32_model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data)
            )
        finally:
            nncf_logger.setLevel(level)
        self._compiled = self._core.compile_model(quantized, "CPU", self._config)

    def _infer_request(self) -> Any:
        compiled, request = getattr(self._per_thread, "state", (None, None))
        if compiled is not self._compiled:
            compiled, request = self._compiled, self._compiled.create_infer_request()
            self._per_thread.state = (compiled, request)
        return request

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._compiled is None:
            raise RuntimeError("the int8 OpenVINO model must be calibrated before it scores")
        feeds = {name: np.asarray(features[name].cpu().numpy(), dtype=np.int64) for name in self.input_names}
        logits = self._infer_request().infer(feeds)[0]
        return torch.from_numpy(np.array(logits, dtype=np.float32))
