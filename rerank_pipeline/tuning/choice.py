"""How ``tune`` judges a configuration against the reference and chooses one.

A configuration is *not worse* than the reference when, on the per-query figures of ``metric`` over the same judged
queries, the mean difference is no worse than ``-epsilon`` and neither the paired t-test nor the randomization test
(:func:`~rerank_pipeline.eval.significance.paired_test`) finds it significantly below the reference at ``alpha``.
Each configuration is tested on its own, without a multiple-comparison correction: a correction would make it
easier, not harder, for a worse configuration to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rerank_pipeline.eval.significance import PairedTest, paired_test
from rerank_pipeline.tuning.grid import Configuration

DEFAULT_ALPHA = 0.05
DEFAULT_EPSILON = 0.005
DEFAULT_METRIC = "ndcg@10"


@dataclass
class Measurement:
    """What one configuration measured: the full ranking's mean ``metrics`` and ``per_query`` figures (qid ->
    metric -> value, as ``eval`` reports them) and the single-query latencies (seconds, warm)."""

    configuration: Configuration
    stage: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latencies_s: list[float]
    load: tuple[float, float] = (0.0, 0.0)
    test: PairedTest | None = None
    passes: bool = False
    verdict: str = ""
    details: dict = field(default_factory=dict)

    @property
    def p50_s(self) -> float:
        """Median seconds a query (first stage, rerank, fusion), single stream."""
        return float(np.percentile(self.latencies_s, 50))

    @property
    def p95_s(self) -> float:
        """95th percentile seconds a query."""
        return float(np.percentile(self.latencies_s, 95))


def judge(measurement: Measurement, reference: Measurement, metric: str = DEFAULT_METRIC,
          alpha: float = DEFAULT_ALPHA, epsilon: float = DEFAULT_EPSILON) -> None:
    """Test ``measurement`` against ``reference`` on ``metric``; sets its ``test``, ``passes`` and ``verdict``.

    :raises ValueError: the two measured different queries.
    """
    queries = sorted(reference.per_query)
    if sorted(measurement.per_query) != queries:
        raise ValueError(f"{measurement.configuration.label} and the reference measured different queries")
    test = paired_test([reference.per_query[q][metric] for q in queries],
                       [measurement.per_query[q][metric] for q in queries])
    measurement.test = test
    p_values = f"t-test p={test.t_test_p:.3f}, randomization p={test.permutation_p:.3f}"
    if measurement is reference:
        measurement.passes, measurement.verdict = True, "the reference"
    elif test.delta < -epsilon:
        measurement.passes = False
        measurement.verdict = f"worse: mean {metric} {test.delta:+.4f} is below -epsilon = -{epsilon:g} ({p_values})"
    elif test.delta < 0 and min(test.t_test_p, test.permutation_p) < alpha:
        measurement.passes = False
        measurement.verdict = f"significantly worse: {metric} {test.delta:+.4f} ({p_values}, alpha = {alpha:g})"
    else:
        measurement.passes = True
        measurement.verdict = f"not worse: {metric} {test.delta:+.4f} ({p_values})"


def choose(measurements: Sequence[Measurement], reference: Measurement, metric: str = DEFAULT_METRIC,
           budget_s: float | None = None) -> tuple[Measurement, str]:
    """The chosen configuration and why.

    Without ``budget_s``: the fastest (p50) configuration that :func:`judge` passed (the reference always does),
    ties going to the better ``metric``. With ``budget_s``: the best mean ``metric`` among those whose p50 is within
    the budget (passed or not; the verdict says); when none is, the fastest one, saying the budget was missed.
    """
    quality = lambda m: m.metrics[metric]  # noqa: E731
    speedup = lambda m: f"p50 {m.p50_s:.3f} s against the reference's {reference.p50_s:.3f} s ({reference.p50_s / m.p50_s:.2f}x)"  # noqa: E731
    if budget_s is None:
        passing = [m for m in measurements if m.passes]
        chosen = min(passing, key=lambda m: (m.p50_s, -quality(m)))
        return chosen, f"the fastest configuration not worse than the reference: {chosen.verdict}; {speedup(chosen)}"
    within = [m for m in measurements if m.p50_s <= budget_s]
    if not within:
        chosen = min(measurements, key=lambda m: (m.p50_s, -quality(m)))
        return chosen, (f"no configuration meets the p50 budget of {budget_s * 1000:g} ms; the fastest: "
                        f"{chosen.verdict}; {speedup(chosen)}")
    chosen = max(within, key=lambda m: (quality(m), -m.p50_s))
    return chosen, (f"the best {metric} within the p50 budget of {budget_s * 1000:g} ms: {chosen.verdict}; "
                    f"{speedup(chosen)}")


def pareto_front(measurements: Sequence[Measurement], metric: str = DEFAULT_METRIC) -> list[Measurement]:
    """The configurations no other one beats on both p50 and ``metric`` (fastest first)."""
    front: list[Measurement] = []
    for measurement in sorted(measurements, key=lambda m: (m.p50_s, -m.metrics[metric])):
        if not front or measurement.metrics[metric] > front[-1].metrics[metric]:
            front.append(measurement)
    return front
