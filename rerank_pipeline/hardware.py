"""What this machine can run: its CPU's instruction-set flags, and the ranker engine configurations worth measuring.

A reduced precision is only listed where the hardware runs it fast: torch bf16 on a CPU with AVX512_BF16 or AMX,
OpenVINO int8 on a CPU with VNNI (AVX512_VNNI or AVX_VNNI) or AMX, bf16/fp16 on CUDA. ``rerank-pipeline tune``
measures each configuration on the user's judgements; this module only says which exist here.

Usage:
    from rerank_pipeline.hardware import cpu_description, engine_configurations

    print(cpu_description())  # e.g. "AMD EPYC 9654, 2 CPUs; flags: avx2 yes, avx512f yes, ..."
    for configuration in engine_configurations(device="cpu"):
        CrossEncoderRanker(model, **configuration.ranker_kwargs())  # "torch fp32", "torch bf16", ...
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Any of these: the CPU runs bf16 matrix products natively (torch bf16 autocast is faster than fp32)."""
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""Any of these: the CPU runs int8 dot products natively (OpenVINO static int8 is faster than fp32)."""
DESCRIBED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The flags :func:`cpu_description` names, each with yes/no."""


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line's value in ``/proc/cpuinfo`` (None when absent or unreadable)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags from ``/proc/cpuinfo`` (e.g. ``{"avx2", "avx512_vnni", ...}``); an empty set
    where it cannot be read (not Linux, or no ``flags`` line)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_description(flags: Collection[str] | None = None) -> str:
    """One line: model name, CPUs this process may use, and the flags that decide the engines, e.g.
    ``AMD EPYC 9654 96-Core Processor, 2 CPUs; flags: avx2 yes, avx512f yes, avx512_vnni yes, avx_vnni no,
    avx512_bf16 yes, amx_bf16 no, amx_int8 no``.

    :param flags: The flags to describe (default: :func:`cpu_flags`).
    """
    flags = cpu_flags() if flags is None else set(flags)
    model = _cpuinfo_field("model name") or "unknown CPU"
    shown = ", ".join(f"{name} {'yes' if name in flags else 'no'}" for name in DESCRIBED_FLAGS)
    return f"{model}, {cpu_count()} CPUs; flags: {shown}"


@dataclass(frozen=True)
class EngineConfiguration:
    """One way to run the cross-encoder: an engine (``torch``, ``openvino``, or ``cuda``: torch on the GPU), its
    precision, whether it is int8, and the device it runs on.

    :param engine: ``"torch"`` (CPU), ``"openvino"`` (CPU) or ``"cuda"`` (the torch engine on ``device``).
    :param precision: One of :data:`~rerank_pipeline.options.PRECISIONS` but ``auto``.
    :param quantize: Int8 inference (OpenVINO static int8).
    :param device: Torch device string.
    """

    engine: str
    precision: str
    quantize: bool = False
    device: str = "cpu"

    @property
    def label(self) -> str:
        """e.g. ``torch fp32``, ``torch bf16``, ``openvino int8``, ``cuda bf16``."""
        return f"{self.engine} {'int8' if self.quantize else self.precision}"

    def ranker_kwargs(self) -> dict[str, object]:
        """``CrossEncoderRanker`` keyword arguments: ``backend``, ``precision``, ``quantize`` and ``device``."""
        backend = "openvino" if self.engine == "openvino" else "torch"
        return {"backend": backend, "precision": self.precision, "quantize": self.quantize, "device": self.device}


def engine_configurations(
    device: str | None = None,
    *,
    flags: Collection[str] | None = None,
    cuda: bool | None = None,
    cuda_bf16: bool | None = None,
    openvino: bool | None = None,
) -> list[EngineConfiguration]:
    """The engine configurations this machine runs fast, the fp32 reference first.

    On a CPU (``device`` ``"cpu"``, or ``None`` without CUDA): ``torch fp32`` always; ``torch bf16`` when the CPU has
    AVX512_BF16 or AMX (:data:`BF16_FLAGS`); ``openvino fp32`` when OpenVINO (with NNCF) is installed;
    ``openvino int8`` when it is and the CPU has VNNI or AMX (:data:`INT8_FLAGS`). On CUDA (available, and
    ``device`` not a CPU): ``cuda fp32``, ``cuda bf16`` where the GPU supports it, and ``cuda fp16``.

    The keyword-only arguments stand in for the machine (tests give any hardware): ``flags`` the CPU flags
    (default :func:`cpu_flags`), ``cuda`` / ``cuda_bf16`` whether CUDA / its bf16 are there, ``openvino`` whether
    OpenVINO and NNCF are installed (found with ``importlib.util.find_spec``, not imported).
    """
    device = None if device is None else str(device)
    if device is None or not device.startswith("cpu"):
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        if cuda:
            if cuda_bf16 is None:
                import torch

                cuda_bf16 = torch.cuda.is_bf16_supported()
            gpu = device or "cuda"
            precisions = ("fp32", "bf16", "fp16") if cuda_bf16 else ("fp32", "fp16")
            return [EngineConfiguration("cuda", precision, device=gpu) for precision in precisions]
        if device is not None:
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    flags = cpu_flags() if flags is None else set(flags)
    if openvino is None:
        openvino = all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))
    configurations = [EngineConfiguration("torch", "fp32")]
    if flags & BF16_FLAGS:
        configurations.append(EngineConfiguration("torch", "bf16"))
    if openvino:
        configurations.append(EngineConfiguration("openvino", "fp32"))
        if flags & INT8_FLAGS:
            configurations.append(EngineConfiguration("openvino", "fp32", quantize=True))
    return configurations
