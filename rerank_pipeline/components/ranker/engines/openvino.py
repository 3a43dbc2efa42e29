"""The OpenVINO engine: a Hugging Face sequence classifier run by OpenVINO on CPU, fp32 or static int8 (NNCF
post-training quantization).

The torch model is converted (``openvino.convert_model``) when the ranker loads. With ``quantize`` the
weights *and* the activations of the matrix products run in int8 (``nncf.quantize`` with
``ModelType.TRANSFORMER``, i.e. SmoothQuant plus per-tensor activation scales). Activation scales are fixed ahead of
time, so they are calibrated on real feature batches: the caller hands over batches of the text the ranker will
score (see :meth:`OpenVinoEngine.calibrate`).

Given the model's id, the converted and the calibrated models are cached on disk (:class:`OpenVinoCache`, under
``openvino`` in :func:`~rerank_pipeline.components.ranker.cache.default_cache_dir`), keyed by
:func:`~rerank_pipeline.components.ranker.cache.model_fingerprint` (the model's files or Hub revision, torch, OpenVINO
and NNCF versions) plus the variant (fp32, or int8 and its calibration), so a later start skips conversion (~3 s) and
calibration (~20 s). An entry is built under its lock
(:func:`~rerank_pipeline.components.ranker.cache.cache_entry_lock`): one worker converts or calibrates, the others
wait and read its result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_pipeline.components.ranker.cache import cache_entry_lock, default_cache_dir, model_fingerprint

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


MODEL_FILE = "model.xml"
MANIFEST_FILE = "manifest.json"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OpenVinoCache:
    """Saved OpenVINO models of one source model: ``<root>/<fingerprint>/<variant>/model.{xml,bin}``.

    Entries are written atomically (a staging folder swapped in) with a manifest of their files' SHA-256; an entry
    whose files do not match it, or that OpenVINO cannot read, is removed and rebuilt, never trusted.
    """

    def __init__(
        self, model_id: str, input_names: list[str], cache_dir: str | Path | None = None, revision: str | None = None
    ) -> None:
        import nncf
        import openvino as ov

        versions = {"openvino": ov.__version__, "nncf": nncf.__version__}
        root = Path(cache_dir) if cache_dir else default_cache_dir("openvino")
        self.folder = root / model_fingerprint(model_id, sorted(input_names), extra=versions, revision=revision)

    def load(self, core: Any, variant: str) -> Any | None:
        """The cached model of ``variant`` (``ov.Model``), or ``None`` when absent or corrupt (then removed)."""
        entry = self.folder / variant
        if not entry.is_dir():
            return None
        try:
            manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
            if any(_file_digest(entry / name) != digest for name, digest in manifest["files"].items()):
                raise ValueError("file contents do not match the manifest")
            return core.read_model(str(entry / MODEL_FILE))
        except Exception as error:  # noqa: BLE001 - any unreadable entry is rebuilt
            logger.warning("Rebuilding the corrupt OpenVINO cache entry %s (%s)", entry, error)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    @contextmanager
    def building(self, variant: str) -> Iterator[None]:
        """Hold ``variant``'s build lock (other threads and processes building it wait); check :meth:`load` again
        inside, since another worker may have built it meanwhile."""
        with cache_entry_lock(self.folder / variant):
            yield

    def save(self, model: Any, variant: str) -> None:
        """Write ``model`` as ``variant`` (weights kept in their precision, not compressed to fp16)."""
        import openvino as ov

        from rerank_pipeline.components.index_folder import atomic_directory

        with atomic_directory(self.folder / variant) as staging:
            ov.save_model(model, str(staging / MODEL_FILE), compress_to_fp16=False)
            files = {path.name: _file_digest(path) for path in sorted(staging.iterdir())}
            (staging / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2), encoding="utf-8")


class OpenVinoEngine:
    """Forward padded feature batches through an OpenVINO model on the CPU (a
    :class:`~rerank_pipeline.components.ranker.engines.Engine`).

    With ``quantize=True`` the model is usable only after :meth:`calibrate` (or once a calibrated model is read
    from the cache). Each thread gets its own infer request, so one instance can score from several threads.
    With ``model_id`` the converted and calibrated models are cached (:class:`OpenVinoCache`); ``calibration``
    names the calibration data in the cache key (a hash of explicit calibration pairs, or ``"first-scored"``: the
    first pairs the ranker scored when the entry was built); ``revision`` is the Hub revision the model was loaded at.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sample_features: dict[str, torch.Tensor],
        precision: str = "auto",
        quantize: bool = False,
        model_id: str | None = None,
        calibration: str = "first-scored",
        cache_dir: str | Path | None = None,
        revision: str | None = None,
    ) -> None:
        require_openvino()
        import openvino as ov

        self._core = ov.Core()
        self._torch_model = model
        self._sample_features = sample_features
        self._cache = OpenVinoCache(model_id, list(sample_features), cache_dir, revision) if model_id else None
        self._int8_variant = f"int8-{calibration}"
        self._config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        self.quantize = quantize
        self.device = torch.device("cpu")
        self._fp32: Any = None
        self._compiled: Any = None
        self._per_thread = threading.local()
        ready = self._cached(self._int8_variant) if quantize else self._fp32_model()
        if ready is not None:
            self._compiled = self._core.compile_model(ready, "CPU", self._config)
        self.input_names = [port.get_any_name() for port in (ready or self._fp32_model()).inputs]

    def _cached(self, variant: str) -> Any | None:
        return self._cache.load(self._core, variant) if self._cache else None

    def _fp32_model(self) -> Any:
        """The converted fp32 model: from the cache, else converted from torch (and cached)."""
        if self._fp32 is None:
            self._fp32 = self._cached("fp32")
        if self._fp32 is None and self._cache:
            with self._cache.building("fp32"):
                self._fp32 = self._cached("fp32")  # converted by another worker while this one waited
                if self._fp32 is None:
                    self._fp32 = self._convert()
                    self._cache.save(self._fp32, "fp32")
        elif self._fp32 is None:
            self._fp32 = self._convert()
        return self._fp32

    def _convert(self) -> Any:
        import openvino as ov

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about mask branches that are constant for encoders
            return ov.convert_model(
                self._torch_model.eval().to("cpu").float(),
                example_input={name: tensor.cpu() for name, tensor in self._sample_features.items()},
            )

    @property
    def needs_calibration(self) -> bool:
        """True for an int8 model that has not been calibrated yet."""
        return self._compiled is None

    def calibrate(self, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        """Quantize to int8 with activation ranges measured on ``batches`` (padded feature batches), then compile.

        With a cache, the int8 entry is built under its lock: when another worker built it while this one waited,
        its model is read and compiled instead (the same calibration key names the same calibration data).

        :raises ValueError: when ``batches`` is empty.
        """
        if not batches:
            raise ValueError("int8 calibration needs at least one batch of (query, document) pairs")
        if not self._cache:
            self._compiled = self._core.compile_model(self._quantize(batches), "CPU", self._config)
            return
        with self._cache.building(self._int8_variant):
            quantized = self._cached(self._int8_variant)
            if quantized is None:
                quantized = self._quantize(batches)
                self._cache.save(quantized, self._int8_variant)
        self._compiled = self._core.compile_model(quantized, "CPU", self._config)

    def _quantize(self, batches: Sequence[dict[str, torch.Tensor]]) -> Any:
        import nncf

        data = [{name: np.asarray(batch[name].cpu().numpy(), dtype=np.int64) for name in self.input_names}
                for batch in batches]
        nncf_logger = logging.getLogger("nncf")
        level = nncf_logger.level
        nncf_logger.setLevel(logging.WARNING)  # NNCF prints a progress table per algorithm at INFO
        try:
            quantized = nncf.quantize(
                self._fp32_model(), nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data)
            )
        finally:
            nncf_logger.setLevel(level)
        return quantized

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
