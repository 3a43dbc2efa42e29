"""The last BERT layer computed for the first token only gives the full model's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import CrossEncoder
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.ranker.first_token_head import (
    FirstTokenLastLayer,
    compute_last_layer_for_first_token_only,
)
from tiny_models import BACKEND_PAIRS, make_tiny_xlm_roberta_cross_encoder


@pytest.fixture(scope="module")
def tiny_xlm_roberta(tmp_path_factory) -> Path:
    return make_tiny_xlm_roberta_cross_encoder(tmp_path_factory.mktemp("tiny-xlm-roberta"))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_xlm_roberta"])
def test_first_token_last_layer_keeps_the_logits_of_padded_batches(model_fixture, attention, request):
    folder = request.getfixturevalue(model_fixture)
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attention).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    backbone = getattr(model, model.base_model_prefix)
    batch = tokenizer([q for q, _ in BACKEND_PAIRS], [d for _, d in BACKEND_PAIRS], padding=True, truncation=True,
                      max_length=64, return_tensors="pt")
    assert not batch["attention_mask"].all(), "the batch must hold padding to test the mask path"
    with torch.inference_mode():
        full = model(**batch).logits
        assert compute_last_layer_for_first_token_only(model)
        assert isinstance(backbone.encoder.layer[-1], FirstTokenLastLayer)
        assert backbone(**batch).last_hidden_state.shape[1] == 1
        cut = model(**batch).logits
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=0)
    assert compute_last_layer_for_first_token_only(model)  # applying it twice wraps once
    assert not isinstance(backbone.encoder.layer[-1].layer, FirstTokenLastLayer)


def test_other_architectures_are_left_alone(tiny_modernbert):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_modernbert).eval()
    before = [type(module) for module in model.modules()]
    assert not compute_last_layer_for_first_token_only(model)
    assert [type(module) for module in model.modules()] == before


def test_ranker_runs_the_bert_last_layer_for_the_first_token_only(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu")
    ranker.warm_up()
    assert isinstance(ranker.engine.model.bert.encoder.layer[-1], FirstTokenLastLayer)


def test_ranker_matches_sentence_transformers_on_xlm_roberta(tiny_xlm_roberta):
    expected = CrossEncoder(str(tiny_xlm_roberta), device="cpu").predict(BACKEND_PAIRS)
    ranker = CrossEncoderRanker(str(tiny_xlm_roberta), device="cpu", batch_size=3, max_batch_tokens=120)
    np.testing.assert_allclose(ranker.predict(BACKEND_PAIRS), expected, atol=1e-4, rtol=0)
    assert isinstance(ranker.engine.model.roberta.encoder.layer[-1], FirstTokenLastLayer)
