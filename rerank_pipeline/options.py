"""One vocabulary of options: every choice list, and the typed option groups the ``rerank-pipeline`` subcommands share.

Standard library only: the CLI builds its parser from here without importing torch or Haystack, and the
components, the first stage and training name the same tuples instead of keeping copies equal by tests.

One meaning per name, on every subcommand:

- ``--top-k``: the number of results returned (shown, served);
- ``--candidates``: the first-stage depth (documents retrieved, then reranked);
- ``--first-stage``: the first-stage kind (:data:`FIRST_STAGE_KINDS`);
- ``--engine``: the cross-encoder runtime (:data:`RANKER_ENGINES`; ``CrossEncoderRanker(backend=...)``);
- ``--fusion-depth``: RRF's per-side depth (``ReciprocalRankFusion(fusion_depth=...)``), never the reranker
  fusion's candidate depth (``TrainingConfig.rerank_fusion_depth``).

Usage:
    parser = argparse.ArgumentParser()
    add_ranker_options(parser)
    args = parser.parse_args(["--engine", "openvino", "--quantize"])
    RankerOptions.from_args(args).ranker_kwargs()  # {"backend": "openvino", "quantize": True, ...}
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

# ------------------------------------------------------------------ choice lists

# The ranker's choices are Literal types too, so its typed signature and the lists cannot drift apart.
RankerEngine = Literal["torch", "openvino"]  # ONNX Runtime was measured slower on CPU and removed (docs/ranker.md)
RANKER_ENGINES: tuple[str, ...] = get_args(RankerEngine)
"""Cross-encoder runtimes: ``--engine``, ``CrossEncoderRanker(backend=...)``."""
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""Inference and training precisions (``auto``: fp32 on CPU; bf16, else fp16, on CUDA)."""
LongDocumentPolicy = Literal["truncate", "max_passage"]
LONG_DOCUMENT_POLICIES: tuple[str, ...] = get_args(LongDocumentPolicy)
"""A document longer than the ranker's window: cut it, or score overlapping passages and keep the best (MaxP)."""
EmptyDocumentPolicy = Literal["skip", "score"]
EMPTY_DOCUMENT_POLICIES: tuple[str, ...] = get_args(EmptyDocumentPolicy)
"""A document without text: left out of the ranker's result, or scored."""
FUSION_METHODS = ("model", "none", "rrf")
"""What orders the reranked candidates: the model folder's ``fusion.json``, the reranker alone, or RRF."""
FIRST_STAGE_KINDS = ("bm25", "dense", "hybrid", "elasticsearch")
"""First stages :func:`rerank_pipeline.first_stage.build_first_stage` builds."""
FIRST_STAGE_ALIASES = {"embedded": "bm25", "faiss": "dense"}
"""Other names of a kind; ``faiss`` is also what a dense ``index.json`` records as its ``backend``."""
PUBLISHED = "published"
"""``eval``'s first stage that is no index: the candidate lists a dataset publishes (NanoBEIR)."""
EVAL_FIRST_STAGES = (PUBLISHED, *FIRST_STAGE_KINDS)
TRAINING_FIRST_STAGES = ("bm25", "dense", "hybrid")
"""First stages that mine training negatives (embedded ones: training needs no server)."""
RERANKER_KINDS = ("cross-encoder", "bi-encoder", "identity")
"""How ``eval --model`` scores a pair."""
LOSSES = ("bce", "lambda")
CalibrationMethod = Literal["platt", "isotonic"]
CALIBRATION_METHODS: tuple[str, ...] = get_args(CalibrationMethod)
"""Score calibrations (:mod:`rerank_pipeline.calibration`); ``tune --calibration`` adds ``none``."""
AUTO_ON_OFF = ("auto", "on", "off")
DISTILLATION_MODES = AUTO_ON_OFF
"""``train --distillation``: auto = only for a base without a trained cross-encoder head."""
END_TO_END_MODES = AUTO_ON_OFF
"""``eval --end-to-end``: auto = on for our own first stage."""

RENAMED_OPTIONS = {
    "index": {"backend": "first_stage"},
    "search": {"backend": "engine"},
    "serve": {"backend": "engine"},
    "export": {"backend": "engine"},
    "eval": {"backend": "engine", "top_k": "candidates"},
}
"""Per subcommand, an old option's ``dest`` -> the new one's (the old flag still works, with a warning)."""


def canonical_first_stage(kind: str) -> str:
    """The first-stage kind ``kind`` names (``faiss`` -> ``dense``, ``embedded`` -> ``bm25``).

    :raises ValueError: ``kind`` names no first stage.
    """
    kind = FIRST_STAGE_ALIASES.get(kind, kind)
    if kind not in FIRST_STAGE_KINDS:
        aliases = ", ".join(FIRST_STAGE_ALIASES)
        raise ValueError(f"unknown first stage {kind!r}; choose one of {', '.join(FIRST_STAGE_KINDS)} (or {aliases})")
    return kind


