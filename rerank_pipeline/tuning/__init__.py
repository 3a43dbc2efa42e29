"""Tune the reranker to the user's latency budget on their judgements: ``rerank-pipeline tune`` as a Python call.

Usage::

    from rerank_pipeline.tuning import tune

    result = tune("../shared/datasets/cranfield", "indexes/cranfield", "my-cross-encoder", split="test")
    result.chosen.configuration.label, result.chosen.p50_s
    result.save("tuned")  # pipeline.yml, tune.json, tune.csv, tune.md, tune.png
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerank_pipeline._lazy import lazy_exports

if TYPE_CHECKING:
    from rerank_pipeline.tuning.choice import Measurement
    from rerank_pipeline.tuning.grid import Configuration
    from rerank_pipeline.tuning.tuner import TuneResult, tune

__all__ = ["Configuration", "Measurement", "TuneResult", "tune"]

__getattr__ = lazy_exports(__name__, {"Configuration": "grid", "Measurement": "choice", "TuneResult": "tuner",
                                      "tune": "tuner"})
