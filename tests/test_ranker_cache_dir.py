"""Where converted models are cached: ``$RERANK_PIPELINE_CACHE``, else the Hugging Face assets cache rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank_pipeline.components.ranker.cache import default_cache_dir

CACHE_VARIABLES = ("RERANK_PIPELINE_CACHE", "HF_ASSETS_CACHE", "HF_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(monkeypatch):
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "home/.cache/huggingface/assets/rerank_pipeline/openvino"),
    ({"XDG_CACHE_HOME": "xdg"}, "xdg/huggingface/assets/rerank_pipeline/openvino"),
    ({"XDG_CACHE_HOME": "xdg", "HF_HOME": "hf"}, "hf/assets/rerank_pipeline/openvino"),
    ({"HF_HOME": "hf", "HF_ASSETS_CACHE": "assets"}, "assets/rerank_pipeline/openvino"),
    ({"HF_HOME": "hf", "XDG_CACHE_HOME": "xdg", "RERANK_PIPELINE_CACHE": "ours"}, "ours/openvino"),
])
def test_cache_dir_follows_the_environment(clean_env, tmp_path, env, expected):
    clean_env.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        clean_env.setenv(name, str(tmp_path / value))
    assert default_cache_dir("openvino") == tmp_path / expected


def test_default_is_huggingface_hubs_own_assets_folder(clean_env):
    """With no variable set, the folder is the one huggingface_hub gives downstream libraries."""
    from huggingface_hub import constants

    if constants.HF_ASSETS_CACHE != str(Path("~/.cache/huggingface/assets").expanduser()):
        pytest.skip("this process started with HF_HOME / HF_ASSETS_CACHE / XDG_CACHE_HOME set")
    assert default_cache_dir("openvino") == Path(constants.HF_ASSETS_CACHE) / "rerank_pipeline" / "openvino"
