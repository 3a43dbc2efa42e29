"""CrossEncoderRanker: parity with sentence-transformers, ranking options, MaxP, serialization, bad input, threads."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from haystack import Document, Pipeline
from sentence_transformers import CrossEncoder

from rerank_pipeline.components import CrossEncoderRanker
from tiny_models import BACKEND_PAIRS
from rerank_pipeline.components.ranker.batching import plan_token_budget_batches
from rerank_pipeline.components.ranker.loading import ModelLoadError

QUERY = "supersonic boundary layer heat transfer"
TEXTS = [
    "heat transfer in a turbulent boundary layer at mach number 3",
    "the theory of shock wave and wing pressure",
    "laminar flow on a flat plate",
    "experimental results for hypersonic aircraft body surface temperature",
    "velocity of subsonic flow with a wave",
    "boundary layer",
    "pressure " * 40,
]
PAIRS = [(QUERY, text) for text in TEXTS] + [("shock wave", "a shock wave on a wing"), ("x", "the plate")]


def documents() -> list[Document]:
    return [Document(id=f"d{index}", content=text, meta={"title": f"title {index}"}) for index, text in enumerate(TEXTS)]


@pytest.fixture(scope="module", params=["tiny_bert", "tiny_modernbert"])
def model_path(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def ranker(model_path) -> CrossEncoderRanker:
    ranker = CrossEncoderRanker(str(model_path), top_k=None, device="cpu")
    ranker.warm_up()
    return ranker


# ---------------------------------------------------------------- parity with sentence-transformers


def test_predict_matches_sentence_transformers(model_path, ranker):
    expected = CrossEncoder(str(model_path), device="cpu").predict(PAIRS)
    scores = ranker.predict(PAIRS)
    assert scores.shape == expected.shape == (len(PAIRS),)
    assert np.ptp(expected) > 1e-2, "tiny model must spread scores, else parity proves nothing"
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)


def test_raw_logits_match_sentence_transformers_identity(model_path, ranker):
    expected = CrossEncoder(str(model_path), device="cpu", activation_fn=torch.nn.Identity()).predict(PAIRS)
    scores = CrossEncoderRanker(str(model_path), scale_score=False, device="cpu").predict(PAIRS)
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), ranker.predict(PAIRS), atol=1e-5)
    assert np.abs(scores - ranker.predict(PAIRS)).max() > 1e-2, "raw logits must differ from sigmoid scores"


def test_parity_with_truncation_and_tiny_batches(tiny_bert):
    long_pairs = [(QUERY, "boundary layer flow " * n) for n in (1, 10, 30, 60)] + PAIRS
    expected = CrossEncoder(str(tiny_bert), device="cpu").predict(long_pairs)
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", batch_size=3, max_batch_tokens=100)
    np.testing.assert_allclose(ranker.predict(long_pairs), expected, atol=1e-4, rtol=0)


# A query far longer than any window (tiny BERT 64 tokens, tiny ModernBERT 128), next to documents shorter than the
# window, longer than it, and longer than the whole query (which then is not cut).
LONG_QUERY = "wing flutter at supersonic speed, " * 150
LONG_QUERY_TEXTS = [*TEXTS, "boundary layer flow " * 100, "the plate " * 2000]


def test_predict_with_a_query_longer_than_the_window_matches_sentence_transformers(model_path, ranker):
    pairs = [(LONG_QUERY, text) for text in LONG_QUERY_TEXTS]
    expected = CrossEncoder(str(model_path), device="cpu").predict(pairs)
    assert np.ptp(expected) > 1e-2, "tiny model must spread scores, else parity proves nothing"
    np.testing.assert_allclose(ranker.predict(pairs), expected, atol=1e-4, rtol=0)


def test_a_long_query_is_cut_once_to_the_same_pair_ids(tiny_bert):
    """The cut keeps every truncated pair's ids, for document lengths around the odd token budget (61) and past it,
    and pairs a bounded text; a byte-level BPE tokenizer (RoBERTa / ModernBERT style) cuts the same way."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from rerank_pipeline.components.ranker.scoring import cut_long_queries

    byte_level = ByteLevelBPETokenizer()
    byte_level.train_from_iterator([LONG_QUERY, *TEXTS], vocab_size=300, min_frequency=1)
    tokenizers = [AutoTokenizer.from_pretrained(str(tiny_bert)),
                  PreTrainedTokenizerFast(tokenizer_object=byte_level._tokenizer, model_max_length=64)]
    documents = ["wing " * n for n in range(0, 160, 3)]  # 0 to 157 tokens for both tokenizers
    for tokenizer in tokenizers:
        pairs = [(LONG_QUERY, document) for document in documents]
        cut = cut_long_queries(tokenizer, pairs, 64)
        assert all(len(query) < len(LONG_QUERY) / 4 for query, _ in cut), "the query must be paired cut"
        for (query, document), (short, _) in zip(pairs, cut):
            full_ids = tokenizer(query, document, truncation="longest_first", max_length=64)["input_ids"]
            assert tokenizer(short, document, truncation="longest_first", max_length=64)["input_ids"] == full_ids
    short_query = [("wing flutter", document) for document in documents]
    assert cut_long_queries(tokenizers[0], short_query, 64) == short_query


