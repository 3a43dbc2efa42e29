"""``CrossEncoderRanker``: a Haystack component that reorders documents by a cross-encoder's query/document score."""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import inspect
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret
from haystack.utils.hf import deserialize_hf_model_kwargs, serialize_hf_model_kwargs

from rerank_pipeline.calibration import Calibration
from rerank_pipeline.components.pair_ranking import rank_documents
from rerank_pipeline.components.ranker.cache import model_fingerprint
from rerank_pipeline.components.ranker.engines import Engine, create_engine
from rerank_pipeline.components.ranker.engines.torch import CPU_FP16_REFUSED
from rerank_pipeline.components.ranker.first_token_head import compute_last_layer_for_first_token_only
from rerank_pipeline.components.ranker.loading import (
    effective_max_length,
    load_sentence_transformers_cross_encoder,
    position_limit,
)
from rerank_pipeline.components.ranker.passages import encode_passages, tokens_beyond_passages
from rerank_pipeline.components.ranker.score_cache import ScoreCache, disabled_info
from rerank_pipeline.components.ranker.scoring import PairScorer, apply_activation
from rerank_pipeline.options import (
    EMPTY_DOCUMENT_POLICIES,
    LONG_DOCUMENT_POLICIES,
    PRECISIONS,
    RANKER_ENGINES,
    EmptyDocumentPolicy,
    LongDocumentPolicy,
    Precision,
    RankerEngine,
)

logger = logging.getLogger(__name__)

# Pairs an int8 OpenVINO model is calibrated on when the caller gives none: the first pairs it is asked to score.
CALIBRATION_PAIRS = 128
# Measured with benchmarks/rerank_throughput.py: on CPU small batches stay in cache (2048 tokens: 1.2x the
# throughput of 8192 at identical scores); on CUDA large batches fill the device.
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 2048, "cuda": 65536}
# MaxP scores at most this many passages of one document (its first ones): a 1 MB document is ~440 passages of a
# 512-token window; measured with benchmarks/max_passage_cost.py.
DEFAULT_MAX_PASSAGES = 32
# SentenceTransformersSimilarityRanker's defaults, so a pipeline written for it loads unchanged.
DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
DEFAULT_TOKEN = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False)
TRUNCATED_TOKENS = "truncated_tokens"
"""The ``Document.meta`` key ``report_truncation=True`` sets: document tokens the window left unscored."""


