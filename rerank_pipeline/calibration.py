"""Calibrated scores: a map from a cross-encoder's raw logit to the probability that the document is relevant.

:func:`fit_calibration` fits it on judged (query, candidate) pairs (Platt scaling or isotonic regression, with
scikit-learn), cross-validated by query so the figures it reports (Brier score, expected calibration error, the
threshold reaching a target precision) come from queries the fit did not see. The result, a :class:`Calibration`,
is plain numbers (JSON, no pickle): ``CrossEncoderRanker(score_calibration=calibration.to_dict())`` then returns
calibrated probabilities as ``Document.score``, so ``score_threshold`` is a probability of relevance.

Usage:
    result = fit_calibration(logits, labels, query_ids, method="platt", target_precision=0.7)
    result.calibration.save("calibration.json")
    result.reliability_diagram("reliability.png")
    ranker = CrossEncoderRanker(model, score_calibration=result.calibration.to_dict(),
                                score_threshold=result.threshold)
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerank_pipeline import atomic
from rerank_pipeline.options import CALIBRATION_METHODS, CalibrationMethod

RELIABILITY_BINS = 10
"""Equal-width probability bins of the expected calibration error and the reliability diagram."""
PLATT_C = 1e6
"""Inverse regularisation of the Platt fit: large, so the logistic regression is practically unregularised."""


def _sigmoid(values: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(values)


@dataclass(frozen=True)
class Calibration:
    """A monotone map from a raw logit to a probability of relevance.

    ``method="platt"``: ``sigmoid(a * logit + b)`` with ``a > 0``. ``method="isotonic"``: linear interpolation over
    the breakpoints ``(x, y)`` (``x`` strictly increasing, ``y`` non-decreasing in [0, 1]), constant beyond the
    ends. Either never reorders documents: a higher logit never gets a lower probability.

    Usage:
        calibration = Calibration.from_dict({"method": "platt", "a": 1.3, "b": -2.0})
        calibration(np.array([-1.0, 0.0, 3.0]))  # probabilities
    """

    method: CalibrationMethod
    a: float | None = None
    b: float | None = None
    x: tuple[float, ...] | None = None
    y: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _validate(self.to_dict())
        for name in ("a", "b"):  # plain floats, so to_dict is JSON/YAML as it is (no NumPy scalars)
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("x", "y"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(value) for value in getattr(self, name)))

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities in [0, 1] of the raw ``logits`` (any shape)."""
        values = np.asarray(logits, dtype=np.float64)
        if self.method == "platt":
            return _sigmoid(self.a * values + self.b)
        return np.interp(values, self.x, self.y)  # np.interp holds the end values beyond the breakpoints

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML form: ``{"method": "platt", "a": ..., "b": ...}`` or ``{"method": "isotonic", "x": [...],
        "y": [...]}``."""
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        if self.method == "isotonic":
            return {"method": "isotonic", "x": [] if self.x is None else list(self.x),
                    "y": [] if self.y is None else list(self.y)}
        return {"method": self.method}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild a calibration from :meth:`to_dict` output.

        :raises ValueError: one line naming the problem: not a mapping, an unknown method, a missing or extra key, a
            parameter that is not a finite number, a Platt slope ``a <= 0``, or isotonic breakpoints that are empty,
            of different lengths, not strictly increasing in ``x``, decreasing in ``y`` or outside [0, 1].
        """
        _validate(data)
        if data["method"] == "platt":
            return cls("platt", a=float(data["a"]), b=float(data["b"]))
        return cls("isotonic", x=tuple(float(v) for v in data["x"]), y=tuple(float(v) for v in data["y"]))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically; returns ``path``."""
        return atomic.write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`.

        :raises ValueError: the file is missing, not JSON or not a valid calibration (the message names the file).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: calibration file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a calibration JSON file ({error})") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def _finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"calibration {name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"calibration {name} must be finite, got {value!r}")
    return float(value)


def _validate(data: Any) -> None:
    """Raise a one-line ``ValueError`` naming the first problem of a calibration's dict form."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a calibration must be a mapping with a 'method', got {type(data).__name__}")
    method = data.get("method")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    keys = {"platt": ("a", "b"), "isotonic": ("x", "y")}[method]
    missing = [key for key in keys if data.get(key) is None]
    extra = sorted(map(str, set(data) - {"method", *keys}))
    if missing or extra:
        problem = f"lacks {missing}" if missing else f"has unexpected keys {extra}"
        raise ValueError(f"a {method} calibration needs exactly {list(keys)}; this one {problem}")
    if method == "platt":
        if _finite_number(data["a"], "a") <= 0:
            raise ValueError(f"calibration slope a must be > 0 (probability rising with the logit), got {data['a']!r}")
        _finite_number(data["b"], "b")
        return
    for key in ("x", "y"):
        if not isinstance(data[key], (list, tuple)) or not data[key]:
            raise ValueError(f"isotonic calibration {key} must be a non-empty list of numbers, got {data[key]!r}")
    x = [_finite_number(v, f"x[{i}]") for i, v in enumerate(data["x"])]
    y = [_finite_number(v, f"y[{i}]") for i, v in enumerate(data["y"])]
    if len(x) != len(y):
        raise ValueError(f"isotonic calibration x and y must have the same length, got {len(x)} and {len(y)}")
    if any(later <= earlier for earlier, later in itertools.pairwise(x)):
        raise ValueError("isotonic calibration x must be strictly increasing")
    if any(later < earlier for earlier, later in itertools.pairwise(y)):
        raise ValueError("isotonic calibration y must be non-decreasing (monotone)")
    if y[0] < 0 or y[-1] > 1:
        raise ValueError(f"isotonic calibration y must lie in [0, 1], got {y[0]!r} .. {y[-1]!r}")


