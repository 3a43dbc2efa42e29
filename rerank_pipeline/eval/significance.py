"""Per-query paired significance tests between two rankings of the same queries.

Two tests, both two-sided, on the per-query differences of one metric (system B minus system A):

- the paired t-test (``scipy.stats.ttest_rel``), what trec_eval users and ranx report by default;
- a paired randomization test (``scipy.stats.permutation_test`` with ``permutation_type="samples"``: each
  query's pair of scores is swapped or not at random), which assumes no normality.

With more than two systems compared against one baseline, p-values are Bonferroni-corrected (multiplied by the
number of comparisons, capped at 1).

Why scipy and not ranx's ``compare``: ranx computes its own metrics from ``Qrels``/``Run`` objects, while our
reports test per-query figures that ranx does not compute (the R-k protocol of sentence-transformers, with binary
relevance and positives forced in, next to ir_measures' full-ranking metrics). scipy tests any paired per-query
vectors, so one function serves every report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_ALPHA = 0.05
PERMUTATION_RESAMPLES = 10_000
PERMUTATION_SEED = 0
FLOAT_NOISE = 1e-9  # per-query differences this small are rounding, not a difference between systems
MIN_QUERIES = 2
FEWER_THAN_TWO = "fewer than 2 judged queries"  # why a report's paired test was not run


@dataclass(frozen=True)
class PairedTest:
    """The outcome of one paired comparison on ``queries`` queries: mean of B − A and the two p-values.

    A test that was not run (``not_run`` says why) keeps the means and has no p-values (None).
    """

    queries: int
    mean_a: float
    mean_b: float
    delta: float
    t_test_p: float | None
    permutation_p: float | None
    comparisons: int = 1
    not_run: str | None = None

    def significant(self, alpha: float = DEFAULT_ALPHA) -> bool:
        """Both tests reject equality at ``alpha`` (after the correction); False for a test not run."""
        return self.not_run is None and self.t_test_p < alpha and self.permutation_p < alpha

    def marker(self, alpha: float = DEFAULT_ALPHA) -> str:
        """``*`` when significant at ``alpha``, else empty: the console tables' mark."""
        return "*" if self.significant(alpha) else ""

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The fields, floats rounded to 6 digits; ``not_run`` only for a test that was not run."""
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()
                if key != "not_run" or value is not None}


def paired_test(a: Sequence[float], b: Sequence[float], comparisons: int = 1) -> PairedTest:
    """Two-sided paired t-test and randomization test of ``b`` against ``a`` (same queries, same order).

    ``comparisons`` > 1 applies the Bonferroni correction. Identical inputs give p = 1 (no difference to test).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired test needs two equally long per-query vectors, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"paired test needs at least 2 queries, got {len(a)}")
    differences = b - a
    if np.all(np.abs(differences) <= FLOAT_NOISE):  # equal up to float noise (e.g. figures read back from a CSV)
        t_p = permutation_p = 1.0
    else:
        t_p = float(stats.ttest_rel(b, a).pvalue)
        if np.isnan(t_p):  # constant non-zero differences: the t statistic is infinite
            t_p = 0.0
        permutation_p = float(stats.permutation_test(
            (b, a), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=PERMUTATION_RESAMPLES,
            alternative="two-sided", random_state=PERMUTATION_SEED,
        ).pvalue)
    correct = lambda p: min(1.0, p * max(1, comparisons))  # noqa: E731
    return PairedTest(
        queries=len(a), mean_a=float(a.mean()), mean_b=float(b.mean()), delta=float(differences.mean()),
        t_test_p=correct(t_p), permutation_p=correct(permutation_p), comparisons=max(1, comparisons),
    )


def compare_per_query(
    baseline: Mapping[str, Mapping[str, float]],
    system: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | None = None,
    comparisons: int = 1,
) -> dict[str, PairedTest]:
    """metric -> :class:`PairedTest` of ``system`` against ``baseline``, both ``qid -> {metric: value}``.

    The queries must be the same in both (a missing query is an error, never a silent skip).
    """
    if set(baseline) != set(system):
        missing = sorted(set(baseline) ^ set(system))
        raise ValueError(f"paired test needs the same queries in both rankings; {len(missing)} differ, e.g. {missing[:5]}")
    query_ids = sorted(baseline)
    metrics = list(metrics or (next(iter(baseline.values())).keys() if baseline else []))
    return {
        metric: paired_test([baseline[q][metric] for q in query_ids], [system[q][metric] for q in query_ids], comparisons)
        for metric in metrics
    }


def compare_or_not_run(
    baseline: Mapping[str, Mapping[str, float]],
    system: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | None = None,
    comparisons: int = 1,
) -> dict[str, PairedTest]:
    """:func:`compare_per_query`, or with fewer than 2 queries a test per metric that was not run
    (means kept, p-values None, ``not_run`` = :data:`FEWER_THAN_TWO`): a report of one query is still written."""
    if len(baseline) >= MIN_QUERIES or set(baseline) != set(system):
        return compare_per_query(baseline, system, metrics, comparisons)
    metrics = list(metrics or (next(iter(baseline.values())).keys() if baseline else []))
    tests = {}
    for metric in metrics:
        a = np.asarray([row[metric] for row in baseline.values()], dtype=np.float64)
        b = np.asarray([system[qid][metric] for qid in baseline], dtype=np.float64)
        tests[metric] = PairedTest(queries=len(a), mean_a=float(a.mean()), mean_b=float(b.mean()),
                                   delta=float((b - a).mean()), t_test_p=None, permutation_p=None,
                                   comparisons=max(1, comparisons), not_run=FEWER_THAN_TWO)
    return tests


def format_delta(test: PairedTest, alpha: float = DEFAULT_ALPHA) -> str:
    """``0.4310 (+0.0123) p=0.031/0.029*``: the model-card cell, then t-test/randomization p-values and the mark."""
    return f"{test.mean_b:.4f} ({test.delta:+.4f}) {p_values(test)}{test.marker(alpha)}"


def p_values(test: PairedTest) -> str:
    """``p=0.031/0.029``: paired t-test / randomization test (``p=n/a`` for a test not run)."""
    if test.not_run is not None:
        return "p=n/a"
    return f"p={test.t_test_p:.3f}/{test.permutation_p:.3f}"


SIGNIFICANCE_NOTE = ("p = two-sided paired t-test / randomization test over queries (scipy), Bonferroni-corrected when "
                     "several systems are compared with one baseline; * = both p < 0.05")
