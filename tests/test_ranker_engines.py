"""The ranker engines' declared interface (Engine) and their on-disk caches built once under a file lock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.ranker.engines import ENGINES, Engine, TorchEngine, create_engine, sample_features
from rerank_pipeline.components.ranker.loading import model_input_names
from tiny_models import BACKEND_PAIRS as PAIRS

RUNTIMES = {"torch": (), "openvino": ("openvino", "nncf")}


@pytest.mark.parametrize("backend", ENGINES)
def test_each_engine_satisfies_the_protocol(tiny_bert, backend, expected, tmp_path):
    for module in RUNTIMES[backend]:
        pytest.importorskip(module)
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", backend=backend)
    assert ranker.engine is None  # nothing loaded before warm-up
    ranker.warm_up()
    engine = ranker.engine
    assert isinstance(engine, Engine)
    assert engine.device == torch.device("cpu")
    assert engine.needs_calibration is False  # fp32: ready at once
    assert engine.input_names is None or "input_ids" in engine.input_names
    np.testing.assert_allclose(ranker.predict(PAIRS), expected, atol=1e-4, rtol=0)


def test_an_engine_lacking_a_member_is_not_a_ranker_engine():
    def forward_only(features):
        return torch.zeros(1, 1)

    assert not isinstance(forward_only, Engine)


def test_torch_calibrate_is_a_no_op(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    sample = sample_features(tokenizer, model_input_names(model))
    engine = create_engine("torch", model, tokenizer, torch.device("cpu"))
    before = engine(sample)
    engine.calibrate([sample])
    assert not engine.needs_calibration
    assert torch.equal(engine(sample), before)


def test_create_engine_refuses_an_unknown_backend(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'openvino'\), got 'onnx'"):
        create_engine("onnx", model, None, torch.device("cpu"))
    assert isinstance(create_engine("torch", model, None, torch.device("cpu")), TorchEngine)


def _load(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    return model, sample_features(tokenizer, model_input_names(model))


def _race(*builds) -> list:
    """Run each of ``builds`` in its own thread, started together; returns their results (re-raising any error)."""
    barrier = threading.Barrier(len(builds))
    results: list = [None] * len(builds)
    errors: list = []

    def work(index: int) -> None:
        barrier.wait()
        try:
            results[index] = builds[index]()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(builds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _counting(calls: list[str], name: str, function):
    def counted(*args, **kwargs):
        calls.append(name)
        time.sleep(0.5)  # widen the window in which an unlocked second worker would start the same build
        return function(*args, **kwargs)

    return counted


def test_concurrent_openvino_conversion_and_calibration_build_each_entry_once(tiny_bert, tmp_path, monkeypatch):
    openvino = pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")
    from rerank_pipeline.components.ranker.engines.openvino import OpenVinoEngine

    calls: list[str] = []
    monkeypatch.setattr(openvino, "convert_model", _counting(calls, "convert", openvino.convert_model))
    monkeypatch.setattr(nncf, "quantize", _counting(calls, "quantize", nncf.quantize))
    model, sample = _load(tiny_bert)
    with torch.no_grad():
        reference = model(**sample).logits
    convert = lambda: OpenVinoEngine(model, sample, model_id=str(tiny_bert), cache_dir=tmp_path)  # noqa: E731
    fp32 = _race(convert, convert)
    assert calls == ["convert"]
    for engine in fp32:
        assert torch.allclose(engine(sample), reference, atol=1e-4)

    int8 = [OpenVinoEngine(model, sample, quantize=True, model_id=str(tiny_bert), cache_dir=tmp_path)
            for _ in range(2)]
    assert all(engine.needs_calibration for engine in int8)
    _race(lambda: int8[0].calibrate([sample]), lambda: int8[1].calibrate([sample]))
    assert calls == ["convert", "quantize"]  # the second worker read the first one's calibrated model
    assert not any(engine.needs_calibration for engine in int8)
    assert torch.equal(int8[0](sample), int8[1](sample))


def test_the_checkpoints_default_prompt_goes_before_each_query(tiny_bert, tmp_path):
    """Read from CrossEncoder's public ``prompts`` / ``default_prompt_name`` (no private ``_resolve_prompt``)."""
    from sentence_transformers import CrossEncoder

    saved = tmp_path / "prompted"
    CrossEncoder(str(tiny_bert), device="cpu", prompts={"rerank": "wing flutter query: "},
                 default_prompt_name="rerank").save(str(saved))
    reference = CrossEncoder(str(saved), device="cpu")
    assert reference.default_prompt_name == "rerank"
    expected = reference.predict(PAIRS)
    assert np.abs(expected - CrossEncoder(str(tiny_bert), device="cpu").predict(PAIRS)).max() > 1e-3
    np.testing.assert_allclose(CrossEncoderRanker(str(saved), device="cpu").predict(PAIRS), expected, atol=1e-4)


def test_bf16_on_cpu_autocasts_and_scores_close_to_fp32(tiny_bert):
    fp32 = CrossEncoderRanker(str(tiny_bert), device="cpu", precision="fp32", scale_score=False)
    bf16 = CrossEncoderRanker(str(tiny_bert), device="cpu", precision="bf16", scale_score=False)
    expected, scores = fp32.predict(PAIRS), bf16.predict(PAIRS)
    assert fp32.engine.autocast_dtype is None and bf16.engine.autocast_dtype == torch.bfloat16
    seen = []  # the linear layers really run in bf16, and the logits still come back fp32
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append(output.dtype) if isinstance(module, torch.nn.Linear) else None)
    try:
        logits = bf16.engine(sample_features(bf16._scorer.tokenizer, bf16.engine.input_names))
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert logits.dtype == torch.float32 and scores.dtype == np.float32
    assert not np.array_equal(scores, expected)  # bf16 rounding moved them ...
    assert np.corrcoef(scores, expected)[0, 1] > 0.99  # ... but only a little
    assert np.abs(scores - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_auto_and_fp32_stay_fp32_on_cpu(tiny_bert, precision, expected):
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", precision=precision)
    np.testing.assert_allclose(ranker.predict(PAIRS), expected, atol=1e-4, rtol=0)
    assert ranker.engine.autocast_dtype is None


def test_fp16_on_cpu_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="precision='fp16' runs on CUDA only .* use 'bf16' or 'fp32'"):
        CrossEncoderRanker(str(tiny_bert), device="cpu", precision="fp16")
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    with pytest.raises(ValueError, match="precision='fp16' runs on CUDA only"):  # device None without CUDA: warm-up
        create_engine("torch", model, None, torch.device("cpu"), precision="fp16")