# --- measures -------------------------------------------------------------------------------------------------


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared difference between the predicted probability and the 0/1 label."""
    return float(np.mean((np.asarray(probabilities, float) - np.asarray(labels, float)) ** 2))


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = RELIABILITY_BINS) -> dict[str, list]:
    """Per equal-width bin of [0, 1] (the last bin closed): ``count``, ``predicted`` (mean probability) and
    ``observed`` (fraction relevant); an empty bin has ``None`` for both means."""
    probabilities, labels = np.asarray(probabilities, float), np.asarray(labels, float)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=probabilities, minlength=bins)
    observed = np.bincount(index, weights=labels, minlength=bins)
    return {
        "edges": [i / bins for i in range(bins + 1)],
        "count": counts.tolist(),
        "predicted": [float(p / n) if n else None for p, n in zip(predicted, counts)],
        "observed": [float(o / n) if n else None for o, n in zip(observed, counts)],
    }


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = RELIABILITY_BINS) -> float:
    """ECE over ``bins`` equal-width bins of [0, 1]: the mean over pairs of |mean probability - fraction relevant|
    of the pair's bin (bins weighted by their pair counts)."""
    table = reliability_bins(probabilities, labels, bins)
    total = sum(table["count"])
    return float(sum(n * abs(p - o) for n, p, o in zip(table["count"], table["predicted"], table["observed"]) if n)
                 / total)


def precision_threshold(probabilities: np.ndarray, labels: np.ndarray,
                        target_precision: float) -> tuple[float, float, int] | None:
    """The smallest threshold ``t`` among ``probabilities`` whose pairs scoring ``>= t`` have a precision (fraction
    relevant) of at least ``target_precision``: ``(t, precision, pairs)``, or None when no threshold reaches it."""
    probabilities, labels = np.asarray(probabilities, float), np.asarray(labels, float)
    order = np.argsort(-probabilities, kind="stable")
    sorted_probabilities = probabilities[order]
    relevant = np.cumsum(labels[order])
    # a threshold keeps every pair tied with it: evaluate at the last pair of each run of equal probabilities
    last = np.flatnonzero(np.append(sorted_probabilities[1:] != sorted_probabilities[:-1], True))
    retrieved = last + 1
    precision = relevant[last] / retrieved
    reaching = np.flatnonzero(precision >= target_precision)
    if reaching.size == 0:
        return None
    best = reaching[-1]  # the lowest threshold (most pairs) that reaches the target
    return float(sorted_probabilities[last[best]]), float(precision[best]), int(retrieved[best])


