"""The configurations ``tune`` measures: candidate depth x token window x engine/precision, and their price.

By default the grid is swept in three stages, each at the best setting the stage before chose: the candidate
depths at the reference's window and engine (one scoring of the deepest list serves every depth), then the token
windows at the chosen depth, then the engines this machine supports at the chosen depth and window. ``full=True``
measures every combination instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rerank_pipeline.hardware import EngineConfiguration

DEFAULT_DEPTHS = (10, 20, 30, 50, 100)
DEFAULT_WINDOWS = (128, 256, 512)
STAGES = ("depth", "window", "engine")


@dataclass(frozen=True)
class Configuration:
    """One served setting of the reranker: ``depth`` first-stage candidates reranked at a ``window``-token window
    by ``engine`` (engine, precision, int8)."""

    depth: int
    window: int
    engine: EngineConfiguration

    @property
    def label(self) -> str:
        """e.g. ``depth 30, window 256, torch bf16``."""
        return f"depth {self.depth}, window {self.window}, {self.engine.label}"

    def ranker_kwargs(self) -> dict[str, Any]:
        """``CrossEncoderRanker`` keywords of this configuration (its window and engine)."""
        return {**self.engine.ranker_kwargs(), "max_length": self.window}

    def settings(self) -> dict[str, Any]:
        """The configuration as plain values (``tune.json``, ``tune.csv``)."""
        return {"depth": self.depth, "window": self.window, "engine": self.engine.engine,
                "precision": self.engine.precision, "quantize": self.engine.quantize, "label": self.label}


def windows_for(model_window: int, windows: Sequence[int] = DEFAULT_WINDOWS, longest: int | None = None) -> list[int]:
    """The windows to try for a model whose own window is ``model_window`` (the reference's) and whose positions
    take at most ``longest`` tokens (default: its own window): those of ``windows`` up to ``longest``, and its own."""
    longest = max(longest or model_window, model_window)
    return sorted({window for window in windows if 0 < window <= longest} | {model_window})


def stage_configurations(
    stage: str, reference: Configuration, chosen: Configuration, depths: Sequence[int], windows: Sequence[int],
    engines: Sequence[EngineConfiguration],
) -> list[Configuration]:
    """The configurations of one stage of the reduced sweep (:data:`STAGES`), around ``chosen`` (the best so far):
    every depth at the reference's window and engine, every window at the chosen depth, every engine at the chosen
    depth and window. The deepest depth comes first, so its scoring serves the shallower ones."""
    if stage == "depth":
        return [Configuration(depth, reference.window, reference.engine) for depth in sorted(set(depths), reverse=True)]
    if stage == "window":
        return [Configuration(chosen.depth, window, reference.engine) for window in sorted(set(windows), reverse=True)]
    if stage == "engine":
        return [Configuration(chosen.depth, chosen.window, engine) for engine in engines]
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")


def full_grid(depths: Sequence[int], windows: Sequence[int], engines: Sequence[EngineConfiguration]) -> list[Configuration]:
    """Every combination, grouped by window and engine with the deepest depth first (so it serves the others)."""
    return [Configuration(depth, window, engine) for engine in engines for window in sorted(set(windows), reverse=True)
            for depth in sorted(set(depths), reverse=True)]


def price(
    configurations: Sequence[Configuration], queries: int, latency_queries: int, seconds_per_pair: float,
    reference_window: int,
) -> float:
    """Estimated seconds to measure ``configurations``: every new pair scored once for quality (a depth reuses the
    deeper scoring of the same window and engine) plus ``latency_queries`` single queries timed at each depth.
    A pair is priced at the reference's measured ``seconds_per_pair`` scaled by the window (an upper bound for
    short documents and faster engines)."""
    deepest: dict[tuple[int, EngineConfiguration], int] = {}
    pairs = 0.0
    for configuration in configurations:
        scale = configuration.window / reference_window
        key = (configuration.window, configuration.engine)
        new_depth = max(configuration.depth - deepest.get(key, 0), 0)
        deepest[key] = max(deepest.get(key, 0), configuration.depth)
        pairs += (new_depth * queries + configuration.depth * (latency_queries + 1)) * scale
    return pairs * seconds_per_pair
