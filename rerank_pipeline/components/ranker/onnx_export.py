"""Export a Hugging Face sequence classifier to ONNX (optionally int8 dynamic-quantized) and run it with ONNX Runtime.

The exported file is cached under a key made of the model's identity (folder contents, or Hub id and commit), the
input names and the quantization flag, and written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_pipeline.components.ranker.cache import default_cache_dir

ONNX_OPSET = 17


def hub_revision(
    model_id: str, hub_cache_dir: str | Path | None = None, revision: str | None = None
) -> str | None:
    """The commit a Hub model id (at ``revision``: a commit, branch or tag; default branch when ``None``) resolves to
    in the local Hugging Face cache (what loading it reads), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_id, "config.json", cache_dir=hub_cache_dir, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None  # .../snapshots/<commit>/config.json


def model_fingerprint(
    model_id: str,
    input_names: list[str],
    hub_cache_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    revision: str | None = None,
) -> str:
    """A short hash naming one export folder: local files (name, size, mtime), or the Hub id and the commit it
    resolves to at ``revision`` (so an updated Hub model is exported again), the inputs, and ``extra`` (e.g. converter
    versions)."""
    # "graph" names what the export holds: 2 = the last layer computed for the first token only.
    parts: dict[str, Any] = {"model": model_id, "inputs": input_names, "torch": torch.__version__, "graph": 2}
    parts.update(extra or {})
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        parts["model"] = str(folder.resolve())
        parts["files"] = sorted(
            (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file()
        )
    else:
        parts["revision"] = hub_revision(model_id, hub_cache_dir, revision) or revision
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class _LogitsOnly(torch.nn.Module):
    """Positional-argument wrapper so the ONNX graph inputs line up with ``input_names``."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs)), return_dict=True).logits


def export_to_onnx(model: torch.nn.Module, sample_features: dict[str, torch.Tensor], path: Path) -> Path:
    """Export ``model`` (a sequence classifier on CPU, fp32) with dynamic batch and sequence axes to ``path``."""
    input_names = list(sample_features)
    wrapper = _LogitsOnly(model.eval(), input_names).eval()
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names} | {"logits": {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy TorchScript exporter is deprecated and its tracer warns about mask branches that are
            # constant for encoders; parity with the torch model on varied shapes is covered by the tests.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, tuple(sample_features[name] for name in input_names), str(scratch_file),
                input_names=input_names, output_names=["logits"], dynamic_axes=dynamic_axes,
                opset_version=ONNX_OPSET, dynamo=False,
            )
        os.replace(scratch_file, path)
    return path


def quantize_onnx(source: Path, target: Path) -> Path:
    """Int8 dynamic quantization of the weights of ``source`` (ONNX Runtime ``quantize_dynamic``) into ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        quantize_dynamic(str(source), str(scratch_file), weight_type=QuantType.QInt8)
        os.replace(scratch_file, target)
    return target


def cached_onnx_export(
    model_id: str,
    model: torch.nn.Module,
    sample_features: dict[str, torch.Tensor],
    quantize: bool,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
) -> Path:
    """Return the path of the (quantized) ONNX export of ``model``, exporting it on first use; ``revision`` is the
    Hub revision ``model`` was loaded at (part of the cache key)."""
    input_names = list(sample_features)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = folder / model_fingerprint(model_id, input_names, revision=revision)
    fp32_path = folder / "model.onnx"
    final_path = folder / ("model_int8.onnx" if quantize else "model.onnx")
    if final_path.is_file():
        return final_path
    if not fp32_path.is_file():
        cpu_model = model.to("cpu").float()
        try:
            export_to_onnx(cpu_model, {name: tensor.cpu() for name, tensor in sample_features.items()}, fp32_path)
        except Exception as error:
            raise RuntimeError(
                f"ONNX export of '{model_id}' failed ({type(error).__name__}: {error}); use backend='torch'"
            ) from error
    if quantize:
        quantize_onnx(fp32_path, final_path)
    return final_path


class OnnxLogits:
    """Run an exported sequence classifier with ONNX Runtime; same call contract as the torch forward."""

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: on shared CPUs (and next to torch's own thread pool)
        # spinning threads steal the cores the next batch needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        chosen = [provider for provider in (providers or ["CPUExecutionProvider"]) if provider in available]
        self.session = ort.InferenceSession(str(path), options, providers=chosen or ["CPUExecutionProvider"])
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        self.path = path

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {name: features[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        logits = self.session.run(["logits"], feeds)[0]
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))
