"""The opt-in OpenVINO backend (fp32, and static int8 calibrated by NNCF) of CrossEncoderRanker."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from haystack import Document, Pipeline
from sentence_transformers import CrossEncoder

from rerank_pipeline.components import CrossEncoderRanker
from tiny_models import BACKEND_PAIRS as PAIRS, BACKEND_QUERY as QUERY, make_minilm_cross_encoder

pytest.importorskip("openvino", reason="pip install 'rerank-pipeline[openvino]' for the OpenVINO backend")
pytest.importorskip("nncf", reason="pip install 'rerank-pipeline[openvino]' for int8 calibration")

CALIBRATION = [  # varied text like the scored pairs: static int8 scales are only as good as their calibration data
    ("heat transfer", "heat transfer in a laminar boundary layer flow " * n) for n in (1, 4, 12, 30)
] + [
    ("shock", "a shock wave on a flat plate"),
    ("y", "wing"),
    ("supersonic flow over a wing", "experimental results for the pressure on a swept wing at mach number two"),
    ("turbulent boundary layer", "the velocity profile of a turbulent boundary layer on a heated flat plate"),
    ("hypersonic heating", "surface temperature of a blunt body in hypersonic flow, theory and experiment"),
    ("subsonic aircraft", "a theory of the lift of an aircraft body at subsonic speeds"),
]


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_modernbert"])
def test_openvino_fp32_matches_sentence_transformers(model_fixture, request):
    model_path = str(request.getfixturevalue(model_fixture))
    expected = CrossEncoder(model_path, device="cpu").predict(PAIRS)
    ranker = CrossEncoderRanker(model_path, backend="openvino", batch_size=3, max_batch_tokens=120)
    np.testing.assert_allclose(ranker.predict(PAIRS), expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def minilm_cross_encoder(minilm_path, tmp_path_factory):
    """Int8 is checked on real weights: static activation scales of a tiny random model (initializer range 0.5) are
    far from any trained model's, and NNCF 3.4 / OpenVINO 2026.4 quantize it 0.36 away from fp32."""
    return make_minilm_cross_encoder(minilm_path, tmp_path_factory.mktemp("minilm-ce"))


@pytest.fixture(scope="module")
def minilm_expected(minilm_cross_encoder):
    return CrossEncoder(str(minilm_cross_encoder), device="cpu").predict(PAIRS)


def test_openvino_int8_calibrates_on_the_first_pairs_it_scores(minilm_cross_encoder, minilm_expected):
    expected = minilm_expected
    ranker = CrossEncoderRanker(str(minilm_cross_encoder), backend="openvino", quantize=True)
    ranker.warm_up()
    assert ranker._scorer.logits_fn.needs_calibration
    scores = ranker.predict(PAIRS)
    assert not ranker._scorer.logits_fn.needs_calibration
    assert scores.shape == expected.shape
    assert np.abs(scores - expected).max() < 0.1
    assert np.corrcoef(scores, expected)[0, 1] > 0.9
    np.testing.assert_array_equal(ranker.predict(PAIRS), scores)  # calibrated once, not again per call


def test_openvino_int8_with_calibration_pairs_is_ready_after_warm_up(minilm_cross_encoder, minilm_expected):
    expected = minilm_expected
    ranker = CrossEncoderRanker(str(minilm_cross_encoder), backend="openvino", quantize=True,
                                calibration_pairs=CALIBRATION)
    ranker.warm_up()
    assert not ranker._scorer.logits_fn.needs_calibration
    scores = ranker.predict(PAIRS)
    assert np.corrcoef(scores, expected)[0, 1] > 0.9
    results: dict[int, np.ndarray] = {}

    def score(worker: int) -> None:
        results[worker] = ranker.predict(PAIRS)

    threads = [threading.Thread(target=score, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results.values():
        np.testing.assert_array_equal(result, scores)


def test_openvino_ranker_round_trips_through_yaml(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), backend="openvino", quantize=True, calibration_pairs=CALIBRATION,
                                top_k=2)
    pipeline = Pipeline()
    pipeline.add_component("ranker", ranker)
    loaded = Pipeline.loads(pipeline.dumps()).get_component("ranker")
    assert loaded.to_dict() == ranker.to_dict()
    assert loaded.calibration_pairs == CALIBRATION
    documents = [Document(content=text) for _, text in PAIRS]
    ranked = loaded.run(query=QUERY, documents=documents)["documents"]
    assert len(ranked) == 2 and ranked[0].score >= ranked[1].score


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "openvino", "device": "cuda"}, "runs on the CPU"),
        ({"calibration_pairs": CALIBRATION}, "only used by backend='openvino' with quantize=True"),
        ({"backend": "openvino", "quantize": True, "calibration_pairs": []}, "non-empty list of"),
        ({"backend": "openvino", "quantize": True, "calibration_pairs": [("query only",)]}, "non-empty list of"),
    ],
)
def test_openvino_bad_options_are_refused(tiny_bert, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CrossEncoderRanker(str(tiny_bert), **kwargs)
