"""The real-data fixtures skip in a clone without ``../shared``, and fail in CI (``.ci/run`` requires the data)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import missing

FLAGS = ("RERANK_PIPELINE_REQUIRE_DATA", "CI")


@pytest.mark.parametrize(("env", "outcome"), [
    ({}, pytest.skip.Exception),
    ({"CI": "false"}, pytest.skip.Exception),
    ({"RERANK_PIPELINE_REQUIRE_DATA": "0"}, pytest.skip.Exception),
    ({"CI": "true"}, pytest.fail.Exception),
    ({"RERANK_PIPELINE_REQUIRE_DATA": "1"}, pytest.fail.Exception),
])
def test_a_missing_collection_skips_locally_and_fails_where_required(env, outcome, monkeypatch):
    for name in FLAGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(outcome, match="Cranfield collection not found"):
        missing("Cranfield collection not found at /nowhere")


def test_ci_requires_the_data():
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "export RERANK_PIPELINE_REQUIRE_DATA=1" in script