# --- fitting --------------------------------------------------------------------------------------------------


def _fit(method: str, logits: np.ndarray, labels: np.ndarray) -> Calibration:
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=PLATT_C, max_iter=1000).fit(logits.reshape(-1, 1), labels)
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if not a > 0:
            raise ValueError(f"the logits do not rise with relevance (Platt slope {a:.3g} <= 0): nothing to calibrate")
        return Calibration("platt", a=a, b=b)
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(logits, labels)
    return Calibration("isotonic", x=tuple(map(float, model.X_thresholds_)), y=tuple(map(float, model.y_thresholds_)))


@dataclass
class CalibrationResult:
    """What :func:`fit_calibration` returns.

    ``before`` / ``after``: ``brier`` and ``ece`` (expected calibration error over 10 equal-width probability bins)
    of the out-of-fold predictions (each pair predicted by a calibration fitted without its query), ``before`` for
    the model's own activation ``sigmoid(logit)``, ``after`` for the calibration. ``threshold``: the smallest
    calibrated probability whose out-of-fold precision reaches ``target_precision``, with that ``precision`` and the
    number of pairs ``above`` it (all None when not asked or not reachable).
    """

    calibration: Calibration
    before: dict[str, float]
    after: dict[str, float]
    target_precision: float | None
    threshold: float | None
    precision: float | None
    above: int | None
    pairs: int
    queries: int
    relevant: int
    folds: int
    labels: np.ndarray = field(repr=False)
    before_probabilities: np.ndarray = field(repr=False)
    after_probabilities: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: the calibration, the figures, the threshold and the reliability bins."""
        return {
            "calibration": self.calibration.to_dict(),
            "pairs": self.pairs, "queries": self.queries, "relevant": self.relevant, "folds": self.folds,
            "held_out": "out-of-fold predictions, folds by query",
            "before": dict(self.before), "after": dict(self.after),
            "target_precision": self.target_precision, "threshold": self.threshold,
            "precision": self.precision, "above": self.above,
            "reliability": {"before": reliability_bins(self.before_probabilities, self.labels),
                            "after": reliability_bins(self.after_probabilities, self.labels)},
        }

    def reliability_diagram(self, path: str | Path) -> Path:
        """Write a PNG (atomically): observed fraction relevant against mean predicted probability per bin, before
        and after calibration, with the diagonal of perfect calibration; below it, the pairs in each bin."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                             gridspec_kw={"height_ratios": [3, 1.2]})
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
        width = 1 / RELIABILITY_BINS
        centres = np.arange(RELIABILITY_BINS) * width + width / 2
        for name, probabilities, marker, shift in (("before: sigmoid(logit)", self.before_probabilities, "o", -1),
                                                   (f"after: {self.calibration.method}", self.after_probabilities,
                                                    "s", 1)):
            table = reliability_bins(probabilities, self.labels)
            filled = [i for i, n in enumerate(table["count"]) if n]
            figures = self.before if shift < 0 else self.after
            top.plot([table["predicted"][i] for i in filled], [table["observed"][i] for i in filled], marker=marker,
                     label=f"{name} (ECE {figures['ece']:.3f}, Brier {figures['brier']:.3f})")
            bars = bottom.bar(centres + shift * width / 4, table["count"], width / 2, label=name)
            bottom.bar_label(bars, fontsize=6)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("observed fraction relevant")
        top.set_title(f"Reliability on held-out queries ({self.pairs} pairs, {self.queries} queries)", fontsize=10)
        top.legend(fontsize=7, loc="upper left")
        bottom.set_xlabel(f"predicted probability ({RELIABILITY_BINS} equal-width bins)")
        bottom.set_ylabel("pairs")
        bottom.margins(y=0.2)
        figure.tight_layout()
        return atomic.save_figure(figure, path)