def test_reads_activation_and_max_length_from_sentence_transformers_config(tiny_bert, tmp_path):
    saved = tmp_path / "saved-ce"
    CrossEncoder(str(tiny_bert), device="cpu", max_length=24, activation_fn=torch.nn.Identity()).save(str(saved))
    expected = CrossEncoder(str(saved), device="cpu").predict(PAIRS)
    ranker = CrossEncoderRanker(str(saved), device="cpu")
    np.testing.assert_allclose(ranker.predict(PAIRS), expected, atol=1e-4, rtol=0)
    assert ranker._scorer.max_length == 24
    assert (expected < 0).any() or (expected > 1).any(), "saved Identity activation must give raw logits"


def test_predict_empty_pairs_returns_empty_array(ranker):
    assert ranker.predict([]).shape == (0,)


def test_predict_and_run_warm_up_lazily(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu")
    assert ranker._scorer is None
    assert ranker.predict(PAIRS[:2]).shape == (2,)
    fresh = CrossEncoderRanker(str(tiny_bert), device="cpu", top_k=2)
    assert len(fresh.run(query=QUERY, documents=documents())["documents"]) == 2
    assert fresh._scorer is not None


# ---------------------------------------------------------------- run: ordering, top_k, threshold, options


def test_run_sorts_best_first_and_sets_scores(model_path, ranker):
    result = ranker.run(query=QUERY, documents=documents())["documents"]
    expected = CrossEncoder(str(model_path), device="cpu").predict([(QUERY, text) for text in TEXTS])
    assert [document.id for document in result] == [f"d{index}" for index in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([document.score for document in result], np.sort(expected)[::-1], atol=1e-4)


def test_run_does_not_mutate_input_documents(ranker):
    inputs = documents()
    ranker.run(query=QUERY, documents=inputs)
    assert all(document.score is None for document in inputs)


def test_top_k_init_and_run_override(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), top_k=3, device="cpu")
    full = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu").run(query=QUERY, documents=documents())
    assert [d.id for d in ranker.run(query=QUERY, documents=documents())["documents"]] == [
        d.id for d in full["documents"][:3]
    ]
    assert len(ranker.run(query=QUERY, documents=documents(), top_k=5)["documents"]) == 5
    with pytest.raises(ValueError, match="top_k"):
        ranker.run(query=QUERY, documents=documents(), top_k=0)


def test_score_threshold_init_and_run_override(ranker):
    scores = sorted(d.score for d in ranker.run(query=QUERY, documents=documents())["documents"])
    threshold = scores[len(scores) // 2]
    kept = ranker.run(query=QUERY, documents=documents(), score_threshold=threshold)["documents"]
    assert len(kept) == sum(score >= threshold for score in scores) < len(scores)
    assert all(document.score >= threshold for document in kept)
    thresholded = CrossEncoderRanker(ranker.model, top_k=None, score_threshold=threshold, device="cpu")
    assert [d.id for d in thresholded.run(query=QUERY, documents=documents())["documents"]] == [d.id for d in kept]


def test_meta_fields_and_prefixes_change_the_scored_text(tiny_bert):
    base = CrossEncoder(str(tiny_bert), device="cpu")
    ranker = CrossEncoderRanker(
        str(tiny_bert), top_k=None, device="cpu", meta_fields_to_embed=["title"], embedding_separator=" | ",
        query_prefix="query: ", document_prefix="passage: ",
    )
    result = {d.id: d.score for d in ranker.run(query=QUERY, documents=documents())["documents"]}
    expected = base.predict([("query: " + QUERY, f"passage: title {i} | {text}") for i, text in enumerate(TEXTS)])
    np.testing.assert_allclose([result[f"d{i}"] for i in range(len(TEXTS))], expected, atol=1e-4)
    plain = base.predict([(QUERY, text) for text in TEXTS])
    assert np.abs(plain - expected).max() > 1e-3


def test_scale_score_off_gives_logits(tiny_bert):
    scaled = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu").run(query=QUERY, documents=documents())
    raw = CrossEncoderRanker(str(tiny_bert), top_k=None, scale_score=False, device="cpu").run(
        query=QUERY, documents=documents()
    )
    raw_by_id = {d.id: d.score for d in raw["documents"]}
    for document in scaled["documents"]:
        assert document.score == pytest.approx(1 / (1 + np.exp(-raw_by_id[document.id])), abs=1e-5)
    assert [d.id for d in raw["documents"]] == [d.id for d in scaled["documents"]]


# ---------------------------------------------------------------- long documents (MaxP): tests/test_ranker_passages.py


# ---------------------------------------------------------------- serialization


def test_to_dict_from_dict_round_trip(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), top_k=4, meta_fields_to_embed=["title"], score_threshold=0.1,
                                long_document="max_passage", device="cpu")
    data = ranker.to_dict()
    assert data["type"] == "rerank_pipeline.components.ranker.CrossEncoderRanker"
    restored = CrossEncoderRanker.from_dict(data)
    assert restored.to_dict() == data


def test_pipeline_yaml_round_trip(tiny_bert):
    pipeline = Pipeline()
    pipeline.add_component("ranker", CrossEncoderRanker(str(tiny_bert), top_k=3, meta_fields_to_embed=["title"],
                                                        device="cpu"))
    restored = Pipeline.loads(pipeline.dumps())
    ranker = restored.get_component("ranker")
    assert isinstance(ranker, CrossEncoderRanker) and ranker.top_k == 3 and ranker.meta_fields_to_embed == ["title"]
    original = pipeline.run({"ranker": {"query": QUERY, "documents": documents()}})["ranker"]["documents"]
    again = restored.run({"ranker": {"query": QUERY, "documents": documents()}})["ranker"]["documents"]
    assert [d.id for d in again] == [d.id for d in original] and len(again) == 3
    assert [d.score for d in again] == pytest.approx([d.score for d in original], abs=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_raises_value_error(ranker, query):
    with pytest.raises(ValueError, match="query"):
        ranker.run(query=query, documents=documents())


def test_empty_document_list_gives_empty_result(ranker):
    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}


def test_documents_without_content_skipped_or_scored(tiny_bert):
    inputs = [Document(id="none", content=None), Document(id="blank", content="  "), *documents()[:2]]
    skipped = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu").run(query=QUERY, documents=inputs)
    assert sorted(d.id for d in skipped["documents"]) == ["d0", "d1"]
    scored = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu", empty_documents="score").run(
        query=QUERY, documents=inputs
    )
    assert sorted(d.id for d in scored["documents"]) == ["blank", "d0", "d1", "none"]
    assert all(isinstance(d.score, float) for d in scored["documents"])
    only_empty = CrossEncoderRanker(str(tiny_bert), device="cpu").run(query=QUERY, documents=inputs[:2])
    assert only_empty == {"documents": []}


