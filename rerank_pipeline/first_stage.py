"""First-stage retrieval behind one small interface, for batch use (evaluation, hard-negative mining).

:func:`build_first_stage` returns a :class:`FirstStage`: ``index(documents)`` then
``retrieve({qid: text}, top_k)`` -> ``{qid: [(doc_id, score), ...]}`` best first.
Kinds: ``"bm25"`` (embedded, the default), ``"dense"`` (sentence-transformers + FAISS),
``"hybrid"`` (reciprocal rank fusion of both) and ``"elasticsearch"``. With
``index_dir`` the index is saved there after each ``index()`` call and reopened
by later calls (its ``index.json`` records the backend and settings).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from haystack import Document
from haystack.document_stores.types import DuplicatePolicy
from huggingface_hub.utils import are_progress_bars_disabled

from rerank_pipeline.components.bm25 import DEFAULT_META_FIELDS, EmbeddedBM25DocumentStore, document_text
from rerank_pipeline.components.faiss_store import FAISSDocumentStore
from rerank_pipeline.components.index_folder import atomic_directory, read_settings, write_settings

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RRF_K = 60
KINDS = ("bm25", "dense", "hybrid", "elasticsearch")
KIND_ALIASES = {"embedded": "bm25", "faiss": "dense"}


@runtime_checkable
class FirstStage(Protocol):
    """A first-stage retriever: index documents once, retrieve candidates for many queries at once."""

    name: str

    def index(self, documents: list[Document]) -> None:
        """Add documents; a document whose id is already indexed is replaced (idempotent by id)."""

    def retrieve(self, queries: dict[str, str], top_k: int = 100) -> dict[str, list[tuple[str, float]]]:
        """``{qid: [(doc_id, score), ...]}``, best first, at most ``top_k`` per query."""


def reciprocal_rank_fusion(
    rankings: list[list[tuple[str, float]]], top_k: int, k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse ranked lists: a document scores ``sum(1 / (k + rank))`` over the lists (rank from 1).

    This orders documents as Haystack's ``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` does.
    """
    scores: dict[str, float] = defaultdict(float)
    for ranking in rankings:
        for rank, (doc_id, _) in enumerate(ranking, start=1):
            scores[doc_id] += 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return fused[:top_k]


