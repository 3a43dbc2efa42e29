"""Tiny cross-encoders built offline for tests: a few layers, a local WordPiece vocab."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

# (query, document) pairs of many lengths that every ranker backend is checked on against sentence-transformers.
BACKEND_QUERY = "supersonic boundary layer heat transfer"
BACKEND_PAIRS = [(BACKEND_QUERY, "boundary layer flow " * n) for n in (1, 3, 9, 27, 60)] + [
    ("shock wave", "a shock wave on a wing"),
    ("laminar plate", "the theory of laminar flow on a flat plate"),
    ("x", "pressure"),
]
# A wide initializer spreads the scores of random tiny models, so ordering and parity tests can tell pairs apart.
INITIALIZER_RANGE = 0.5
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the of a and in to is for on with by at from flow wing boundary layer pressure heat "
    "transfer shock wave mach number supersonic hypersonic subsonic laminar turbulent "
    "velocity temperature theory experimental results aircraft body plate surface"
).split()


def write_vocab(folder: Path) -> Path:
    """Write a WordPiece vocab: special tokens, words, characters and their ``##`` pieces."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = SPECIAL_TOKENS + WORDS + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    path = folder / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def make_tokenizer(folder: Path, model_max_length: int) -> BertTokenizerFast:
    folder.mkdir(parents=True, exist_ok=True)
    return BertTokenizerFast(vocab=str(write_vocab(folder)), model_max_length=model_max_length)


def make_tiny_bert_cross_encoder(folder: Path, max_length: int = 64, seed: int = 0) -> Path:
    """Save a 2-layer BERT sequence classifier with one label (a cross-encoder) to ``folder``."""
    tokenizer = make_tokenizer(folder, max_length)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=INITIALIZER_RANGE,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_bert_encoder(folder: Path, max_length: int = 64, seed: int = 0) -> Path:
    """Save a 2-layer BERT encoder without a classification head (like a bi-encoder's transformer) to ``folder``."""
    tokenizer = make_tokenizer(folder, max_length)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_modernbert_cross_encoder(folder: Path, max_length: int = 128, seed: int = 0) -> Path:
    """Save a 2-layer ModernBERT sequence classifier with one label to ``folder``."""
    tokenizer = make_tokenizer(folder, max_length)
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=8192, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        global_attn_every_n_layers=2, local_attention=16, initializer_range=INITIALIZER_RANGE,
    )
    ModernBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_xlm_roberta_cross_encoder(folder: Path, max_length: int = 64, seed: int = 0) -> Path:
    """Save a 2-layer XLM-RoBERTa sequence classifier with one label (the bge-reranker family's architecture)."""
    tokenizer = make_tokenizer(folder, max_length)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_length + 2, type_vocab_size=2, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        initializer_range=INITIALIZER_RANGE,
    )
    XLMRobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_minilm_cross_encoder(encoder: Path, folder: Path, seed: int = 0, head_scale: float = 20.0) -> Path:
    """Save the real MiniLM encoder with a seeded one-label head as a cross-encoder: real activation ranges (what int8
    calibration is tested on), scores spread over the sigmoid by scaling the random head by ``head_scale``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=1)
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(folder)
    return folder