def test_missing_local_folder_names_the_model(tmp_path):
    missing = tmp_path / "no-such-model"
    ranker = CrossEncoderRanker(str(missing))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        ranker.warm_up()


def test_unknown_hub_id_offline_names_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ranker = CrossEncoderRanker("rerank-pipeline-tests/does-not-exist-cross-encoder")
    with pytest.raises(ModelLoadError, match="rerank-pipeline-tests/does-not-exist-cross-encoder"):
        ranker.run(query=QUERY, documents=documents())


def test_pickle_only_weights_need_opt_in(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "pickle-only"
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(folder)
    assert not any(folder.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="pickle-only"):
        CrossEncoderRanker(str(folder), device="cpu").warm_up()
    scores = CrossEncoderRanker(str(folder), device="cpu", allow_unsafe_weights=True).predict(PAIRS)
    np.testing.assert_allclose(scores, CrossEncoder(str(tiny_bert), device="cpu").predict(PAIRS), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top_k must be > 0, got 0"),
        ({"batch_size": 0}, "batch_size must be > 0, got 0"),
        ({"long_document": "chunk"}, "long_document must be one of .*'max_passage'.*, got 'chunk'"),
        ({"backend": "tf"}, "backend must be one of .*'torch'.*, got 'tf'"),
        ({"precision": "int4"}, "precision must be one of .*'fp32'.*, got 'int4'"),
        ({"quantize": True, "precision": "bf16"}, "quantize=True .* cannot be combined with precision bf16"),
        ({"empty_documents": "drop"}, "empty_documents must be one of .*'skip'.*, got 'drop'"),
        ({"max_length": -1}, "max_length must be > 0, got -1"),
        ({"model": "  "}, "model must be a Hub id or a local folder, got an empty string"),
    ],
)
def test_invalid_init_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):  # the message names the argument and the value at fault
        CrossEncoderRanker(**({"model": "any-model"} | kwargs))


def test_torch_int8_quantization_stays_close(tiny_bert):
    expected = CrossEncoder(str(tiny_bert), device="cpu").predict(PAIRS)
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", quantize=True)
    scores = ranker.predict(PAIRS)
    linears = [module for module in ranker.engine.model.modules() if type(module).__name__ == "Linear"]
    assert linears and all("quantized.dynamic" in type(module).__module__ for module in linears)
    # The random tiny model is far more sensitive than real weights (~1e-3 on MiniLM); check it stays close.
    assert np.abs(scores - expected).max() < 0.25
    assert np.corrcoef(scores, expected)[0, 1] > 0.8