@component
class CrossEncoderRanker:
    """Rerank documents with a sentence-transformers / Hugging Face sequence-classification cross-encoder.

    Scores equal ``sentence_transformers.CrossEncoder(model).predict`` on the same pairs (fp32, ``truncate``);
    pairs are tokenized once, sorted by token count and batched by a token budget so padding is not paid for.

    A drop-in for sentence-transformers-haystack's ``SentenceTransformersSimilarityRanker``: it takes every init
    parameter and run input of that component with the same names, meanings and defaults, and de-duplicates the
    input documents by id the same way (keeping the copy with the highest incoming score).

    Usage:
        ranker = CrossEncoderRanker("cross-encoder/ms-marco-MiniLM-L6-v2", top_k=5)
        ranker.run(query="What is ModernBERT?", documents=documents)["documents"]
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        top_k: int | None = 10,
        device: str | ComponentDevice | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        query_prefix: str = "",
        document_prefix: str = "",
        score_threshold: float | None = None,
        scale_score: bool = True,
        long_document: LongDocumentPolicy = "truncate",
        trust_remote_code: bool = False,
        passage_overlap: int = 64,
        max_batch_tokens: int | None = None,
        precision: Precision = "auto",
        backend: RankerEngine = "torch",
        quantize: bool = False,
        calibration_pairs: list[tuple[str, str]] | None = None,
        empty_documents: EmptyDocumentPolicy = "skip",
        allow_unsafe_weights: bool = False,
        max_passages: int | None = DEFAULT_MAX_PASSAGES,
        allow_untrained_head: bool = False,
        token: Secret | None = DEFAULT_TOKEN,
        query_suffix: str = "",
        document_suffix: str = "",
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        revision: str | None = None,
        report_truncation: bool = False,
        score_calibration: dict[str, Any] | None = None,
        score_cache: int = 0,
    ) -> None:
        """Create the ranker; nothing is loaded until :meth:`warm_up` (or the first ``run``/``predict``).

        :param model: Hub id or local folder of a sequence-classification cross-encoder.
        :param top_k: How many documents ``run`` returns (``None``: all).
        :param device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``ComponentDevice`` or ``None`` (CUDA if available).
        :param batch_size: Most pairs in one forward pass.
        :param max_length: Token window of a pair; ``None`` reads the checkpoint's own (sentence-transformers config).
        :param meta_fields_to_embed: Document meta fields (e.g. ``["title"]``) joined before the content.
        :param embedding_separator: Separator between the meta fields and the content.
        :param query_prefix: Text put before every query (after the model's own default prompt, if any).
        :param document_prefix: Text put before every document text.
        :param score_threshold: Drop documents scoring below this (after scaling, if ``scale_score``).
        :param scale_score: Apply the checkpoint's activation (sigmoid for one label); ``False`` gives raw logits.
        :param long_document: ``"truncate"`` (like sentence-transformers) or ``"max_passage"``: split a document that
            exceeds the window into overlapping passages and keep the best passage score (MaxP).
        :param trust_remote_code: Allow checkpoints that ship their own modelling code (e.g. gte-multilingual).
        :param passage_overlap: Tokens shared by consecutive passages under ``max_passage``.
        :param max_batch_tokens: Padded-token budget of one batch (``None``: 2048 on CPU, 65536 on CUDA).
        :param precision: ``"auto"`` (fp32 on CPU; bf16, else fp16, on CUDA), ``"fp32"``, ``"bf16"`` (autocast on
            CUDA and on CPU, where it is fast with AVX512_BF16 or AMX: ``rerank_pipeline.hardware``) or ``"fp16"``
            (CUDA only with ``backend="torch"``: refused on the CPU). Logits come back fp32 whatever the precision.
        :param backend: ``"torch"`` or ``"openvino"`` (CPU only; converted at warm-up and cached;
            ``pip install 'rerank-pipeline[openvino]'``).
        :param quantize: Int8 inference (faster on CPU, scores move by ~1e-3): ``torch.ao`` dynamic quantization of
            the linear layers with ``backend="torch"`` (CPU only), NNCF static int8 of weights and activations with
            ``backend="openvino"`` (the fastest: activation ranges are calibrated on ``calibration_pairs``).
        :param calibration_pairs: (query, document) texts like those the ranker will score, for
            ``backend="openvino", quantize=True``; ``None`` calibrates on the first ``CALIBRATION_PAIRS`` pairs the
            ranker scores (so the first call takes longer).
        :param empty_documents: Documents with no text: ``"skip"`` (left out of the result) or ``"score"``.
        :param allow_unsafe_weights: Also accept pickle (``.bin``) weights; by default only safetensors load.
        :param max_passages: Under ``max_passage``, score at most this many passages of a document (its first ones;
            a warning names each document cut); ``None`` scores them all.
        :param allow_untrained_head: Accept a checkpoint without a trained scoring head (e.g. a bi-encoder such as
            all-MiniLM-L6-v2, which would get a random head); by default loading it raises ``ModelLoadError``.
        :param token: Hugging Face token (a Haystack ``Secret``) for private Hub models; by default read from the
            ``HF_API_TOKEN`` / ``HF_TOKEN`` environment variables when set. Serialized as the variable names only.
        :param query_suffix: Text put after every query.
        :param document_suffix: Text put after every document text.
        :param model_kwargs: Extra keyword arguments for ``AutoModelForSequenceClassification.from_pretrained``.
        :param tokenizer_kwargs: Extra keyword arguments for the tokenizer (sentence-transformers'
            ``processor_kwargs``).
        :param config_kwargs: Extra keyword arguments for ``AutoConfig.from_pretrained``.
        :param revision: Hub revision (commit hash, branch or tag) of ``model`` to load, so a Hub model is pinned;
            ``None`` loads the default branch. Passed to every loader (config, tokenizer, weights) and used in the
            OpenVINO cache key. Ignored for a local folder.
        :param report_truncation: Set ``meta["truncated_tokens"]`` on every returned document: how many of its
            document tokens the window left unscored (0 when none). Under ``long_document="truncate"`` the tokens
            the ``longest_first`` window cut; under ``"max_passage"`` the tokens after the first ``max_passages``
            passages (usually 0). Off by default: nothing extra is computed then.
        :param score_calibration: A fitted logit -> probability map (:meth:`rerank_pipeline.calibration.Calibration.to_dict`,
            e.g. from ``fit_calibration``): ``run`` then returns each document's calibrated probability of relevance
            as ``Document.score`` (whatever ``scale_score`` says), so ``score_threshold`` is a probability; the order
            stays that of the raw logits. ``predict`` still returns uncalibrated scores. ``None``: no calibration.
        :param score_cache: Most (query, document) scores ``run``/``run_batch`` keep in memory (an LRU keyed by the
            model's fingerprint, the query, the document id and its text as scored, so an edited document is
            rescored); ``0`` (default) turns the cache off. ``predict`` is never cached. See :meth:`score_cache_info`.
        :raises ValueError: If an argument is out of range or not one of its choices (the message names it and the
            value), or two arguments conflict (``quantize`` with bf16/fp16, ``backend="openvino"`` on CUDA,
            ``precision="fp16"`` with ``backend="torch"`` on the CPU (at warm-up when ``device`` is ``None`` and
            there is no CUDA), ``calibration_pairs`` outside ``backend="openvino", quantize=True``), or
            ``score_calibration`` is not a valid calibration.
        """
        if not str(model).strip():
            raise ValueError("model must be a Hub id or a local folder, got an empty string")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be > 0, got {max_length}")
        if max_batch_tokens is not None and max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be > 0, got {max_batch_tokens}")
        if passage_overlap < 0:
            raise ValueError(f"passage_overlap must be >= 0, got {passage_overlap}")
        if max_passages is not None and max_passages <= 0:
            raise ValueError(f"max_passages must be > 0 or None, got {max_passages}")
        for name, value, allowed in (
            ("long_document", long_document, LONG_DOCUMENT_POLICIES),
            ("empty_documents", empty_documents, EMPTY_DOCUMENT_POLICIES),
            ("backend", backend, RANKER_ENGINES),
            ("precision", precision, PRECISIONS),
        ):
            if value not in allowed:
                removed = " (the ONNX Runtime engine was removed: see docs/ranker.md)" if value == "onnx" else ""
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}{removed}")
        if quantize and precision in ("bf16", "fp16"):
            raise ValueError("quantize=True runs int8 weights; it cannot be combined with precision bf16/fp16")
        device_name = device.to_torch_str() if isinstance(device, ComponentDevice) else device
        if backend == "torch" and precision == "fp16" and device_name is not None and str(device_name).startswith("cpu"):
            raise ValueError(CPU_FP16_REFUSED)
        if backend == "openvino" and device_name is not None and not str(device_name).startswith("cpu"):
            raise ValueError(f"backend='openvino' runs on the CPU; got device {device_name!r}")
        if calibration_pairs is not None and not (backend == "openvino" and quantize):
            raise ValueError("calibration_pairs is only used by backend='openvino' with quantize=True")
        if calibration_pairs is not None and (
            not calibration_pairs
            or any(not isinstance(pair, (list, tuple)) or len(pair) != 2 for pair in calibration_pairs)
        ):
            raise ValueError("calibration_pairs must be a non-empty list of (query, document) pairs, or None")
        self._score_calibration = Calibration.from_dict(score_calibration) if score_calibration is not None else None

        self.model = str(model)
        self.top_k = top_k
        self.device = device_name
        self.batch_size = batch_size
        self.max_length = max_length
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.score_threshold = score_threshold
        self.scale_score = scale_score
        self.long_document = long_document
        self.trust_remote_code = trust_remote_code
        self.passage_overlap = passage_overlap
        self.max_batch_tokens = max_batch_tokens
        self.precision = precision
        self.backend = backend
        self.quantize = quantize
        self.calibration_pairs = [(str(query), str(text)) for query, text in calibration_pairs or []] or None
        self.empty_documents = empty_documents
        self.allow_unsafe_weights = allow_unsafe_weights
        self.max_passages = max_passages
        self.allow_untrained_head = allow_untrained_head
        self.token = token
        self.query_suffix = query_suffix
        self.document_suffix = document_suffix
        self.model_kwargs = model_kwargs
        self.tokenizer_kwargs = tokenizer_kwargs
        self.config_kwargs = config_kwargs
        self.revision = revision
        self.report_truncation = report_truncation
        self.score_calibration = self._score_calibration.to_dict() if self._score_calibration is not None else None

        self._scorer: PairScorer | None = None
        self._position_limit: int | None = None
        self._activation_fn: Any = None
        self._model_prompt = ""
        self._torch_device: torch.device | None = None
        self._warm_up_lock = threading.Lock()
        self._calibration_lock = threading.Lock()
        self._score_fingerprint: str | None = None
        self.set_score_cache(score_cache)

    # ------------------------------------------------------------------ loading

    def warm_up(self) -> None:
        """Load the model and tokenizer (once; safe to call from several threads).

        :raises FileNotFoundError: If ``model`` names a local folder that does not exist.
        :raises ModelLoadError: If the model cannot be loaded (unknown or offline Hub id, pickle-only weights without
            ``allow_unsafe_weights``, custom code without ``trust_remote_code``, no trained scoring head without
            ``allow_untrained_head``); the message names the model.
        """
        if self._scorer is not None:
            return
        with self._warm_up_lock:
            if self._scorer is None:
                self._load()

    def _load(self) -> None:
        default_device = "cuda" if torch.cuda.is_available() and self.backend != "openvino" else "cpu"
        device = torch.device(self.device or default_device)
        if device.type == "cuda" and not torch.cuda.is_available():
            logger.warning("CUDA requested for '%s' but not available; falling back to CPU", self.model)
            device = torch.device("cpu")
        cross_encoder = load_sentence_transformers_cross_encoder(
            self.model,
            str(device),
            self.trust_remote_code,
            self.allow_unsafe_weights,
            self.max_length,
            allow_untrained_head=self.allow_untrained_head,
            token=self.token.resolve_value() if self.token else None,
            model_kwargs=self.model_kwargs,
            tokenizer_kwargs=self.tokenizer_kwargs,
            config_kwargs=self.config_kwargs,
            revision=self.revision,
        )
        hf_model = cross_encoder.model
        if hf_model is None or not hasattr(hf_model, "config") or len(cross_encoder) != 1:
            raise ValueError(
                f"'{self.model}' is not a plain sequence-classification cross-encoder; "
                "use sentence_transformers.CrossEncoder for this architecture"
            )
        compute_last_layer_for_first_token_only(hf_model)
        tokenizer = cross_encoder.tokenizer
        max_length = effective_max_length(tokenizer, hf_model.config)
        self._position_limit = position_limit(hf_model.config)
        engine = create_engine(
            self.backend, hf_model, tokenizer, device, precision=self.precision, quantize=self.quantize,
            model_id=self.model, calibration=self._calibration_key(), revision=self.revision,
        )
        self._activation_fn = cross_encoder.activation_fn
        # What CrossEncoder.predict puts before each query (its _resolve_prompt(None, None)), read from the public
        # prompts / default_prompt_name attributes.
        default_prompt = cross_encoder.default_prompt_name
        self._model_prompt = (cross_encoder.prompts.get(default_prompt) if default_prompt is not None else None) or ""
        self._num_labels = int(getattr(hf_model.config, "num_labels", 1))
        self._torch_device = engine.device
        input_names = set(engine.input_names) if engine.input_names is not None else None
        self._scorer = PairScorer(tokenizer, engine, max_length, input_names)
        if self.calibration_pairs:
            self._calibrate([(self._model_prompt + query, text) for query, text in self.calibration_pairs])

    def _calibration_key(self) -> str:
        """Names the int8 calibration data in the OpenVINO cache: a hash of ``calibration_pairs`` (with the batch
        plan's settings), or ``first-scored``."""
        if not self.calibration_pairs:
            return "first-scored"
        plan = [self.calibration_pairs[:CALIBRATION_PAIRS], self.batch_size, self.max_batch_tokens, self.max_length]
        return hashlib.sha256(json.dumps(plan).encode()).hexdigest()[:16]

    def _calibrate(self, pairs: list[tuple[str, str]] | dict[str, list[list[int]]]) -> None:
        """Calibrate an int8 OpenVINO model on (up to ``CALIBRATION_PAIRS`` of) ``pairs`` (text pairs, or rows
        already tokenized); no-op otherwise."""
        assert self._scorer is not None
        engine = self._scorer.engine
        if not engine.needs_calibration:
            return
        with self._calibration_lock:
            if engine.needs_calibration:
                if isinstance(pairs, dict):
                    encoded = {name: rows[:CALIBRATION_PAIRS] for name, rows in pairs.items()}
                else:
                    encoded = self._scorer.tokenize(pairs[:CALIBRATION_PAIRS])
                logger.info("Calibrating the %s engine of '%s' on %d pairs", self.backend, self.model,
                            len(encoded["input_ids"]))
                batches = self._scorer.batches(encoded, self.batch_size, self._max_batch_tokens())
                engine.calibrate([self._scorer.pad(encoded, indices) for indices in batches])

    @property
    def engine(self) -> Engine | None:
        """The engine running the model's forward pass (see ``backend``), or ``None`` before :meth:`warm_up`."""
        return self._scorer.engine if self._scorer is not None else None

    # ------------------------------------------------------------------ scoring

    takes_pair_names = True  # predict(names=...): the evaluation harness passes each pair's document id

    def predict(
        self, pairs: list[tuple[str, str]], batch_size: int | None = None, show_progress_bar: bool = False,
        names: list[str] | None = None,
    ) -> np.ndarray:
        """Score (query, document) pairs like ``sentence_transformers.CrossEncoder(model).predict(pairs)``.

        Returns ``[n]`` for one-label models (``[n, labels]`` otherwise); the checkpoint's activation is applied
        when ``scale_score`` is on, raw logits otherwise. The model's default prompt (if any) is put before each
        query, as sentence-transformers does. Honours ``long_document`` (``"truncate"`` by default).
        ``names`` (one a pair, e.g. the document id) name the documents in warnings (default ``pair N``).
        """
        if names is not None and len(names) != len(pairs):
            raise ValueError(f"predict got {len(names)} names for {len(pairs)} pairs")
        self.warm_up()
        if not pairs:
            return np.array([])
        queries = [self._model_prompt + str(pair[0]) for pair in pairs]
        documents = [str(pair[1]) for pair in pairs]
        logits = self._pair_logits(queries, documents, batch_size or self.batch_size, show_progress_bar,
                                   names=[str(name) for name in names] if names is not None else None)
        return apply_activation(logits, self._activation_fn if self.scale_score else None)

    def _pair_logits(
        self, queries: list[str], documents: list[str], batch_size: int, show_progress_bar: bool = False,
        names: list[str] | None = None, truncated: list[int] | None = None,
    ) -> torch.Tensor:
        """Each pair's logits (``long_document`` applied); ``truncated``, when given, is filled with each pair's
        document tokens left unscored (see ``report_truncation``)."""
        assert self._scorer is not None
        max_batch_tokens = self._max_batch_tokens()
        if self.long_document == "truncate":
            pairs = list(zip(queries, documents))
            self._calibrate(pairs)
            if truncated is None or not pairs:
                return self._scorer.logits(pairs, batch_size, max_batch_tokens, show_progress_bar)
            encoded = self._scorer.encode(pairs)  # tokenized once, for the counts and the scores
            truncated.extend(self._scorer.truncated_tokens(pairs, encoded))
            return self._scorer.encoded_logits(self._scorer.select_inputs(encoded), batch_size, max_batch_tokens,
                                               show_progress_bar)
        with self._scorer.locked_tokenizer() as tokenizer:  # each pair tokenized once, into its passage windows
            encoded, owners = encode_passages(
                tokenizer, queries, documents, self._scorer.max_length, self.passage_overlap
            )
        encoded = self._scorer.select_inputs(encoded)
        counts = np.bincount(owners, minlength=len(queries))
        capped: list[str] = []
        if self.max_passages is not None and counts.max(initial=0) > self.max_passages:
            first_rows = np.cumsum(counts) - counts  # rows come in pair order
            keep = [row for row, owner in enumerate(owners) if row - first_rows[owner] < self.max_passages]
            encoded = {name: [rows[row] for row in keep] for name, rows in encoded.items()}
            owners = [owners[row] for row in keep]
            capped = [f"{names[owner] if names else f'pair {owner}'!r} ({count} passages)"
                      for owner, count in enumerate(counts) if count > self.max_passages]
        if truncated is not None:
            truncated.extend(self._passages_left(queries, documents, counts))
        if capped:
            logger.warning(
                "CrossEncoderRanker scored only the first %d passages (max_passages) of %d document(s): %s",
                self.max_passages, len(capped), ", ".join(capped[:10]) + (" ..." if len(capped) > 10 else ""),
            )
        self._calibrate(encoded)
        passage_logits = self._scorer.encoded_logits(encoded, batch_size, max_batch_tokens, show_progress_bar)
        index = torch.tensor(owners).unsqueeze(-1).expand_as(passage_logits)
        best = torch.full((len(queries), passage_logits.shape[-1]), float("-inf"))
        return best.scatter_reduce_(0, index, passage_logits, reduce="amax", include_self=False)

    def _passages_left(self, queries: list[str], documents: list[str], counts: np.ndarray) -> list[int]:
        """Document tokens after the first ``max_passages`` passages of each pair (only capped pairs tokenized)."""
        assert self._scorer is not None
        left = [0] * len(queries)
        if self.max_passages is None:
            return left
        capped = [index for index, count in enumerate(counts) if count > self.max_passages]
        if capped:
            with self._scorer.locked_tokenizer() as tokenizer:
                beyond = tokens_beyond_passages(
                    tokenizer, [queries[index] for index in capped], [documents[index] for index in capped],
                    self._scorer.max_length, self.passage_overlap, self.max_passages)
            for index, count in zip(capped, beyond):
                left[index] = count
        return left

    def truncated_tokens(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Document tokens the window leaves unscored in each (query, document) pair as :meth:`predict` scores it
        (the model's prompt before the query), without running the model: under ``long_document="truncate"``
        what ``longest_first`` truncation cuts, under ``"max_passage"`` the tokens after ``max_passages``
        passages. The figure ``report_truncation`` puts in ``meta["truncated_tokens"]``; loads the tokenizer."""
        self.warm_up()
        return self._truncated_tokens([self._model_prompt + str(query) for query, _ in pairs],
                                      [str(document) for _, document in pairs])

    def _truncated_tokens(self, queries: list[str], documents: list[str]) -> list[int]:
        """:meth:`truncated_tokens` of queries already prompted, as :meth:`_pair_logits` takes them."""
        assert self._scorer is not None
        if self.long_document == "truncate":
            return self._scorer.truncated_tokens(list(zip(queries, documents)))
        with self._scorer.locked_tokenizer() as tokenizer:
            _, owners = encode_passages(tokenizer, queries, documents, self._scorer.max_length, self.passage_overlap)
        return self._passages_left(queries, documents, np.bincount(owners, minlength=len(queries)))

    @property
    def window(self) -> int | None:
        """The token window of a (query, document) pair in use (``max_length`` or the checkpoint's), or ``None``
        before :meth:`warm_up`."""
        return self._scorer.max_length if self._scorer is not None else None

    @property
    def longest_window(self) -> int | None:
        """The longest window the model's position embeddings allow (e.g. 512 for BERT, 8192 for ModernBERT), or
        ``None`` before :meth:`warm_up` or when the config does not say."""
        return self._position_limit if self._scorer is not None else None

    def _max_batch_tokens(self) -> int:
        assert self._torch_device is not None
        default = DEFAULT_MAX_BATCH_TOKENS.get(self._torch_device.type, DEFAULT_MAX_BATCH_TOKENS["cpu"])
        return self.max_batch_tokens or default

    def document_text(self, document: Document) -> str | None:
        """The text the ranker scores for ``document`` (its ``meta_fields_to_embed``, content, prefix and suffix),
        or None for a document without text that ``empty_documents="skip"`` leaves out."""
        content = document.content if isinstance(document.content, str) else None
        if not (content and content.strip()) and self.empty_documents == "skip":
            return None
        meta_values = [
            str(document.meta[field]) for field in self.meta_fields_to_embed if document.meta.get(field) is not None
        ]
        text = self.embedding_separator.join([*meta_values, content or ""])
        return self.document_prefix + text + self.document_suffix

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        scale_score: bool | None = None,
    ) -> dict[str, list[Document]]:
        """Score ``documents`` against ``query`` and return them best first, with ``Document.score`` set.

        :param query: The query; must contain text.
        :param documents: Candidates, de-duplicated by id first (the copy with the highest incoming score is kept);
            documents without text are skipped or scored per ``empty_documents``.
        :param top_k: Overrides the init ``top_k`` for this call.
        :param score_threshold: Overrides the init ``score_threshold`` for this call.
        :param scale_score: Overrides the init ``scale_score`` for this call (ignored with ``score_calibration``).
        :returns: ``{"documents": [...]}``, copies of the inputs with ``score`` set, sorted by descending score
            (with ``score_calibration``: by descending raw logit, the score being its calibrated probability).
        :raises ValueError: If ``query`` is empty, ``top_k`` is not positive, or the model has more than one label.
        """
        return {"documents": self._rank([query], [documents], top_k, score_threshold, scale_score)[0]}

    def run_batch(
        self,
        query: list[str],
        documents: list[list[Document]],
        top_k: int | None = None,
        score_threshold: float | None = None,
        scale_score: bool | None = None,
    ) -> dict[str, list[list[Document]]]:
        """:meth:`run` for many queries, their pairs scored together: ``{"documents": [one list a query]}``."""
        if len(query) != len(documents):
            raise ValueError(f"run_batch got {len(query)} queries and {len(documents)} document lists")
        return {"documents": self._rank(list(query), list(documents), top_k, score_threshold, scale_score)}

    def _rank(self, queries: list[str], candidates: list[list[Document]], top_k: int | None,
              score_threshold: float | None, scale_score: bool | None) -> list[list[Document]]:
        """Each query's documents scored (all pairs in one ``_pair_logits`` call) and sorted by
        :func:`~rerank_pipeline.components.pair_ranking.rank_documents`, best first."""
        scale_score = self.scale_score if scale_score is None else scale_score
        cut: dict[tuple[str, str], int] | None = {} if self.report_truncation else None  # (query, text) -> tokens
        if self._score_calibration is not None:  # calibrated from the raw logit
            scale_score = False

        def scores(pair_queries: list[str], texts: list[str], names: list[str]) -> np.ndarray:
            self.warm_up()
            if self._num_labels != 1:
                raise ValueError(f"'{self.model}' has {self._num_labels} labels; ranking needs a one-label cross-encoder")
            full = [self._model_prompt + self.query_prefix + query + self.query_suffix for query in pair_queries]
            truncated: list[int] | None = [] if cut is not None else None
            logits = self._cached_pair_logits(full, texts, names, truncated)
            if cut is not None:
                cut.update(zip(zip(pair_queries, texts), truncated))
            return apply_activation(logits, self._activation_fn if scale_score else None)

        ranked = rank_documents(
            queries, candidates, scores, self.document_text, top_k=self.top_k if top_k is None else top_k,
            score_threshold=self.score_threshold if score_threshold is None else score_threshold,
            shown_score=self._score_calibration,
        )
        if cut is None:
            return ranked
        return [[replace(document, meta={**document.meta,
                                         TRUNCATED_TOKENS: cut[(query, self.document_text(document))]})
                 for document in documents] for query, documents in zip(queries, ranked)]

    def _cached_pair_logits(self, queries: list[str], texts: list[str], names: list[str],
                            truncated: list[int] | None = None) -> torch.Tensor:
        """:meth:`_pair_logits` through the score cache (when on): only the pairs it misses are scored, together.
        ``truncated`` is filled as :meth:`_pair_logits` does (with the cache on, by the tokenizer alone)."""
        cache = self._score_cache
        if cache is None:
            return self._pair_logits(queries, texts, self.batch_size, names=names, truncated=truncated)
        if truncated is not None:  # a hit is not tokenized again: every pair counted by the tokenizer alone
            truncated.extend(self._truncated_tokens(queries, texts))
        fingerprint = self._score_cache_fingerprint()
        keys = [cache.key(fingerprint, query, name, text) for query, name, text in zip(queries, names, texts)]
        rows = cache.get_many(keys)
        first_miss: dict[bytes, int] = {}  # a pair asked twice in one call is scored once
        for index, (key, row) in enumerate(zip(keys, rows)):
            if row is None:
                first_miss.setdefault(key, index)
        missing = list(first_miss.values())
        if missing:
            logits = self._pair_logits([queries[index] for index in missing], [texts[index] for index in missing],
                                       self.batch_size, names=[names[index] for index in missing])
            fresh = {keys[index]: tuple(row) for index, row in zip(missing, logits.tolist())}
            cache.put_many(list(fresh), list(fresh.values()))
            rows = [row if row is not None else fresh[key] for key, row in zip(keys, rows)]
        return torch.tensor(rows, dtype=torch.float32)

    def _score_cache_fingerprint(self) -> str:
        """Everything that changes a pair's logit, hashed (the model's files or Hub commit, the window, engine,
        precision, device, int8 calibration, long-document settings, prompt, prefixes and suffixes); after warm-up."""
        if self._score_fingerprint is None:  # idempotent: a race computes the same value twice
            assert self._scorer is not None and self._torch_device is not None
            settings = {
                "revision": self.revision, "max_length": self._scorer.max_length, "backend": self.backend,
                "precision": self.precision, "device": self._torch_device.type, "quantize": self.quantize,
                "calibration": self._calibration_key(), "long_document": self.long_document,
                "passage_overlap": self.passage_overlap, "max_passages": self.max_passages,
                "model_prompt": self._model_prompt, "query_prefix": self.query_prefix,
                "query_suffix": self.query_suffix, "document_prefix": self.document_prefix,
                "document_suffix": self.document_suffix, "meta_fields_to_embed": self.meta_fields_to_embed,
                "embedding_separator": self.embedding_separator, "trust_remote_code": self.trust_remote_code,
                "model_kwargs": repr(self.model_kwargs), "tokenizer_kwargs": repr(self.tokenizer_kwargs),
                "config_kwargs": repr(self.config_kwargs),
            }
            inputs = sorted(self._scorer.input_names or [])
            self._score_fingerprint = model_fingerprint(self.model, inputs, extra=settings, revision=self.revision)
        return self._score_fingerprint

    def set_score_cache(self, max_entries: int | ScoreCache) -> None:
        """Start an empty score cache of ``max_entries`` pairs (``0``: off), e.g. to measure the engine itself; or
        use a given :class:`ScoreCache`, shared with other rankers (keys hold each model's fingerprint, so rankers of
        different models or settings never exchange scores).

        :raises ValueError: ``max_entries`` is neither an integer >= 0 nor a ``ScoreCache``.
        """
        if isinstance(max_entries, ScoreCache):
            self.score_cache, self._score_cache = max_entries.max_entries, max_entries
            return
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError(f"score_cache must be an integer >= 0 (0: off), got {max_entries!r}")
        self.score_cache = max_entries
        self._score_cache = ScoreCache(max_entries) if max_entries else None

    def score_cache_info(self) -> dict[str, int]:
        """The score cache's ``{"max_entries", "entries", "hits", "misses", "evictions"}`` (all 0 when it is off)."""
        return self._score_cache.info() if self._score_cache is not None else disabled_info()

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        scale_score: bool | None = None,
    ) -> dict[str, list[Document]]:
        """Async :meth:`run`: loading and scoring run in a worker thread, so the event loop stays free."""
        call = functools.partial(self.run, query, documents, top_k, score_threshold, scale_score)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """Serialize the init parameters (YAML-safe)."""
        parameters = {name: getattr(self, name) for name in _init_parameter_names(type(self))}
        if self.calibration_pairs:
            parameters["calibration_pairs"] = [list(pair) for pair in self.calibration_pairs]
        parameters["model_kwargs"] = self._serialized_model_kwargs()
        return default_to_dict(self, **parameters)

    def _serialized_model_kwargs(self) -> dict[str, Any] | None:
        """``model_kwargs`` with torch dtypes as strings, as ``SentenceTransformersSimilarityRanker`` writes them."""
        if self.model_kwargs is None:
            return None
        serialized = copy.deepcopy(self.model_kwargs)
        serialize_hf_model_kwargs(serialized)
        return serialized

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrossEncoderRanker:
        """Rebuild a ranker from :meth:`to_dict` output."""
        init_parameters = data.get("init_parameters", {})
        # Written by versions with the ONNX engine (always, as null): dropped, so their pipeline YAMLs still load.
        if init_parameters.pop("onnx_cache_dir", None) is not None:
            logger.warning("CrossEncoderRanker: ignoring onnx_cache_dir (the ONNX Runtime engine was removed)")
        if init_parameters.get("model_kwargs") is not None:
            deserialize_hf_model_kwargs(init_parameters["model_kwargs"])
        return default_from_dict(cls, data)


@functools.cache
def _init_parameter_names(cls: type) -> tuple[str, ...]:
    """``cls.__init__``'s parameter names, in order: what :meth:`CrossEncoderRanker.to_dict` serializes (each is
    kept on the instance under its own name)."""
    return tuple(name for name in inspect.signature(cls.__init__).parameters if name != "self")
