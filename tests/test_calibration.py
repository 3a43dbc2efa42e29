"""Calibrated scores: fit_calibration's promise (a threshold's precision on held-out queries), its figures, the
Calibration's serialized form, and CrossEncoderRanker returning calibrated probabilities in the raw logits' order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from haystack import Document, Pipeline
from scipy.special import expit
from scipy.stats import binomtest

from rerank_pipeline.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    precision_threshold,
    reliability_bins,
)
from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.pipelines import load_pipeline

PER_QUERY = 20  # candidates a query, as a top-20 rerank


def synthetic_pairs(queries: int, seed: int, scale: float = 1.0, spread: float = 0.5):
    """(logits, labels, query ids) where the truth is known: a pair is relevant with probability
    ``sigmoid(1.5 * s - 1 + u_q)`` for a latent score ``s`` and a query-level offset ``u_q ~ N(0, spread)``; the
    model reports ``scale * s``, so ``scale != 1`` is a miscalibrated model."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, spread, queries)
    latent = rng.normal(-1.0, 2.0, (queries, PER_QUERY))
    labels = (rng.random(latent.shape) < expit(1.5 * latent - 1.0 + offsets[:, None])).astype(int)
    groups = np.repeat([f"q{index}" for index in range(queries)], PER_QUERY)
    return scale * latent.ravel(), labels.ravel(), groups


def held_out_precision(calibration: Calibration, threshold: float, logits, labels):
    """Relevant and retrieved among held-out pairs whose calibrated probability is >= ``threshold``."""
    kept = calibration(logits) >= threshold
    return int(np.asarray(labels)[kept].sum()), int(kept.sum())


def wilson(relevant: int, retrieved: int, level: float):
    return binomtest(relevant, retrieved).proportion_ci(level, method="wilson")


# --- the promise ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["platt", "isotonic"])
@pytest.mark.parametrize("target", [0.7, 0.5])
def test_a_threshold_gives_the_promised_precision_on_held_out_queries(method, target):
    """Fit on 600 queries, check on 300 other queries: the precision of the pairs above the threshold is within a
    99% Wilson interval of the target (Platt: either side). Isotonic regression's flat steps make the threshold
    coarser (the held-out precision often overshoots the target), so for it the promise is one-sided: not
    significantly below the target."""
    logits, labels, groups = synthetic_pairs(900, seed=7)
    fitted = np.isin(groups, [f"q{index}" for index in range(600)])
    result = fit_calibration(logits[fitted], labels[fitted], groups[fitted], method=method, target_precision=target)
    assert result.threshold is not None and result.precision >= target and result.above > 0
    relevant, retrieved = held_out_precision(result.calibration, result.threshold, logits[~fitted], labels[~fitted])
    assert retrieved >= 200
    interval = wilson(relevant, retrieved, 0.99)
    assert target <= interval.high, (method, target, relevant / retrieved, interval)
    if method == "platt":
        assert interval.low <= target, (method, target, relevant / retrieved, interval)


@pytest.fixture(scope="module")
def cranfield_bm25_pairs(cranfield_dir):
    """BM25 top-20 of every judged query of Cranfield's train and test splits, as (scores, labels, query ids):
    there is no trained cross-encoder offline, so BM25 scores stand in for the logits."""
    from rerank_pipeline.eval.experiment import load_collection
    from rerank_pipeline.first_stage import build_first_stage

    splits = {split: load_collection(cranfield_dir, split=split) for split in ("train", "test")}
    stage = build_first_stage("bm25")
    stage.index(list(splits["train"].documents()))
    pairs = {}
    for split, dataset in splits.items():
        rows = [(score, int(doc_id in set(dataset.positives(qid))), qid)
                for qid, ranked in stage.retrieve(dict(dataset.judged_queries()), top_k=PER_QUERY).items()
                for doc_id, score in ranked]
        scores, labels, groups = zip(*rows)
        pairs[split] = np.array(scores), np.array(labels), np.array(groups)
    return pairs


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_on_cranfield_a_threshold_fitted_on_train_queries_holds_on_test_queries(cranfield_bm25_pairs, method):
    """BM25 scores depend on the query (its length, its terms' rarity), so few pairs reach a high precision across
    queries: about 15% of the top-20 pairs are relevant and 0.4 is out of reach. Targets 0.3 and 0.2 are reachable
    and hold on the test split's queries within a 99% Wilson interval; calibration also cuts the held-out ECE of
    sigmoid(BM25 score), which is meaningless as a probability, to a few hundredths."""
    train, test = cranfield_bm25_pairs["train"], cranfield_bm25_pairs["test"]
    assert set(train[2]).isdisjoint(test[2])
    for target in (0.3, 0.2):
        result = fit_calibration(*train, method=method, target_precision=target)
        assert result.threshold is not None, target
        relevant, retrieved = held_out_precision(result.calibration, result.threshold, test[0], test[1])
        interval = wilson(relevant, retrieved, 0.99)
        assert interval.low <= target <= interval.high, (target, relevant, retrieved, interval)
    before = expected_calibration_error(expit(test[0]), test[1])
    after = expected_calibration_error(result.calibration(test[0]), test[1])
    assert after < 0.1 < before


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_reduces_brier_and_ece_of_a_miscalibrated_model_on_held_out_queries(method):
    """A model three times too confident (logits scaled by 3): the out-of-fold figures and those on queries never
    seen by the fit both improve."""
    logits, labels, groups = synthetic_pairs(400, seed=3, scale=3.0)
    fitted = np.isin(groups, [f"q{index}" for index in range(250)])
    result = fit_calibration(logits[fitted], labels[fitted], groups[fitted], method=method)
    assert result.after["ece"] < result.before["ece"] / 2
    assert result.after["brier"] < result.before["brier"]
    held_logits, held_labels = logits[~fitted], labels[~fitted]
    before = expected_calibration_error(expit(held_logits), held_labels)
    after = expected_calibration_error(result.calibration(held_logits), held_labels)
    assert after < before / 2
    assert result.before["ece"] == pytest.approx(expected_calibration_error(expit(logits[fitted]), labels[fitted]))