def test_cuda_request_without_cuda_falls_back_to_cpu(tiny_bert):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ranker = CrossEncoderRanker(str(tiny_bert), device="cuda", precision="auto")
    np.testing.assert_allclose(ranker.predict(PAIRS), CrossEncoder(str(tiny_bert), device="cpu").predict(PAIRS),
                               atol=1e-4)
    assert ranker._torch_device.type == "cpu"


# ---------------------------------------------------------------- threads and batching


def test_concurrent_runs_equal_serial_runs(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), top_k=None, device="cpu", batch_size=2)
    queries = [QUERY, "shock wave", "laminar plate", "mach number", "heat", "wing pressure"] * 3
    serial = [[(d.id, d.score) for d in ranker.run(query=q, documents=documents())["documents"]] for q in queries]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda q: ranker.run(query=q, documents=documents())["documents"], queries))
    for expected, got in zip(serial, parallel):
        assert [d.id for d in got] == [doc_id for doc_id, _ in expected]
        assert [d.score for d in got] == pytest.approx([score for _, score in expected], abs=1e-6)


def test_concurrent_first_calls_warm_up_once(tiny_bert, monkeypatch):
    import rerank_pipeline.components.ranker as ranker_module

    loads = []
    load = ranker_module.load_sentence_transformers_cross_encoder

    def slow_counted_load(*args, **kwargs):
        loads.append(args[0])
        time.sleep(0.3)  # every thread arrives while the first is still loading
        return load(*args, **kwargs)

    monkeypatch.setattr(ranker_module, "load_sentence_transformers_cross_encoder", slow_counted_load)
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ranker.predict(PAIRS), range(4)))
    assert loads == [str(tiny_bert)]  # four first calls, one load
    for scores in results[1:]:
        np.testing.assert_allclose(scores, results[0], atol=1e-6)
    ranker.warm_up()
    ranker.predict(PAIRS)
    assert len(loads) == 1  # and none after


def test_token_budget_batches_sorted_and_bounded():
    lengths = [5, 50, 7, 49, 20, 3, 50]
    batches = plan_token_budget_batches(lengths, max_tokens=100, max_batch_size=3)
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert max(lengths[i] for i in batch) * len(batch) <= 100
    flat = [lengths[index] for batch in batches for index in batch]
    assert flat == sorted(lengths, reverse=True)
    assert plan_token_budget_batches([500], max_tokens=100, max_batch_size=3) == [[0]]


# ---------------------------------------------------------------- real weights on real text


def test_real_minilm_cross_encoder_on_cranfield(minilm_path, cranfield_dir, tmp_path):
    from rerank_pipeline.components.ranker.checkpoint import init_cross_encoder_from_encoder

    model_dir = init_cross_encoder_from_encoder(minilm_path, tmp_path / "minilm-ce", max_length=512, seed=0)
    with open(cranfield_dir / "corpus.jsonl", encoding="utf-8") as corpus:
        texts = [json.loads(line) for _, line in zip(range(12), corpus)]
    with open(cranfield_dir / "queries.jsonl", encoding="utf-8") as queries:
        query = json.loads(queries.readline())["text"]
    pairs = [(query, f"{doc['title']}\n{doc['text']}") for doc in texts]
    expected = CrossEncoder(str(model_dir), device="cpu").predict(pairs)
    ranker = CrossEncoderRanker(str(model_dir), top_k=5, device="cpu", meta_fields_to_embed=["title"])
    np.testing.assert_allclose(ranker.predict(pairs), expected, atol=1e-4, rtol=0)
    docs = [Document(id=doc["_id"], content=doc["text"], meta={"title": doc["title"]}) for doc in texts]
    ranked = ranker.run(query=query, documents=docs)["documents"]
    assert [d.id for d in ranked] == [texts[i]["_id"] for i in np.argsort(-expected, kind="stable")[:5]]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_fast_padding_equals_the_tokenizers_own(tiny_bert, padding_side):
    from transformers import AutoTokenizer

    from rerank_pipeline.components.ranker.scoring import PairScorer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.padding_side = padding_side
    scorer = PairScorer(tokenizer, engine=None, max_length=64)
    encoded = scorer.tokenize(BACKEND_PAIRS)
    indices = [4, 0, 6, 2]
    expected = tokenizer.pad({name: [values[i] for i in indices] for name, values in encoded.items()},
                             padding=True, return_tensors="pt")
    padded = scorer.pad(encoded, indices)
    assert set(padded) == set(expected)
    for name in expected:
        assert torch.equal(padded[name], expected[name]), name
