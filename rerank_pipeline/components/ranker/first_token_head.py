"""Skip the last encoder layer's work on the tokens a BERT classification head never reads.

A BERT-family sequence classifier (BERT/MiniLM, RoBERTa, XLM-RoBERTa e.g. bge-reranker) reads only the
first ([CLS] / <s>) token of the last layer (BERT's pooler and the others' classification heads take
``hidden[:, 0]``). That layer still needs every token's keys and values, but its query, attention output and
feed-forward only for the first token: 10 of the last layer's 12 hidden-size matrix products per token are
skipped (1/7 of a 6-layer model's linear work), and the logits are the same up to float rounding (parity-tested
against ``sentence_transformers.CrossEncoder.predict``). Other architectures are left as they are.
"""

from __future__ import annotations

import torch
import transformers
from torch.nn import functional

# Classifiers whose encoder layers are BERT layers (same submodule names) and whose head reads token 0 only.
SUPPORTED_CLASSES = (
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
)
SUPPORTED_ATTENTION = ("sdpa", "eager")


class FirstTokenLastLayer(torch.nn.Module):
    """A BERT-style layer that returns the hidden state of the first token only (``[batch, 1, hidden]``)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        attention = self.layer.attention
        heads, head_size = attention.self.num_attention_heads, attention.self.attention_head_size
        batch = hidden_states.shape[0]
        first = hidden_states[:, :1]
        query = attention.self.query(first).view(batch, 1, heads, head_size).transpose(1, 2)
        key = attention.self.key(hidden_states).view(batch, -1, heads, head_size).transpose(1, 2)
        value = attention.self.value(hidden_states).view(batch, -1, heads, head_size).transpose(1, 2)
        if attention_mask is not None:  # 4-D [batch, 1, queries, keys]: keep the first token's row
            attention_mask = attention_mask[:, :, :1, :]
        context = functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=head_size**-0.5
        )
        attention_output = attention.output(context.transpose(1, 2).reshape(batch, 1, heads * head_size), first)
        return self.layer.output(self.layer.intermediate(attention_output), attention_output)


def compute_last_layer_for_first_token_only(model: torch.nn.Module) -> bool:
    """Swap ``model``'s last encoder layer for a :class:`FirstTokenLastLayer` when it is safe; True if swapped.

    Safe means: one of ``SUPPORTED_CLASSES`` as an encoder (not a decoder, no cross-attention, absolute positions)
    on SDPA or eager attention, under transformers 5 (whose encoder passes a layer's output on as a tensor).
    """
    config = getattr(model, "config", None)
    if (
        type(model).__name__ not in SUPPORTED_CLASSES
        or int(transformers.__version__.split(".")[0]) < 5
        # transformers' own layers read the attention kind from this private config field (no public accessor)
        or getattr(config, "_attn_implementation", None) not in SUPPORTED_ATTENTION
        or getattr(config, "is_decoder", False)
        or getattr(config, "add_cross_attention", False)
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
    ):
        return False
    layers = getattr(model, model.base_model_prefix).encoder.layer
    if isinstance(layers[-1], FirstTokenLastLayer):
        return True
    layers[-1] = FirstTokenLastLayer(layers[-1])
    return True
