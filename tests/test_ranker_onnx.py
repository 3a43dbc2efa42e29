"""The opt-in ONNX Runtime backend (fp32 and int8 dynamic quantization) of CrossEncoderRanker."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from rerank_pipeline.components import CrossEncoderRanker
from tiny_models import BACKEND_PAIRS as PAIRS

pytest.importorskip("onnx", reason="pip install onnx for the ONNX export")
pytest.importorskip("onnxruntime", reason="pip install onnxruntime for the ONNX backend")


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_modernbert"])
def test_onnx_fp32_matches_sentence_transformers(model_fixture, request, tmp_path):
    model_path = str(request.getfixturevalue(model_fixture))
    expected = CrossEncoder(model_path, device="cpu").predict(PAIRS)
    ranker = CrossEncoderRanker(model_path, device="cpu", backend="onnx", onnx_cache_dir=str(tmp_path),
                                batch_size=3, max_batch_tokens=120)
    np.testing.assert_allclose(ranker.predict(PAIRS), expected, atol=1e-4, rtol=0)
    assert len(list(tmp_path.rglob("model.onnx"))) == 1


def test_onnx_int8_close_to_fp32_and_cached(tiny_bert, expected, tmp_path):
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", backend="onnx", quantize=True,
                                onnx_cache_dir=str(tmp_path))
    scores = ranker.predict(PAIRS)
    assert scores.shape == expected.shape
    assert np.abs(scores - expected).max() < 0.1
    assert np.corrcoef(scores, expected)[0, 1] > 0.9
    exports = sorted(path.name for path in tmp_path.rglob("*.onnx"))
    assert exports == ["model.onnx", "model_int8.onnx"]
    again = CrossEncoderRanker(str(tiny_bert), device="cpu", backend="onnx", quantize=True,
                               onnx_cache_dir=str(tmp_path))
    np.testing.assert_allclose(again.predict(PAIRS), scores, atol=1e-6)
    assert sorted(path.name for path in tmp_path.rglob("*.onnx")) == exports


def test_export_key_follows_the_hub_commit(tmp_path):
    from rerank_pipeline.components.ranker.onnx_export import hub_revision, model_fingerprint

    repo = tmp_path / "hub" / "models--org--reranker"
    for commit in ("aaa111", "bbb222"):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    keys = {}
    for commit in ("aaa111", "bbb222"):
        (repo / "refs" / "main").write_text(commit)
        assert hub_revision("org/reranker", tmp_path / "hub") == commit
        keys[commit] = model_fingerprint("org/reranker", ["input_ids"], tmp_path / "hub")
    assert keys["aaa111"] != keys["bbb222"]  # an updated Hub model gets a fresh export
    assert hub_revision("org/not-cached", tmp_path / "hub") is None