def test_folds_never_fit_and_evaluate_one_query(monkeypatch):
    """Each out-of-fold probability comes from a calibration fitted without any pair of its query."""
    import rerank_pipeline.calibration as module

    logits, labels, groups = synthetic_pairs(30, seed=1)
    fitted_on: list[set] = []
    real_fit = module._fit

    def recording_fit(method, fit_logits, fit_labels):
        calibration = real_fit(method, fit_logits, fit_labels)
        fitted_on.append({float(value) for value in fit_logits})
        return calibration

    monkeypatch.setattr(module, "_fit", recording_fit)
    fit_calibration(logits, labels, groups, folds=3)
    assert len(fitted_on) == 4  # three folds and the final fit on all pairs
    by_query = {query: {float(v) for v in logits[groups == query]} for query in set(groups)}
    for fold in fitted_on[:3]:
        inside = [query for query, values in by_query.items() if values <= fold]
        outside = [query for query, values in by_query.items() if not values & fold]
        assert len(inside) + len(outside) == len(by_query) and outside
    assert fitted_on[3] == {float(value) for value in logits}


# --- figures --------------------------------------------------------------------------------------------------


def test_ece_and_the_threshold_follow_their_definitions():
    probabilities = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55, 0.55, 0.55])
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 0])
    bins = reliability_bins(probabilities, labels)
    assert bins["count"] == [2, 0, 0, 0, 0, 4, 0, 0, 0, 2] and bins["observed"][9] == 0.5
    # |0.05 - 0| * 2 + |0.55 - 0.5| * 4 + |0.95 - 0.5| * 2, over 8 pairs
    assert expected_calibration_error(probabilities, labels) == pytest.approx((0.1 + 0.2 + 0.9) / 8)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0  # 1.0 falls in the last bin
    # >= 0.95: 1/2; >= 0.55: 3/6 (the tie is kept whole); >= 0.05: 3/8
    assert precision_threshold(probabilities, labels, 0.5) == (0.55, 0.5, 6)
    assert precision_threshold(probabilities, labels, 0.25) == (0.05, 3 / 8, 8)
    assert precision_threshold(probabilities, labels, 0.6) is None


