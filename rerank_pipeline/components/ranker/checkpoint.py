"""Turn a pretrained encoder (e.g. all-MiniLM-L6-v2) into a cross-encoder checkpoint with a fresh, seeded head."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as transformers_logging


def init_cross_encoder_from_encoder(
    encoder: str | Path, output_dir: str | Path, max_length: int = 512, seed: int = 0
) -> Path:
    """Save ``encoder`` with a new one-label classification head (initialized from ``seed``) to ``output_dir``.

    The tokenizer is saved with ``model_max_length=max_length``, which is the window sentence-transformers and
    :class:`~rerank_pipeline.components.CrossEncoderRanker` truncate pairs to. Returns ``output_dir``.
    """
    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the fresh head is reported as "newly initialized" on purpose
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(encoder), num_labels=1, use_safetensors=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder), model_max_length=max_length)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
