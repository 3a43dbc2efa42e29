"""Load a sequence-classification cross-encoder the way sentence-transformers does, and inspect its checkpoint.

Loading goes through ``sentence_transformers.CrossEncoder`` so the checkpoint's own activation function, max length
and prompts are read exactly as ``CrossEncoder(model).predict`` reads them. Every model, tokenizer and config load
of the ranker goes through :func:`load_sentence_transformers_cross_encoder`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

UNBOUNDED_TOKENIZER_LENGTH = 1_000_000


class ModelLoadError(RuntimeError):
    """A cross-encoder could not be loaded; the message names the model and the cause."""


def looks_like_local_path(model: str) -> bool:
    """True for names that can only be a folder (absolute, relative, home or Windows paths, several slashes)."""
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1


def load_sentence_transformers_cross_encoder(
    model: str,
    device: str,
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    max_length: int | None = None,
    allow_untrained_head: bool = False,
    token: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    config_kwargs: dict[str, Any] | None = None,
    revision: str | None = None,
) -> Any:
    """Load ``model`` (Hub id or local folder) as a ``sentence_transformers.CrossEncoder``.

    ``token`` authenticates Hub downloads; ``model_kwargs``, ``tokenizer_kwargs`` and ``config_kwargs`` go to
    transformers' ``from_pretrained`` of the model, tokenizer and config (``model_kwargs`` may override the
    safetensors-only default); ``revision`` pins a Hub model to a commit, branch or tag (all three loaders).

    Raises ``FileNotFoundError`` for a missing local folder and :class:`ModelLoadError` (naming the model) for
    anything else that stops loading: an unknown or offline Hub id, pickle-only weights without
    ``allow_unsafe_weights``, custom code without ``trust_remote_code``, and a checkpoint without a trained
    scoring head (see :func:`untrained_head_reason`) unless ``allow_untrained_head``.
    """
    from sentence_transformers import CrossEncoder

    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty Hub id or folder path, got {model!r}")
    local = Path(model).expanduser()
    if not local.exists() and looks_like_local_path(model):
        raise FileNotFoundError(f"Cross-encoder model folder '{model}' does not exist")
    model_kwargs = {**({} if allow_unsafe_weights else {"use_safetensors": True}), **(model_kwargs or {})}
    try:
        cross_encoder = CrossEncoder(
            str(local) if local.exists() else model,
            device=device,
            trust_remote_code=trust_remote_code,
            max_length=max_length,
            token=token,
            model_kwargs=model_kwargs,
            processor_kwargs=dict(tokenizer_kwargs) if tokenizer_kwargs else None,
            config_kwargs=dict(config_kwargs) if config_kwargs else None,
            revision=revision,
        )
    except Exception as error:  # transformers raises OSError, ValueError, HFValidationError, ... for the same cause
        hints = []
        if not allow_unsafe_weights and "safetensors" in str(error).lower():
            hints.append("it may ship only pickle weights: pass allow_unsafe_weights=True if you trust it")
        if not trust_remote_code and "trust_remote_code" in str(error):
            hints.append("it needs custom code: pass trust_remote_code=True if you trust it")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ModelLoadError(
            f"Could not load cross-encoder model '{model}'{hint}: {type(error).__name__}: {error}"
        ) from error
    reason = None if allow_untrained_head else untrained_head_reason(getattr(cross_encoder, "model", None), revision)
    if reason:
        raise ModelLoadError(
            f"'{model}' has no trained scoring head ({reason}): it would score with random weights. Fine-tune it "
            f"first (rerank-pipeline train --base-model {model} ...), or pass allow_untrained_head=True "
            "(--allow-untrained-head) to use it anyway"
        )
    return cross_encoder


def untrained_head_reason(hf_model: Any, revision: str | None = None) -> str | None:
    """Why ``hf_model`` (a loaded Hugging Face sequence classifier) scores with an untrained head, or None.

    A head is untrained when the checkpoint's config names no ``*ForSequenceClassification`` architecture (e.g. a
    bi-encoder such as all-MiniLM-L6-v2, saved as ``BertModel``), or when its safetensors weights lack a head
    parameter (what transformers' load report lists as MISSING, e.g. ``classifier.weight``). Checkpoints whose
    weights are not safetensors files are judged by the config alone. ``revision``: the Hub revision loaded.
    """
    config = getattr(hf_model, "config", None)
    if config is None:
        return None
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        return f"its config.json names the architecture {', '.join(architectures)}, not a sequence classifier"
    name_or_path = getattr(config, "name_or_path", "") or getattr(hf_model, "name_or_path", "")
    checkpoint_keys = _safetensors_keys(name_or_path, revision)
    if checkpoint_keys is None:
        return None
    prefix = f"{getattr(hf_model, 'base_model_prefix', '')}."
    head = sorted(name for name in hf_model.state_dict() if not name.startswith(prefix))
    missing = [name for name in head if name not in checkpoint_keys]
    if missing:
        return f"its weights lack {', '.join(missing[:4])}"
    return None


def _safetensors_keys(name_or_path: str, revision: str | None = None) -> set[str] | None:
    """Tensor names in the safetensors weights of a local folder or cached Hub model, or None when not found."""
    import json

    from safetensors import safe_open
    from huggingface_hub import try_to_load_from_cache

    def resolve(filename: str) -> str | None:
        local = Path(name_or_path) / filename
        if local.is_file():
            return str(local)
        try:
            cached = try_to_load_from_cache(name_or_path, filename, revision=revision)  # the loaded model's files are in the cache
        except Exception:  # not a Hub id, ...
            return None
        return cached if isinstance(cached, str) else None

    if not name_or_path:
        return None
    index = resolve("model.safetensors.index.json")
    if index:
        with open(index, encoding="utf-8") as handle:
            return set(json.load(handle).get("weight_map", {}))
    single = resolve("model.safetensors")
    if not single:
        return None
    with safe_open(single, framework="pt") as weights:
        return set(weights.keys())


def effective_max_length(tokenizer: Any, config: Any) -> int:
    """The number of tokens a pair is truncated to: the tokenizer's limit, else the model's position limit."""
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < UNBOUNDED_TOKENIZER_LENGTH:
        return int(limit)
    positions = position_limit(config)
    if positions is None:
        raise ValueError("Neither the tokenizer nor the model config define a maximum length; pass max_length")
    return positions


def position_limit(config: Any) -> int | None:
    """The longest input the model's position embeddings take (RoBERTa's padding offset removed), or None."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    offset = (config.pad_token_id or 0) + 1 if "roberta" in str(getattr(config, "model_type", "")) else 0
    return int(positions) - offset


def model_input_names(model: torch.nn.Module) -> set[str] | None:
    """Names the model's ``forward`` accepts, or ``None`` when it takes ``**kwargs`` (pass everything)."""
    parameters = inspect.signature(model.forward).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return None
    return set(parameters)