def test_result_is_json_and_draws_a_reliability_diagram(tmp_path):
    logits, labels, groups = synthetic_pairs(60, seed=2, scale=3.0)
    result = fit_calibration(logits, labels, groups, method="isotonic", target_precision=0.6)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["calibration"] == result.calibration.to_dict()
    assert payload["pairs"] == len(logits) and payload["queries"] == 60 and payload["relevant"] == labels.sum()
    assert payload["above"] == result.above and payload["threshold"] == result.threshold
    assert sum(payload["reliability"]["after"]["count"]) == len(logits)
    assert set(payload["before"]) == set(payload["after"]) == {"brier", "ece"}
    chart = result.reliability_diagram(tmp_path / "out" / "reliability.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert [path.name for path in chart.parent.iterdir()] == ["reliability.png"]  # no temporary file left


def test_fit_refuses_what_it_cannot_calibrate():
    logits, labels, groups = synthetic_pairs(10, seed=0)
    with pytest.raises(ValueError, match="at least 5 queries, got 3"):
        fit_calibration(logits[:60], labels[:60], groups[:60])
    with pytest.raises(ValueError, match="labels are all 0"):
        fit_calibration(logits, np.zeros_like(labels), groups)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fit_calibration(logits, labels * 2, groups)
    with pytest.raises(ValueError, match="200 logits, 199 labels"):
        fit_calibration(logits, labels[:-1], groups)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibration(logits, labels, groups, method="beta")
    with pytest.raises(ValueError, match=r"target_precision must be in \(0, 1\]"):
        fit_calibration(logits, labels, groups, target_precision=1.5)
    with pytest.raises(ValueError, match="do not rise with relevance"):
        fit_calibration(-logits, labels, groups)
    with pytest.raises(ValueError, match="logits must be finite"):
        fit_calibration(np.where(np.arange(len(logits)) == 3, np.nan, logits), labels, groups)


# --- the serialized form --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "beta", "a": 1.0}, "method must be one of"),
        ([1, 2], "must be a mapping"),
        ({"method": "platt", "a": 1.0}, r"lacks \['b'\]"),
        ({"method": "platt", "a": 1.0, "b": 0.0, "x": [1.0]}, r"unexpected keys \['x'\]"),
        ({"method": "platt", "a": "1", "b": 0.0}, "a must be a number, got str"),
        ({"method": "platt", "a": True, "b": 0.0}, "a must be a number, got bool"),
        ({"method": "platt", "a": 1.0, "b": float("nan")}, "b must be finite"),
        ({"method": "platt", "a": -0.5, "b": 0.0}, "slope a must be > 0"),
        ({"method": "isotonic", "x": [], "y": []}, "x must be a non-empty list"),
        ({"method": "isotonic", "x": [0.0, 1.0], "y": [0.2]}, "same length, got 2 and 1"),
        ({"method": "isotonic", "x": [0.0, float("inf")], "y": [0.2, 0.3]}, r"x\[1\] must be finite"),
        ({"method": "isotonic", "x": [1.0, 0.0], "y": [0.2, 0.3]}, "x must be strictly increasing"),
        ({"method": "isotonic", "x": [0.0, 1.0], "y": [0.3, 0.2]}, "y must be non-decreasing"),
        ({"method": "isotonic", "x": [0.0, 1.0], "y": [0.3, 1.2]}, r"y must lie in \[0, 1\]"),
    ],
)
def test_from_dict_refuses_a_bad_calibration_in_one_line(data, message):
    with pytest.raises(ValueError, match=message) as error:
        Calibration.from_dict(data)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_round_trip_through_dict_and_file(tmp_path, method):
    logits, labels, groups = synthetic_pairs(40, seed=5)
    calibration = fit_calibration(logits, labels, groups, method=method).calibration
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    from_numpy = (Calibration("platt", a=np.float32(2.0), b=np.float64(0.5)) if method == "platt"
                  else Calibration("isotonic", x=np.array([0.0, 1.0]), y=np.array([0.5, 0.5], dtype=np.float32)))
    for plain in (calibration.to_dict(), from_numpy.to_dict()):  # plain floats, not NumPy scalars
        values = [value for key, value in plain.items() if key != "method"]
        assert all(type(value) is float for value in (values if method == "platt" else values[0] + values[1]))
    path = calibration.save(tmp_path / "calibration.json")
    assert Calibration.load(path) == calibration
    probabilities = Calibration.load(path)(np.array([-1e6, -1.0, 0.0, 2.0, 1e6]))
    assert ((0 <= probabilities) & (probabilities <= 1)).all() and (np.diff(probabilities) >= 0).all()
    if method == "isotonic":  # clipped at the ends to the first and last fitted values
        assert probabilities[0] == calibration.y[0] and probabilities[-1] == calibration.y[-1]
        assert calibration(np.array(calibration.x)) == pytest.approx(calibration.y)


def test_load_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.json: calibration file not found"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a calibration JSON file"):
        Calibration.load(tmp_path / "broken.json")
    (tmp_path / "wrong.json").write_text('{"method": "platt", "a": 0, "b": 1}')
    with pytest.raises(ValueError, match="wrong.json: calibration slope a must be > 0"):
        Calibration.load(tmp_path / "wrong.json")


# --- the ranker -----------------------------------------------------------------------------------------------

QUERY = "supersonic flutter of wing panels"
DOCUMENTS = [Document(id=str(index), content=text) for index, text in enumerate([
    "panel flutter at supersonic speed", "heat transfer in hypersonic flow", "wing boundary layer pressure",
    "laminar flow over a flat plate", "flutter of thin panels", "shock waves on a blunt body",
])]