class SentenceEncoder:
    """Batch text encoder over the sentence-transformers backend that Haystack's embedders share."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 64, device: str | None = None):
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self._backend = None

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Unit-length float32 embeddings, one row a text."""
        if self._backend is None:
            from haystack_integrations.components.embedders.sentence_transformers.embedding_backend.backend import (
                _SentenceTransformersEmbeddingBackendFactory,
            )

            try:
                self._backend = _SentenceTransformersEmbeddingBackendFactory.get_embedding_backend(
                    model=self.model, device=self.device
                )
            except OSError as error:
                raise RuntimeError(
                    f"cannot load embedding model {self.model!r} (a Hub id needs network or a cached copy; "
                    f"a local sentence-transformers folder works offline): {str(error).splitlines()[0]}"
                ) from error
        if not texts:
            return np.zeros((0, self._backend.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self._backend.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        ).astype(np.float32)


class BM25FirstStage:
    """Embedded BM25 (:class:`EmbeddedBM25DocumentStore`) as a :class:`FirstStage`."""

    name = "bm25"

    def __init__(self, store: EmbeddedBM25DocumentStore, index_dir: str | None = None):
        self.store = store
        self.index_dir = index_dir

    def index(self, documents: list[Document]) -> None:
        """Add or replace documents; save to ``index_dir`` when set."""
        self.store.write_documents(list(documents), policy=DuplicatePolicy.OVERWRITE)
        if self.index_dir:
            self.store.save(self.index_dir)

    def retrieve(self, queries: dict[str, str], top_k: int = 100) -> dict[str, list[tuple[str, float]]]:
        """Batch BM25 search."""
        results = self.store.search_ids(list(queries.values()), top_k=top_k)
        return dict(zip(queries, results))


class DenseFirstStage:
    """Sentence-transformers embeddings searched in a :class:`FAISSDocumentStore`, as a :class:`FirstStage`."""

    name = "dense"

    def __init__(
        self,
        store: FAISSDocumentStore,
        encoder: SentenceEncoder,
        index_dir: str | None = None,
        meta_fields_to_embed: list[str] | tuple[str, ...] = DEFAULT_META_FIELDS,
    ):
        self.store = store
        self.encoder = encoder
        self.index_dir = index_dir
        self.meta_fields_to_embed = list(meta_fields_to_embed)

    def index(self, documents: list[Document]) -> None:
        """Embed and store documents whose id, text or meta is new; save to ``index_dir`` when set."""
        stored = {doc.id: doc for doc in self.store.filter_documents()}
        # meta counts too: a changed title changes the embedded text, and other meta must not stay stale in the store
        fresh = [
            doc
            for doc in documents
            if doc.id not in stored or stored[doc.id].content != doc.content or stored[doc.id].meta != doc.meta
        ]
        if fresh:
            vectors = self.encoder.encode(
                [document_text(doc, self.meta_fields_to_embed) for doc in fresh], progress=len(fresh) > 1000 and not are_progress_bars_disabled(),
            )
            embedded = [
                Document.from_dict({**doc.to_dict(flatten=False), "embedding": vector.tolist()})
                for doc, vector in zip(fresh, vectors)
            ]
            self.store.write_documents(embedded, policy=DuplicatePolicy.OVERWRITE)
        if self.index_dir:
            self.save(self.index_dir)

    def save(self, index_dir: str) -> None:
        """Write the FAISS index (its settings include the model and embedded meta fields)."""
        with atomic_directory(index_dir) as staging:
            self.write_to(staging)

    def write_to(self, folder: Path) -> None:
        """Write into an empty folder (not atomic)."""
        self.store.embedding_model = self.encoder.model
        self.store.write_to(folder)
        settings = read_settings(folder)
        settings["meta_fields_to_embed"] = self.meta_fields_to_embed
        write_settings(folder, settings)

    def retrieve(self, queries: dict[str, str], top_k: int = 100) -> dict[str, list[tuple[str, float]]]:
        """Batch-encode the queries, then one FAISS search for all of them."""
        vectors = self.encoder.encode(list(queries.values()))
        return dict(zip(queries, self.store.search_ids(vectors, top_k=top_k)))


class HybridFirstStage:
    """Reciprocal rank fusion of a BM25 and a dense first stage.

    Each side retrieves ``max(top_k, fusion_depth)`` candidates before fusion.
    """

    name = "hybrid"

    def __init__(
        self,
        bm25: BM25FirstStage,
        dense: DenseFirstStage,
        index_dir: str | None = None,
        rrf_k: int = RRF_K,
        fusion_depth: int = 100,
    ):
        self.bm25 = bm25
        self.dense = dense
        self.index_dir = index_dir
        self.rrf_k = rrf_k
        self.fusion_depth = fusion_depth

    def index(self, documents: list[Document]) -> None:
        """Index into both sides; save both into ``index_dir`` (``bm25/`` and ``dense/``) when set."""
        self.bm25.store.write_documents(list(documents), policy=DuplicatePolicy.OVERWRITE)
        self.dense.index_dir, saved_dir = None, self.dense.index_dir
        self.dense.index(documents)
        self.dense.index_dir = saved_dir
        if self.index_dir:
            with atomic_directory(self.index_dir) as staging:
                settings = {"backend": "hybrid", "format_version": 1, "rrf_k": self.rrf_k, "fusion_depth": self.fusion_depth}
                write_settings(staging, settings)
                (staging / "bm25").mkdir()
                self.bm25.store.write_to(staging / "bm25")
                (staging / "dense").mkdir()
                self.dense.write_to(staging / "dense")
            self.bm25.store.index_dir = str(Path(self.index_dir) / "bm25")
            self.dense.store.index_dir = str(Path(self.index_dir) / "dense")

    def retrieve(self, queries: dict[str, str], top_k: int = 100) -> dict[str, list[tuple[str, float]]]:
        """Fuse the BM25 and dense rankings of every query."""
        depth = max(top_k, self.fusion_depth)
        return self.fuse(self.bm25.retrieve(queries, top_k=depth), self.dense.retrieve(queries, top_k=depth), top_k)

    def fuse(
        self, sparse: dict[str, list[tuple[str, float]]], dense: dict[str, list[tuple[str, float]]], top_k: int = 100
    ) -> dict[str, list[tuple[str, float]]]:
        """RRF of each query's BM25 and dense rankings (each cut to ``max(top_k, fusion_depth)``), as ``retrieve``."""
        depth = max(top_k, self.fusion_depth)
        return {
            qid: reciprocal_rank_fusion([sparse[qid][:depth], dense[qid][:depth]], top_k=top_k, k=self.rrf_k)
            for qid in sparse
        }


def _canonical_kind(kind: str) -> str:
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown first stage {kind!r}; choose one of {', '.join(KINDS)} (or faiss, embedded)")
    return kind


def _settings_kind(settings: dict[str, Any]) -> str:
    return {"bm25": "bm25", "faiss": "dense", "hybrid": "hybrid", "elasticsearch": "elasticsearch"}.get(
        settings.get("backend"), str(settings.get("backend"))
    )


def _bm25(index_dir: str | None, options: dict[str, Any]) -> BM25FirstStage:
    store = EmbeddedBM25DocumentStore(
        index_dir=index_dir,
        k1=options.pop("k1", None),
        b=options.pop("b", None),
        analyzer=options.pop("analyzer", None),
        meta_fields_to_index=options.pop("meta_fields_to_index", None),
    )
    return BM25FirstStage(store, index_dir=index_dir)


def _dense(index_dir: str | None, embedding_model: str | None, options: dict[str, Any]) -> DenseFirstStage:
    settings = read_settings(index_dir) if index_dir else None
    recorded = settings.get("embedding_model") if settings else None
    if embedding_model and recorded and embedding_model != recorded:
        raise ValueError(
            f"the dense index in {index_dir} was embedded with {recorded!r}, not {embedding_model!r}; re-index to switch"
        )
    model = embedding_model or recorded or DEFAULT_EMBEDDING_MODEL
    store_options = {
        key: options.pop(key)
        for key in ("index_type", "hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "use_gpu")
        if key in options
    }
    store = FAISSDocumentStore(index_dir=index_dir, embedding_model=model, **store_options)
    encoder = SentenceEncoder(model, batch_size=options.pop("batch_size", 64), device=options.pop("device", None))
    fields = options.pop("meta_fields_to_embed", None)
    if fields is None:
        fields = settings.get("meta_fields_to_embed", DEFAULT_META_FIELDS) if settings else DEFAULT_META_FIELDS
    return DenseFirstStage(store, encoder, index_dir=index_dir, meta_fields_to_embed=fields)


FLOAT_OPTIONS = ("k1", "b")
INT_OPTIONS = ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "batch_size", "rrf_k", "fusion_depth")


def _coerce_numbers(options: dict[str, Any]) -> dict[str, Any]:
    """Options may come from the command line as strings ("k1=0.9"): convert the numeric ones."""
    coerced = dict(options)
    for key, value in options.items():
        if isinstance(value, str) and key in FLOAT_OPTIONS + INT_OPTIONS:
            try:
                coerced[key] = float(value) if key in FLOAT_OPTIONS else int(value)
            except ValueError:
                raise ValueError(f"option {key} must be a number, got {value!r}") from None
    return coerced


def build_first_stage(
    kind: str = "bm25", *, index_dir: str | Path | None = None, embedding_model: str | None = None, **options: Any
) -> FirstStage:
    """A :class:`FirstStage` of the given kind, reopening ``index_dir`` when it holds an index.

    Options: bm25 ``k1``, ``b``, ``analyzer``, ``meta_fields_to_index``; dense ``index_type``
    (flat|hnsw|ivf), ``hnsw_m``, ``ef_search``, ``nlist``, ``nprobe``, ``use_gpu``, ``batch_size``,
    ``device``, ``meta_fields_to_embed``; hybrid both plus ``rrf_k``, ``fusion_depth``;
    elasticsearch ``url``, ``index``, ``analyzer``, ``k1``, ``b`` (see
    :mod:`rerank_pipeline.components.elasticsearch`).
    """
    kind = _canonical_kind(kind)
    index_dir = str(index_dir) if index_dir is not None else None
    settings = read_settings(index_dir) if index_dir else None
    if settings is not None and _settings_kind(settings) != kind:
        raise ValueError(f"{index_dir} holds a {_settings_kind(settings)!r} index, not {kind!r}")
    options = _coerce_numbers(options)
    if kind == "bm25":
        stage: FirstStage = _bm25(index_dir, options)
    elif kind == "dense":
        stage = _dense(index_dir, embedding_model, options)
    elif kind == "hybrid":
        sub = (lambda name: str(Path(index_dir) / name)) if settings is not None else (lambda name: None)
        bm25 = _bm25(sub("bm25"), options)
        dense = _dense(sub("dense"), embedding_model, options)
        bm25.index_dir = dense.index_dir = None  # the hybrid stage saves both
        stage = HybridFirstStage(
            bm25,
            dense,
            index_dir=index_dir,
            rrf_k=options.pop("rrf_k", (settings or {}).get("rrf_k", RRF_K)),
            fusion_depth=options.pop("fusion_depth", (settings or {}).get("fusion_depth", 100)),
        )
    else:
        from rerank_pipeline.components.elasticsearch import ElasticsearchFirstStage

        stage = ElasticsearchFirstStage.create(index_dir=index_dir, settings=settings, options=options)
    if options:
        raise ValueError(f"unknown options for the {kind} first stage: {sorted(options)}")
    return stage


def open_first_stage(index_dir: str | Path, **options: Any) -> FirstStage:
    """Reopen the index in ``index_dir`` with the backend its ``index.json`` records."""
    settings = read_settings(index_dir)
    if settings is None:
        raise FileNotFoundError(f"no index in {index_dir} (index.json missing); build one with `rerank-pipeline index`")
    return build_first_stage(_settings_kind(settings), index_dir=index_dir, **options)
