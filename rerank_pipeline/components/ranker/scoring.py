"""Load a sequence-classification cross-encoder the way sentence-transformers does, and score text pairs fast.

Loading goes through ``sentence_transformers.CrossEncoder`` so the checkpoint's own activation function, max length
and prompts are read exactly as ``CrossEncoder(model).predict`` reads them. Scoring tokenizes every pair once,
sorts by real token count and cuts batches by a token budget, so almost no padding is computed; a query longer than
the window is cut to what truncation keeps before it is paired, so its length does not multiply the work.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rerank_pipeline.components.ranker.batching import plan_token_budget_batches
from rerank_pipeline.options import PRECISIONS

logger = logging.getLogger(__name__)

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
    name_or_path = getattr(config, "_name_or_path", "") or getattr(hf_model, "name_or_path", "")
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
    from transformers.utils import cached_file

    def resolve(filename: str) -> str | None:
        local = Path(name_or_path) / filename
        if local.is_file():
            return str(local)
        try:
            return cached_file(name_or_path, filename, revision=revision, _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except Exception:  # not a Hub id, offline without a copy, ...
            return None

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
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        raise ValueError("Neither the tokenizer nor the model config define a maximum length; pass max_length")
    offset = (config.pad_token_id or 0) + 1 if "roberta" in str(getattr(config, "model_type", "")) else 0
    return int(positions) - offset


def cut_long_queries(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int) -> list[tuple[str, str]]:
    """``pairs`` with every query too long for the window cut short, tokenizing to the same truncated pair ids.

    ``longest_first`` truncation keeps at most ``max_length`` minus the special tokens of a query, and how many
    depends only on the document's token count and on which side is longer. A query past that is cut at a word
    boundary after ``max(budget + 1, longest document + 1)`` tokens (its documents' counts are read only then),
    so each pair tokenizes a few hundred query tokens instead of the whole text once per document. A cut whose
    first tokens differ from the query's is not used. Slow (Python) tokenizers get ``pairs`` back unchanged.
    """
    pairs = list(pairs)
    if not pairs or not getattr(tokenizer, "is_fast", False):
        return pairs
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    cuts = {query: _cut_after_tokens(tokenizer, query, budget + 1) for query in dict.fromkeys(q for q, _ in pairs)}
    cuts = {query: cut for query, cut in cuts.items() if cut is not None}
    if not cuts:
        return pairs
    paired = [index for index, (query, _) in enumerate(pairs) if query in cuts]
    documents = [pairs[index][1] for index in paired]
    lengths = [len(ids) for ids in tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]]
    longest: dict[str, int] = {}
    for index, length in zip(paired, lengths):
        longest[pairs[index][0]] = max(longest.get(pairs[index][0], 0), length)
    for query, length in longest.items():
        if length > budget:  # a document longer than the window: the cut query must stay the longer side
            cuts[query] = _cut_after_tokens(tokenizer, query, length + 1) or query
    return [(cuts.get(query, query), document) for query, document in pairs]


def _cut_after_tokens(tokenizer: Any, text: str, keep: int) -> str | None:
    """``text`` cut at the first word boundary after its first ``keep`` tokens, or None when it has no more.

    Only a growing prefix of ``text`` is tokenized (tokens before the prefix's last word are final, since a fast
    tokenizer splits words before tokenizing them); the cut is checked to tokenize to the same first ``keep`` ids.
    """
    chars = 8 * keep + 64  # prose runs about 4 characters a token; grown 4x while too short
    while True:
        head = text[:chars]
        complete = chars >= len(text)
        encoded = tokenizer(head, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        words = encoded.word_ids()
        final = len(words)
        if not complete and words:
            final = words.index(words[-1])  # the last word may go on past the prefix
        last = final if complete else final + 1  # a prefix's last word starts at a boundary too
        boundary = next((index for index in range(max(keep, 1), last) if words[index] != words[index - 1]), None)
        if boundary is not None:
            cut = text[: encoded["offset_mapping"][boundary][0]]
            ids = tokenizer(cut, add_special_tokens=False, verbose=False)["input_ids"]
            return cut if len(ids) >= keep and ids[:keep] == encoded["input_ids"][:keep] else None
        if complete:
            return None
        chars *= 4


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: ``None`` means plain fp32 (always the case on CPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def model_input_names(model: torch.nn.Module) -> set[str] | None:
    """Names the model's ``forward`` accepts, or ``None`` when it takes ``**kwargs`` (pass everything)."""
    parameters = inspect.signature(model.forward).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return None
    return set(parameters)


def sample_features(tokenizer: Any, input_names: set[str] | None) -> dict[str, torch.Tensor]:
    """A one-pair feature batch holding the inputs the model takes, to trace it for export or conversion."""
    sample = dict(tokenizer(["a query"], ["a document"], padding=True, return_tensors="pt"))
    return {name: tensor for name, tensor in sample.items() if input_names is None or name in input_names}


def quantize_linear_layers_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Int8 dynamic quantization of every ``nn.Linear`` (weights int8, activations quantized per batch; CPU)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class TorchLogits:
    """Forward a padded batch through a Hugging Face sequence classifier; returns fp32 logits ``[batch, labels]``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, autocast_dtype: torch.dtype | None) -> None:
        self.model = model
        self.device = device
        self.autocast_dtype = autocast_dtype

    @torch.inference_mode()
    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        features = {name: tensor.to(self.device, non_blocking=True) for name, tensor in features.items()}
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with autocast:
            logits = self.model(**features, return_dict=True).logits
        return logits.float().cpu()


class PairScorer:
    """Score (query, document) text pairs with length-sorted, token-budget batches.

    ``logits_fn`` maps a padded feature batch (torch tensors) to fp32 logits; ``input_names`` restricts the
    tokenizer outputs passed on (``None`` passes all). Tokenizer calls are serialized with a lock, because a fast
    tokenizer mutates its truncation/padding state on every call and is not safe to share between threads.
    """

    def __init__(
        self,
        tokenizer: Any,
        logits_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        max_length: int,
        input_names: set[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.logits_fn = logits_fn
        self.max_length = max_length
        self.input_names = input_names
        self._tokenizer_lock = threading.Lock()

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> dict[str, list[list[int]]]:
        """Tokenize pairs without padding, truncated ``longest_first`` to ``max_length`` like sentence-transformers.

        A query longer than the window is tokenized once and cut first (:func:`cut_long_queries`): same ids.
        """
        with self._tokenizer_lock:
            pairs = cut_long_queries(self.tokenizer, pairs, self.max_length)
            queries = [pair[0] for pair in pairs]
            documents = [pair[1] for pair in pairs]
            encoded = self.tokenizer(
                queries, documents, truncation="longest_first", max_length=self.max_length, padding=False
            )
        return self.select_inputs(encoded)

    def select_inputs(self, encoded: Any) -> dict[str, list[list[int]]]:
        """The tokenizer outputs the model takes (all of them when ``input_names`` is ``None``)."""
        return {name: encoded[name] for name in encoded.keys() if self.input_names is None or name in self.input_names}

    def pad(self, encoded: dict[str, list[list[int]]], indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Pad the selected tokenized pairs into one batch of tensors, as ``tokenizer.pad(padding=True)`` does.

        Filled with numpy rather than ``tokenizer.pad``, which walks Python lists and took longer than the forward
        pass of a MiniLM on CUDA (2.3 s against 1.8 s for 10,000 pairs on an H200). Inputs other than ids, masks and
        token types go through ``tokenizer.pad``.
        """
        fill_values = {
            "input_ids": self.tokenizer.pad_token_id,
            "attention_mask": 0,
            "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0),
        }
        if set(encoded) - set(fill_values) or fill_values["input_ids"] is None:
            batch = {name: [values[index] for index in indices] for name, values in encoded.items()}
            with self._tokenizer_lock:
                return dict(self.tokenizer.pad(batch, padding=True, return_tensors="pt"))
        lengths = [len(encoded["input_ids"][index]) for index in indices]
        longest = max(lengths)
        pad_left = getattr(self.tokenizer, "padding_side", "right") == "left"
        padded = {}
        for name, values in encoded.items():
            array = np.full((len(indices), longest), fill_values[name], dtype=np.int64)
            for row, (index, length) in enumerate(zip(indices, lengths)):
                if pad_left:
                    array[row, longest - length:] = values[index]
                else:
                    array[row, :length] = values[index]
            padded[name] = torch.from_numpy(array)
        return padded

    def logits(
        self,
        pairs: Sequence[tuple[str, str]],
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Return fp32 logits ``[len(pairs), num_labels]`` in input order."""
        if not pairs:
            return torch.empty((0, 1), dtype=torch.float32)
        return self.encoded_logits(self.tokenize(pairs), batch_size, max_batch_tokens, show_progress_bar)

    def encoded_logits(
        self,
        encoded: dict[str, list[list[int]]],
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """:meth:`logits` of rows already tokenized (e.g. passage windows): ``[rows, num_labels]`` in row order."""
        if not encoded["input_ids"]:
            return torch.empty((0, 1), dtype=torch.float32)
        batches = self.batches(encoded, batch_size, max_batch_tokens)
        outputs: list[torch.Tensor | None] = [None] * len(encoded["input_ids"])
        for indices in tqdm(batches, desc="Scoring pairs", unit="batch", disable=not show_progress_bar):
            batch_logits = self.logits_fn(self.pad(encoded, indices))
            for row, index in enumerate(indices):
                outputs[index] = batch_logits[row]
        return torch.stack(outputs)  # type: ignore[arg-type]

    def plan_batches(
        self, pairs: Sequence[tuple[str, str]], batch_size: int, max_batch_tokens: int
    ) -> tuple[dict[str, list[list[int]]], list[list[int]]]:
        """Tokenize ``pairs`` and cut them into token-budget batches: ``(encoded, [pair indices of a batch])``."""
        encoded = self.tokenize(pairs)
        return encoded, self.batches(encoded, batch_size, max_batch_tokens)

    @staticmethod
    def batches(encoded: dict[str, list[list[int]]], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
        """Token-budget batches (lists of row indices) of tokenized rows."""
        lengths = [len(ids) for ids in encoded["input_ids"]]
        return plan_token_budget_batches(lengths, max_batch_tokens, batch_size)


def apply_activation(logits: torch.Tensor, activation_fn: Callable | None) -> np.ndarray:
    """Activation then squeeze, in sentence-transformers' order: ``[n, 1] -> [n]``, ``[n, k]`` stays."""
    scores = activation_fn(logits) if activation_fn is not None else logits
    if scores.ndim > 1 and scores.shape[-1] == 1:
        scores = scores.squeeze(-1)
    return scores.float().numpy()