@pytest.fixture(scope="module")
def raw_ranking(tiny_bert):
    """The uncalibrated ranking by raw logit (scale_score=False), best first."""
    ranked = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=None, scale_score=False).run(QUERY, DOCUMENTS)
    logits = [document.score for document in ranked["documents"]]
    assert len(set(logits)) == len(DOCUMENTS)  # distinct, so the order is well defined
    return ranked["documents"]


def test_the_ranker_returns_calibrated_probabilities_in_the_raw_order(tiny_bert, raw_ranking):
    logits = np.array([document.score for document in raw_ranking])
    platt = Calibration("platt", a=2.0, b=-float(np.median(logits)))
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=None, score_calibration=platt.to_dict())
    for scale_score in (None, False, True):  # scale_score does not change calibrated scores
        ranked = ranker.run(QUERY, list(reversed(DOCUMENTS)), scale_score=scale_score)["documents"]
        assert [document.id for document in ranked] == [document.id for document in raw_ranking]
        assert [document.score for document in ranked] == pytest.approx(platt(logits).tolist(), abs=1e-6)
    pairs = [(QUERY, document.content) for document in DOCUMENTS]  # predict stays uncalibrated
    assert ranker.predict(pairs).tolist() == CrossEncoderRanker(str(tiny_bert), device="cpu").predict(pairs).tolist()


def test_isotonic_ties_never_reorder_documents(tiny_bert, raw_ranking):
    """A flat step gives several documents one probability; they keep the raw logits' order, not the input's."""
    logits = sorted(document.score for document in raw_ranking)
    # everything up to the second-highest logit on one step (0.3), the top logit above it
    flat = Calibration("isotonic", x=(logits[0] - 1, logits[-2], logits[-1]), y=(0.3, 0.3, 0.9))
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=None, score_calibration=flat.to_dict())
    for documents in (DOCUMENTS, list(reversed(DOCUMENTS))):
        ranked = ranker.run(QUERY, documents)["documents"]
        assert [document.id for document in ranked] == [document.id for document in raw_ranking]
        assert [document.score for document in ranked] == pytest.approx([0.9] + [0.3] * (len(DOCUMENTS) - 1))


def test_score_threshold_is_a_probability(tiny_bert, raw_ranking):
    logits = np.array([document.score for document in raw_ranking])
    platt = Calibration("platt", a=3.0, b=-float(np.median(logits)) * 3.0)
    expected = [document.id for document, p in zip(raw_ranking, platt(logits)) if p >= 0.5]
    assert 0 < len(expected) < len(DOCUMENTS)
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=None, score_calibration=platt.to_dict(),
                                score_threshold=0.5)
    ranked = ranker.run(QUERY, DOCUMENTS)["documents"]
    assert [document.id for document in ranked] == expected
    assert all(document.score >= 0.5 for document in ranked)
    assert [d.id for d in ranker.run(QUERY, DOCUMENTS, score_threshold=0.0)["documents"]] == [
        d.id for d in raw_ranking]


def test_the_ranker_refuses_a_bad_calibration_at_init():
    with pytest.raises(ValueError, match="calibration method must be one of"):
        CrossEncoderRanker("some/model", score_calibration={"method": "temperature", "t": 2.0})
    with pytest.raises(ValueError, match="y must be non-decreasing"):
        CrossEncoderRanker("some/model", score_calibration={"method": "isotonic", "x": [0.0, 1.0], "y": [0.9, 0.1]})


def test_a_pipeline_yaml_carries_the_calibration(tiny_bert, raw_ranking):
    calibration = Calibration("isotonic", x=(-1.0, 0.0, 1.0), y=(0.1, 0.4, 0.8))
    pipeline = Pipeline()
    pipeline.add_component("ranker", CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=3,
                                                        score_calibration=calibration.to_dict()))
    text = pipeline.dumps()
    assert "isotonic" in text and "calibration:" in text
    loaded = load_pipeline(text)
    ranker = loaded.get_component("ranker")
    assert ranker.score_calibration == calibration.to_dict()
    assert loaded.to_dict() == pipeline.to_dict()
    ranked = loaded.run({"ranker": {"query": QUERY, "documents": DOCUMENTS}})["ranker"]["documents"]
    assert [document.id for document in ranked] == [document.id for document in raw_ranking[:3]]
    assert [document.score for document in ranked] == pytest.approx(
        calibration(np.array([document.score for document in raw_ranking[:3]])).tolist(), abs=1e-6)
    plain = CrossEncoderRanker(str(tiny_bert)).to_dict()["init_parameters"]
    assert plain["score_calibration"] is None
    with pytest.raises(Exception, match="y must be non-decreasing"):
        load_pipeline(text.replace("- 0.8", "- 0.05"))
