"""What this machine supports: CPU flags from /proc/cpuinfo and the engine configurations each kind of hardware gets."""

from __future__ import annotations

import pytest

from rerank_pipeline import hardware
from rerank_pipeline.hardware import EngineConfiguration, cpu_description, cpu_flags, engine_configurations

CPUINFO = """processor\t: 0
model name\t: Test CPU 9000
flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16

processor\t: 1
model name\t: Test CPU 9000
flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16
"""


def labels(configurations: list[EngineConfiguration]) -> list[str]:
    return [configuration.label for configuration in configurations]


def test_cpu_flags_and_description_read_cpuinfo(tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
    assert cpu_flags() == {"fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
    description = cpu_description()
    assert description.startswith(f"Test CPU 9000, {hardware.cpu_count()} CPUs; flags: ")
    assert "avx2 yes, avx512f yes, avx512_vnni yes, avx_vnni no, avx512_bf16 yes, amx_bf16 no, amx_int8 no" in description


def test_unreadable_cpuinfo_gives_no_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    assert cpu_flags() == set()
    assert cpu_description().startswith("unknown CPU, ") and "avx2 no" in cpu_description()


@pytest.mark.parametrize(
    ("flags", "openvino", "expected"),
    [
        (set(), False, ["torch fp32"]),
        ({"avx2"}, True, ["torch fp32", "openvino fp32"]),  # AVX2 only: int8 would not be faster
        ({"avx2", "avx512_vnni"}, True, ["torch fp32", "openvino fp32", "openvino int8"]),
        ({"avx_vnni"}, True, ["torch fp32", "openvino fp32", "openvino int8"]),
        ({"amx_int8"}, True, ["torch fp32", "openvino fp32", "openvino int8"]),
        ({"avx512_vnni", "avx512_bf16"}, False, ["torch fp32", "torch bf16"]),  # no OpenVINO installed
        ({"amx_bf16", "amx_int8"}, True, ["torch fp32", "torch bf16", "openvino fp32", "openvino int8"]),
    ],
)
def test_cpu_configurations_follow_the_flags(flags, openvino, expected):
    for device in ("cpu", None):
        assert labels(engine_configurations(device, flags=flags, cuda=False, openvino=openvino)) == expected


def test_cuda_configurations_and_their_ranker_keywords():
    gpu = engine_configurations(flags={"amx_bf16"}, cuda=True, cuda_bf16=True, openvino=True)
    assert labels(gpu) == ["cuda fp32", "cuda bf16", "cuda fp16"]
    assert labels(engine_configurations("cuda:1", cuda=True, cuda_bf16=False)) == ["cuda fp32", "cuda fp16"]
    assert engine_configurations("cuda:1", cuda=True, cuda_bf16=False)[1].ranker_kwargs() == {
        "backend": "torch", "precision": "fp16", "quantize": False, "device": "cuda:1"}
    # device "cpu" on a CUDA machine measures the CPU engines
    assert labels(engine_configurations("cpu", flags=set(), cuda=True, openvino=False)) == ["torch fp32"]
    with pytest.raises(ValueError, match="device 'cuda' asked for, but CUDA is not available"):
        engine_configurations("cuda", cuda=False)


def test_ranker_kwargs_build_the_configured_ranker(tiny_bert):
    from rerank_pipeline.components import CrossEncoderRanker

    int8 = EngineConfiguration("openvino", "fp32", quantize=True)
    assert int8.ranker_kwargs() == {"backend": "openvino", "precision": "fp32", "quantize": True, "device": "cpu"}
    for configuration in engine_configurations("cpu", flags={"avx512_bf16", "avx512_vnni"}, openvino=True):
        ranker = CrossEncoderRanker(str(tiny_bert), **configuration.ranker_kwargs())  # every one is a valid ranker
        assert (ranker.backend, ranker.precision, ranker.quantize) == (
            "openvino" if configuration.engine == "openvino" else "torch", configuration.precision,
            configuration.quantize)
    bf16 = CrossEncoderRanker(str(tiny_bert), **EngineConfiguration("torch", "bf16").ranker_kwargs())
    bf16.warm_up()
    assert str(bf16.engine.autocast_dtype) == "torch.bfloat16"


def test_this_machine_lists_torch_fp32_first():
    configurations = engine_configurations("cpu")
    assert configurations[0] == EngineConfiguration("torch", "fp32")
    assert ("torch bf16" in labels(configurations)) == bool(cpu_flags() & hardware.BF16_FLAGS)
