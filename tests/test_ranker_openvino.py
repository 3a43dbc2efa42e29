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
    far from any trained model's; on a CPU without VNNI (AVX2 only: an AMD EPYC here) its int8 scores landed 0.36
    away from fp32, where a VNNI CPU had kept them within 0.1."""
    return make_minilm_cross_encoder(minilm_path, tmp_path_factory.mktemp("minilm-ce"))


@pytest.fixture(scope="module")
def minilm_expected(minilm_cross_encoder):
    return CrossEncoder(str(minilm_cross_encoder), device="cpu").predict(PAIRS)


def test_openvino_int8_calibrates_on_the_first_pairs_it_scores(minilm_cross_encoder, minilm_expected):
    expected = minilm_expected
    ranker = CrossEncoderRanker(str(minilm_cross_encoder), backend="openvino", quantize=True)
    ranker.warm_up()
    assert ranker.engine.needs_calibration
    scores = ranker.predict(PAIRS)
    assert not ranker.engine.needs_calibration
    assert scores.shape == expected.shape
    assert np.abs(scores - expected).max() < 0.1
    assert np.corrcoef(scores, expected)[0, 1] > 0.9
    np.testing.assert_array_equal(ranker.predict(PAIRS), scores)  # calibrated once, not again per call


def test_openvino_int8_with_calibration_pairs_is_ready_after_warm_up(minilm_cross_encoder, minilm_expected):
    expected = minilm_expected
    ranker = CrossEncoderRanker(str(minilm_cross_encoder), backend="openvino", quantize=True,
                                calibration_pairs=CALIBRATION)
    ranker.warm_up()
    assert not ranker.engine.needs_calibration
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


def _engine(ranker: CrossEncoderRanker):
    ranker.warm_up()
    return ranker.engine


def _refuse_conversion(monkeypatch):
    import openvino

    def refuse(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(openvino, "convert_model", refuse)


def test_openvino_conversion_and_calibration_are_cached_on_disk(tiny_bert, expected, tmp_path, monkeypatch):
    first = CrossEncoderRanker(str(tiny_bert), backend="openvino", quantize=True)
    scores = first.predict(PAIRS)  # converts, calibrates on these pairs, caches both
    fp32 = CrossEncoderRanker(str(tiny_bert), backend="openvino").predict(PAIRS)
    entries = sorted(path.parent.name for path in (tmp_path / "model-cache" / "openvino").rglob("manifest.json"))
    assert entries == ["fp32", "int8-first-scored"]

    _refuse_conversion(monkeypatch)
    again = CrossEncoderRanker(str(tiny_bert), backend="openvino", quantize=True)
    assert not _engine(again).needs_calibration  # ready at warm-up: read, not recalibrated
    np.testing.assert_array_equal(again.predict(PAIRS), scores)
    np.testing.assert_allclose(CrossEncoderRanker(str(tiny_bert), backend="openvino").predict(PAIRS), fp32, atol=0)
    np.testing.assert_allclose(fp32, expected, atol=1e-4, rtol=0)  # saved without fp16 compression

    other = CrossEncoderRanker(str(tiny_bert), backend="openvino", quantize=True, calibration_pairs=CALIBRATION)
    assert not _engine(other).needs_calibration  # other calibration data: its own entry, calibrated at warm-up
    assert len(list((tmp_path / "model-cache" / "openvino").rglob("manifest.json"))) == 3


def test_openvino_cache_is_keyed_by_the_model_files(tiny_bert, tmp_path):
    import os
    import shutil

    model = shutil.copytree(tiny_bert, tmp_path / "model")
    CrossEncoderRanker(str(model), backend="openvino", quantize=True).predict(PAIRS)
    assert not _engine(CrossEncoderRanker(str(model), backend="openvino", quantize=True)).needs_calibration
    weights = next(model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "retrained"
    assert _engine(CrossEncoderRanker(str(model), backend="openvino", quantize=True)).needs_calibration


@pytest.mark.parametrize("damage", ["truncate", "delete manifest"])
def test_openvino_corrupt_cache_entry_is_rebuilt(tiny_bert, tmp_path, damage, caplog):
    scores = CrossEncoderRanker(str(tiny_bert), backend="openvino", quantize=True).predict(PAIRS)
    entry = next((tmp_path / "model-cache" / "openvino").rglob("int8-first-scored"))
    if damage == "truncate":
        weights = entry / "model.bin"
        weights.write_bytes(weights.read_bytes()[:-64])
    else:
        (entry / "manifest.json").unlink()
    rebuilt = CrossEncoderRanker(str(tiny_bert), backend="openvino", quantize=True)
    assert _engine(rebuilt).needs_calibration  # not trusted: calibrated again on its first pairs
    assert "Rebuilding the corrupt OpenVINO cache entry" in caplog.text
    np.testing.assert_array_equal(rebuilt.predict(PAIRS), scores)
    assert (entry / "manifest.json").is_file()