def fit_calibration(
    logits: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    method: CalibrationMethod = "platt",
    folds: int = 5,
    seed: int = 0,
    target_precision: float | None = None,
) -> CalibrationResult:
    """Fit logit -> probability of relevance on judged pairs, with figures from queries held out of the fit.

    The pairs are split into ``folds`` by query (``GroupKFold``, groups shuffled with ``seed``), so a query's pairs
    are never both fitted and evaluated; every pair gets an out-of-fold probability, on which Brier score, ECE and
    the threshold are computed. The returned calibration is fitted on all pairs. Platt scaling is a near
    unregularised logistic regression on the logit; isotonic regression is ``IsotonicRegression(out_of_bounds=
    "clip")``.

    :param logits: Raw cross-encoder logits of (query, candidate) pairs.
    :param labels: 1 if the pair is judged relevant (grade > 0), else 0 (an unjudged candidate counts as 0).
    :param groups: The query id of each pair.
    :param method: ``"platt"`` or ``"isotonic"``.
    :param folds: Cross-validation folds (>= 2), at most the number of queries.
    :param seed: Shuffles the queries into folds.
    :param target_precision: In (0, 1]: also find the smallest calibrated threshold reaching this precision.
    :returns: A :class:`CalibrationResult`.
    :raises ValueError: Inputs of different lengths or empty, non-finite logits, labels other than 0/1, labels all
        one class (also within a fold's fitting queries), fewer queries than ``folds``, an unknown ``method``, a
        ``target_precision`` outside (0, 1], or logits that do not rise with relevance (Platt).
    """
    from sklearn.model_selection import GroupKFold

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels)
    groups = np.asarray([str(group) for group in groups])
    if not (len(logits) == len(labels) == len(groups)):
        raise ValueError(f"fit_calibration got {len(logits)} logits, {len(labels)} labels and {len(groups)} groups")
    if not len(logits):
        raise ValueError("fit_calibration needs judged pairs; got none")
    if not np.isfinite(logits).all():
        raise ValueError(f"logits must be finite; {int((~np.isfinite(logits)).sum())} are not")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(labels.tolist()) - {0, 1})[:5]}")
    labels = labels.astype(int)
    if labels.min() == labels.max():
        raise ValueError(f"labels are all {labels[0]}: calibration needs relevant and non-relevant pairs")
    queries = np.unique(groups)
    if len(queries) < folds:
        raise ValueError(f"{folds}-fold calibration needs at least {folds} queries, got {len(queries)}")

    out_of_fold = np.empty_like(logits)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(logits, labels, groups)):
        if labels[fit_rows].min() == labels[fit_rows].max():
            raise ValueError(f"fold {fold + 1}'s fitting queries have labels all {labels[fit_rows][0]}; "
                             "use fewer folds or more queries")
        out_of_fold[held_rows] = _fit(method, logits[fit_rows], labels[fit_rows])(logits[held_rows])
    before = _sigmoid(logits)
    found = precision_threshold(out_of_fold, labels, target_precision) if target_precision is not None else None
    threshold, precision, above = found if found is not None else (None, None, None)
    return CalibrationResult(
        calibration=_fit(method, logits, labels),
        before={"brier": brier_score(before, labels), "ece": expected_calibration_error(before, labels)},
        after={"brier": brier_score(out_of_fold, labels), "ece": expected_calibration_error(out_of_fold, labels)},
        target_precision=target_precision, threshold=threshold, precision=precision, above=above,
        pairs=len(logits), queries=len(queries), relevant=int(labels.sum()), folds=folds,
        labels=labels, before_probabilities=before, after_probabilities=out_of_fold,
    )
