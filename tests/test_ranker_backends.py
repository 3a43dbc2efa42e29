"""The ranker's engines: torch and OpenVINO. ONNX Runtime was removed (slower on CPU, docs/ranker.md)."""

from __future__ import annotations

import logging

import pytest
from haystack import Pipeline

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.options import RANKER_ENGINES


def test_backend_onnx_is_refused_naming_the_removal():
    assert RANKER_ENGINES == ("torch", "openvino")
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'openvino'\), got 'onnx' \(the ONNX"):
        CrossEncoderRanker("x", backend="onnx")
    assert "onnx_cache_dir" not in CrossEncoderRanker("x").to_dict()["init_parameters"]


def test_a_pipeline_yaml_written_with_onnx_cache_dir_still_loads(tiny_bert, caplog):
    pipeline = Pipeline()
    pipeline.add_component("ranker", CrossEncoderRanker(str(tiny_bert), top_k=3, device="cpu"))
    written = pipeline.dumps()
    old = written.replace("      top_k: 3\n", "      top_k: 3\n      onnx_cache_dir: null\n")
    assert old != written, "the YAML layout changed: the test must inject the old key another way"
    assert Pipeline.loads(old).get_component("ranker").top_k == 3
    with caplog.at_level(logging.WARNING, logger="rerank_pipeline.components.ranker"):
        ranker = Pipeline.loads(old.replace("onnx_cache_dir: null", "onnx_cache_dir: /tmp/x")).get_component("ranker")
    assert ranker.to_dict() == CrossEncoderRanker(str(tiny_bert), top_k=3, device="cpu").to_dict()
    assert "ignoring onnx_cache_dir" in caplog.text