def renamed_option(command: str, key: str) -> str:
    """The current ``dest`` of option ``key`` (``-`` or ``_``) of ``command``, warning when ``key`` is an old name.

    For option names read from a config file (``eval --config``), where argparse's aliases do not apply.
    """
    dest = key.replace("-", "_")
    new = RENAMED_OPTIONS.get(command, {}).get(dest)
    if new is None:
        return dest
    deprecation(f"option {key!r} is deprecated; use {new.replace('_', '-')!r}", f"rerank-pipeline {command}")
    return new


def deprecation(message: str, prog: str = "rerank-pipeline") -> None:
    """Say once, on stderr, that an old name was used (and raise a ``DeprecationWarning`` for Python callers)."""
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    print(f"{prog}: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------ argparse helpers


def positive_int(text: str) -> int:
    """argparse ``type``: an integer >= 1 (``--max-queries 0`` or ``-3`` is an error, not "all" or "all but 3")."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse ``type``: an integer >= 0 (for sizes where 0 means off, e.g. ``--score-cache 0``)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


class DeprecatedAlias(argparse.Action):
    """An old option name that still works: its value goes to the new option's ``dest``, with a warning on stderr."""

    def __init__(self, option_strings, dest, *, replacement: str, **kwargs):
        self.replacement = replacement
        kwargs.setdefault("help", f"deprecated: use {replacement}")
        # default None, not SUPPRESS: the new option, added first, sets the default, and ``get_default`` (which
        # skips None) still answers the new option's
        super().__init__(option_strings, dest, default=None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecation(f"{option_string} is deprecated; use {self.replacement}", parser.prog)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser, old: str, new: argparse.Action) -> None:
    """Add ``old`` as a deprecated alias of the option ``new`` (same ``dest``, ``type`` and ``choices``)."""
    parser.add_argument(old, action=DeprecatedAlias, dest=new.dest, replacement=new.option_strings[0],
                        type=new.type, choices=new.choices, metavar=new.metavar)


def add_fusion_option(parser) -> None:
    """``--fusion model|none|rrf``: what orders the reranked candidates (search, serve, export, eval)."""
    parser.add_argument(
        "--fusion", choices=FUSION_METHODS, default="model",
        help="after the reranker: model = the model folder's dev-tuned fusion.json when it has one (default), "
             "none = the reranker's order, rrf = reciprocal rank fusion with the first stage",
    )


def add_result_options(parser, *, top_k: int = 10, candidates: int = 100) -> None:
    """``--top-k`` (results returned) and ``--candidates`` (first-stage depth, reranked): search, serve, export."""
    parser.add_argument("--top-k", type=positive_int, default=top_k, help="results returned (shown, served)")
    add_candidates_option(parser, candidates)


def add_candidates_option(parser, default: int | None = 100,
                          help: str = "first-stage depth: candidates retrieved, then reranked") -> argparse.Action:
    """``--candidates``: the first-stage depth (every subcommand that retrieves)."""
    return parser.add_argument("--candidates", type=positive_int, default=default, help=help)


# ------------------------------------------------------------------ ranker options


@dataclass(frozen=True)
class RankerOptions:
    """The cross-encoder settings the CLI exposes (``--engine``, ``--precision``, ``--quantize``, the long-document
    flags).

    :param engine: Runtime, one of :data:`RANKER_ENGINES` (``CrossEncoderRanker``'s ``backend``).
    :param precision: One of :data:`PRECISIONS` (``CrossEncoderRanker``'s ``precision``).
    :param quantize: Int8 inference.
    :param max_length: Token window of a pair (``None``: the checkpoint's own).
    :param long_document: One of :data:`LONG_DOCUMENT_POLICIES`.
    :param max_passages: Under ``max_passage``, passages scored per document (``None``: the ranker's default).
    :param allow_untrained_head: Accept a checkpoint without a trained scoring head.
    :raises ValueError: A choice outside its list, or a size below 1.
    """

    engine: str = "torch"
    precision: str = "auto"
    quantize: bool = False
    max_length: int | None = None
    long_document: str = "truncate"
    max_passages: int | None = None
    allow_untrained_head: bool = False

    def __post_init__(self) -> None:
        if self.engine not in RANKER_ENGINES:
            raise ValueError(f"engine must be one of {RANKER_ENGINES}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.long_document not in LONG_DOCUMENT_POLICIES:
            raise ValueError(f"long_document must be one of {LONG_DOCUMENT_POLICIES}, got {self.long_document!r}")
        for name in ("max_length", "max_passages"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RankerOptions:
        """The options :func:`add_ranker_options` parsed (a missing attribute keeps its default)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RankerOptions:
        """The options behind ``CrossEncoderRanker`` keywords (the inverse of :meth:`ranker_kwargs`; other keys ignored)."""
        names = {"backend": "engine", **{f.name: f.name for f in fields(cls) if f.name != "engine"}}
        return cls(**{names[key]: value for key, value in kwargs.items() if key in names and value is not None})

    def ranker_kwargs(self) -> dict[str, Any]:
        """``CrossEncoderRanker`` keyword arguments (``max_passages`` only when set, else the ranker's default)."""
        kwargs = {"backend": self.engine, "precision": self.precision, "quantize": self.quantize,
                  "max_length": self.max_length,
                  "long_document": self.long_document, "allow_untrained_head": self.allow_untrained_head}
        if self.max_passages is not None:
            kwargs["max_passages"] = self.max_passages
        return kwargs

    def flags_set(self) -> list[str]:
        """The flags given away from their defaults, e.g. ``["--engine", "--quantize"]`` (to refuse them without a model)."""
        default = RankerOptions()
        return [f"--{f.name.replace('_', '-')}" for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]

    def describe(self) -> str:
        """e.g. ``openvino, int8, max_length 128, max_passage`` (defaults left out but the engine)."""
        parts = [self.engine]
        if self.precision != "auto":
            parts.append(self.precision)
        if self.quantize:
            parts.append("int8")
        if self.max_length is not None:
            parts.append(f"max_length {self.max_length}")
        if self.long_document != "truncate":
            parts.append(self.long_document)
        if self.max_passages is not None:
            parts.append(f"max_passages {self.max_passages}")
        return ", ".join(parts)


def add_ranker_options(parser, *, deprecated_backend: bool = True) -> None:
    """``--engine``, ``--precision``, ``--quantize``, ``--max-length``, ``--long-document``, ``--max-passages``,
    ``--allow-untrained-head``: :class:`RankerOptions` (search, serve, export, eval). ``--backend`` stays a
    deprecated alias of ``--engine`` when ``deprecated_backend``."""
    engine = parser.add_argument("--engine", choices=RANKER_ENGINES, default="torch",
                                 help="cross-encoder runtime; OpenVINO conversions are cached on disk")
    if deprecated_backend:
        add_deprecated_alias(parser, "--backend", engine)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="inference precision: auto = fp32 on CPU, bf16 (else fp16) on CUDA; bf16 also on CPU "
                             "(fast with AVX512_BF16 or AMX); fp16 on CUDA only (torch engine)")
    parser.add_argument("--quantize", action="store_true",
                        help="int8 inference (openvino: static int8, calibrated on the first pairs scored, cached)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="token window of a pair (default: the checkpoint's own)")
    parser.add_argument("--long-document", choices=LONG_DOCUMENT_POLICIES, default="truncate",
                        help="documents longer than the window: truncate, or score overlapping passages and keep "
                             "the best (MaxP)")
    parser.add_argument("--max-passages", type=positive_int, default=None,
                        help="max_passage: score at most this many passages of a document, its first ones "
                             "(default: the ranker's, 32; a warning names each document cut)")
    parser.add_argument("--allow-untrained-head", action="store_true",
                        help="accept a --model without a trained scoring head (it scores with a random head)")


# ------------------------------------------------------------------ first-stage options

INDEX_SETTINGS = {
    # dest: (build_first_stage option, first stages it applies to)
    "k1": ("k1", ("bm25", "hybrid", "elasticsearch")),
    "b": ("b", ("bm25", "hybrid", "elasticsearch")),
    "index_type": ("index_type", ("dense", "hybrid")),
    "es_url": ("url", ("elasticsearch",)),
    "es_index": ("index", ("elasticsearch",)),
    "es_bulk_size": ("bulk_size", ("elasticsearch",)),
    "rrf_k": ("rrf_k", ("hybrid", "elasticsearch")),
    "fusion_depth": ("fusion_depth", ("hybrid", "elasticsearch")),
}
"""``index``'s settings flags -> :func:`~rerank_pipeline.first_stage.build_first_stage` options."""


@dataclass(frozen=True)
class FirstStageOptions:
    """Which first stage, and how it is built: ``--first-stage``, ``--embedding-model``, ``--index-dir``,
    ``--candidates`` and the build settings (``index``'s flags, or ``eval --first-stage-option KEY=VALUE``).

    :param kind: One of :data:`FIRST_STAGE_KINDS`, ``"published"`` (eval) or ``None`` (the caller's default).
    :param embedding_model: Bi-encoder of a dense/hybrid first stage (or kNN on Elasticsearch).
    :param index_dir: Index folder to build, reuse or keep.
    :param candidates: First-stage depth (``None``: the caller's default).
    :param settings: Further :func:`~rerank_pipeline.first_stage.build_first_stage` keyword options.
    :raises ValueError: An unknown kind.
    """

    kind: str | None = None
    embedding_model: str | None = None
    index_dir: str | None = None
    candidates: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind != PUBLISHED:
            object.__setattr__(self, "kind", canonical_first_stage(self.kind))

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: dict[str, Any] | None = None) -> FirstStageOptions:
        """The options parsed by :func:`add_first_stage_options` / :func:`add_index_settings` /
        :func:`add_candidates_option` (missing ones are ``None``). ``settings`` (e.g. ``eval``'s parsed
        ``--first-stage-option`` pairs) is added to those of :func:`add_index_settings`.

        :raises ValueError: A settings flag that does not apply to the chosen first stage, or a size below 1.
        """
        options = cls(kind=getattr(args, "first_stage", None), embedding_model=getattr(args, "embedding_model", None),
                      index_dir=getattr(args, "index_dir", None), candidates=getattr(args, "candidates", None))
        return cls(**{**asdict(options), "settings": {**options._index_settings(args), **(settings or {})}})

    def _index_settings(self, args: argparse.Namespace) -> dict[str, Any]:
        chosen = {dest: getattr(args, dest) for dest in INDEX_SETTINGS if getattr(args, dest, None) is not None}
        fused = self.kind == "hybrid" or (self.kind == "elasticsearch" and self.embedding_model)
        if any(dest in chosen for dest in ("rrf_k", "fusion_depth")) and not fused:
            raise ValueError("--rrf-k and --fusion-depth apply to --first-stage hybrid, or elasticsearch with "
                             "--embedding-model")
        settings = {}
        for dest, value in chosen.items():
            option, kinds = INDEX_SETTINGS[dest]
            if self.kind not in kinds:
                if dest == "es_bulk_size":
                    raise ValueError("--es-bulk-size applies to --first-stage elasticsearch only")
                continue  # a setting of a side this first stage does not have is ignored
            if dest == "es_bulk_size" and value <= 0:
                raise ValueError(f"--es-bulk-size must be positive, got {value}")
            if value or dest not in ("es_url", "es_index", "index_type"):
                settings[option] = value
        return settings

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~rerank_pipeline.first_stage.build_first_stage` after the kind."""
        return {"index_dir": self.index_dir, "embedding_model": self.embedding_model, **self.settings}


def add_first_stage_options(parser, *, kinds: tuple[str, ...] = FIRST_STAGE_KINDS, default: str | None = "bm25",
                            help: str = "first stage", embedding_help: str | None = None,
                            deprecated_backend: bool = False) -> None:
    """``--first-stage`` (one of ``kinds``; the aliases of :data:`FIRST_STAGE_ALIASES` too when ``kinds`` holds
    their kind) and ``--embedding-model``. ``--backend`` stays a deprecated alias of ``--first-stage`` when
    ``deprecated_backend`` (``index``)."""
    accepted = (*kinds, *(alias for alias, kind in FIRST_STAGE_ALIASES.items() if kind in kinds))
    action = parser.add_argument("--first-stage", choices=accepted, default=default, metavar="{" + ",".join(kinds) + "}",
                                 help=help)
    if deprecated_backend:
        add_deprecated_alias(parser, "--backend", action)
    parser.add_argument("--embedding-model", default=None,
                        help=embedding_help or "sentence-transformers model (folder or Hub id) of a dense/hybrid "
                                               "first stage")


def add_index_settings(parser) -> None:
    """``index``'s build settings: BM25 ``--k1``/``--b``, ``--index-type``, RRF ``--rrf-k``/``--fusion-depth``,
    Elasticsearch ``--es-url``/``--es-index``/``--es-bulk-size`` (see :data:`INDEX_SETTINGS`)."""
    parser.add_argument("--index-type", help="FAISS index: a faiss.index_factory string (Flat, HNSW32, IVF1024,Flat, "
                        "IVF4096,PQ48, SQ8, ...) or flat/hnsw/ivf (default: flat, exact); recorded in index.json")
    parser.add_argument("--rrf-k", type=int, help="hybrid (or elasticsearch with --embedding-model): RRF's k "
                        "(default 60), recorded in index.json and exported pipelines")
    parser.add_argument("--fusion-depth", type=int, help="hybrid (or elasticsearch with --embedding-model): RRF's "
                        "per-side depth, documents of each side fused (default 100)")
    parser.add_argument("--k1", type=float, help="BM25 k1 (default 0.9)")
    parser.add_argument("--b", type=float, help="BM25 b (default 0.4)")
    parser.add_argument("--es-url", help="Elasticsearch URL (default: $ELASTICSEARCH_URL or http://localhost:9200)")
    parser.add_argument("--es-index", help="Elasticsearch index name (default: rerank-pipeline)")
    parser.add_argument("--es-bulk-size", type=int, help="Elasticsearch: documents per bulk request (default 500); "
                        "a rerun skips those already indexed unchanged")
