"""The last BERT layer computed for the first token only gives the full model's logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components._first_token_head import (
    FirstTokenLastLayer,
    compute_last_layer_for_first_token_only,
)
from tiny_models import BACKEND_PAIRS


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_token_last_layer_keeps_the_logits_of_padded_batches(tiny_bert, attention):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, attn_implementation=attention).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tokenizer([q for q, _ in BACKEND_PAIRS], [d for _, d in BACKEND_PAIRS], padding=True, truncation=True,
                      max_length=64, return_tensors="pt")
    assert not batch["attention_mask"].all(), "the batch must hold padding to test the mask path"
    with torch.inference_mode():
        full = model(**batch).logits
        assert compute_last_layer_for_first_token_only(model)
        assert isinstance(model.bert.encoder.layer[-1], FirstTokenLastLayer)
        assert model.bert(**batch).last_hidden_state.shape[1] == 1
        cut = model(**batch).logits
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=0)
    assert compute_last_layer_for_first_token_only(model)  # applying it twice wraps once
    assert not isinstance(model.bert.encoder.layer[-1].layer, FirstTokenLastLayer)


def test_other_architectures_are_left_alone(tiny_modernbert):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_modernbert).eval()
    before = [type(module) for module in model.modules()]
    assert not compute_last_layer_for_first_token_only(model)
    assert [type(module) for module in model.modules()] == before


def test_ranker_runs_the_bert_last_layer_for_the_first_token_only(tiny_bert):
    ranker = CrossEncoderRanker(str(tiny_bert), device="cpu")
    ranker.warm_up()
    assert isinstance(ranker._scorer.logits_fn.model.bert.encoder.layer[-1], FirstTokenLastLayer)
