"""Assemble first stage -> ``CrossEncoderRanker`` -> top-k as an ordinary Haystack ``Pipeline``.

The first stage is read from an index folder written by ``rerank-pipeline index``
(or :func:`rerank_pipeline.first_stage.build_first_stage` with ``index_dir``):
embedded BM25, FAISS, hybrid (RRF via ``DocumentJoiner``) or Elasticsearch. The
pipeline serializes to YAML (``pipeline.dumps()``) and loads back with
``Pipeline.loads``; stores reopen their folders, so the YAML stays small.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from haystack import Document, Pipeline
from haystack.components.joiners import DocumentJoiner

from rerank_pipeline.components.bm25 import EmbeddedBM25DocumentStore, EmbeddedBM25Retriever
from rerank_pipeline.components.faiss_store import FAISSDocumentStore, FAISSEmbeddingRetriever
from rerank_pipeline.components.index_folder import read_settings, require_index
from rerank_pipeline.components.rrf import RRF_K, ReciprocalRankFusion
from rerank_pipeline.components.score_fusion import FusionChoice, RerankerScoreFusion, resolve_fusion
from rerank_pipeline.first_stage import DEFAULT_EMBEDDING_MODEL

logger = logging.getLogger(__name__)

QUERY_INPUTS = ("query", "text")


def _query_embedder(model: str):
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder

    return SentenceTransformersTextEmbedder(model=model, normalize_embeddings=True, progress_bar=False)


def _dense_parts(pipeline: Pipeline, index_dir: Path, candidates: int, prefix: str = "") -> str:
    store = FAISSDocumentStore(index_dir=index_dir)
    model = store.embedding_model or DEFAULT_EMBEDDING_MODEL
    pipeline.add_component(f"{prefix}query_embedder", _query_embedder(model))
    pipeline.add_component(f"{prefix}dense_retriever", FAISSEmbeddingRetriever(store, top_k=candidates))
    pipeline.connect(f"{prefix}query_embedder.embedding", f"{prefix}dense_retriever.query_embedding")
    return f"{prefix}dense_retriever"


def add_first_stage(pipeline: Pipeline, index_dir: str | Path, candidates: int = 100) -> str:
    """Add the first stage stored in ``index_dir``; returns the component whose ``documents`` output feeds the ranker.

    The folder is recorded as an absolute path, so the serialized pipeline opens the same index from any working
    directory (and fails naming the folder if it was moved or deleted).
    """
    index_dir = Path(index_dir).expanduser().resolve()
    require_index(index_dir)
    settings = read_settings(index_dir)
    backend = settings.get("backend")
    if backend == "bm25":
        store = EmbeddedBM25DocumentStore(index_dir=index_dir)
        pipeline.add_component("bm25_retriever", EmbeddedBM25Retriever(store, top_k=candidates))
        return "bm25_retriever"
    if backend == "faiss":
        return _dense_parts(pipeline, index_dir, candidates)
    if backend == "hybrid":
        store = EmbeddedBM25DocumentStore(index_dir=index_dir / "bm25")
        pipeline.add_component("bm25_retriever", EmbeddedBM25Retriever(store, top_k=candidates))
        dense = _dense_parts(pipeline, index_dir / "dense", candidates)
        pipeline.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=candidates))
        pipeline.connect("bm25_retriever.documents", "joiner.documents")
        pipeline.connect(f"{dense}.documents", "joiner.documents")
        return "joiner"
    if backend == "elasticsearch":
        from rerank_pipeline.components.elasticsearch import bm25_retriever, open_document_store

        store = open_document_store(
            settings["index"],
            url=settings["url"],
            analyzer=settings.get("analyzer"),
            k1=settings.get("k1", 0.9),
            b=settings.get("b", 0.4),
            meta_fields_to_index=settings.get("meta_fields_to_index", ["title"]),
        )
        pipeline.add_component("es_retriever", bm25_retriever(store, top_k=candidates))
        return "es_retriever"
    raise ValueError(f"{index_dir}: unknown backend {backend!r} in index.json")


def build_pipeline(
    index_dir: str | Path,
    *,
    ranker_model: str | None = None,
    top_k: int = 10,
    candidates: int = 100,
    ranker_options: dict[str, Any] | None = None,
    fusion: str = "model",
) -> Pipeline:
    """First stage from ``index_dir`` (``candidates`` documents) -> ``CrossEncoderRanker(ranker_model)`` -> ``top_k``.

    ``fusion`` orders the ranker's output (see :func:`~rerank_pipeline.components.score_fusion.resolve_fusion`):
    ``"model"`` (default) adds a ``RerankerScoreFusion`` with the weight of the model folder's ``fusion.json`` when
    it has one, ``"none"`` keeps the reranker's order, ``"rrf"`` adds RRF of the first stage's and the ranker's
    orders. With a fusion the ranker returns every candidate and the fusion cuts to ``top_k``.
    Without ``ranker_model`` the pipeline stops at the first stage, which then returns ``top_k`` documents.
    Run it with :func:`search`, or ``pipeline.run`` feeding the query to every input in :func:`query_inputs`.
    """
    if top_k <= 0 or candidates <= 0:
        raise ValueError(f"top_k and candidates must be positive (got {top_k}, {candidates})")
    if ranker_model and Path(ranker_model).expanduser().is_dir():  # a local folder, recorded absolute like the index
        ranker_model = str(Path(ranker_model).expanduser().resolve())
    choice = resolve_fusion(ranker_model, fusion)
    pipeline = Pipeline()
    last = add_first_stage(pipeline, index_dir, candidates=candidates if ranker_model else top_k)
    if ranker_model:
        from rerank_pipeline.components import CrossEncoderRanker

        ranker_top_k = top_k if choice.method == "none" else candidates
        pipeline.add_component("ranker", CrossEncoderRanker(model=ranker_model, top_k=ranker_top_k, **(ranker_options or {})))
        pipeline.connect(f"{last}.documents", "ranker.documents")
        add_reranker_fusion(pipeline, choice, first_stage=last, top_k=top_k, candidates=candidates)
    logger.info(choice.summary())
    return pipeline


def add_reranker_fusion(pipeline: Pipeline, choice: FusionChoice, first_stage: str, top_k: int, candidates: int) -> None:
    """Add ``choice``'s fusion (if any) as component ``fusion``, fed by ``ranker.documents`` and the first stage's
    ``documents``; its output is then the pipeline's only unconsumed ``documents`` output."""
    if choice.method == "model":
        pipeline.add_component("fusion", RerankerScoreFusion(weight=choice.weight, top_k=top_k))
        pipeline.connect("ranker.documents", "fusion.documents")
        pipeline.connect(f"{first_stage}.documents", "fusion.first_stage_documents")
    elif choice.method == "rrf":
        pipeline.add_component("fusion", ReciprocalRankFusion(rrf_k=RRF_K, fusion_depth=candidates, top_k=top_k))
        pipeline.connect(f"{first_stage}.documents", "fusion.documents")
        pipeline.connect("ranker.documents", "fusion.documents")


def query_inputs(pipeline: Pipeline, query: str) -> dict[str, dict[str, Any]]:
    """``pipeline.run`` data that sends ``query`` to every component input named ``query`` or ``text``."""
    data: dict[str, dict[str, Any]] = {}
    for name, inputs in pipeline.inputs().items():
        for input_name in inputs:
            if input_name in QUERY_INPUTS:
                data.setdefault(name, {})[input_name] = query
    return data


def search(pipeline: Pipeline, query: str) -> list[Document]:
    """Run the pipeline for one query and return the final documents, best first."""
    if not query.strip():
        raise ValueError("the query is empty")
    outputs = pipeline.run(query_inputs(pipeline, query))
    documents = [out["documents"] for out in outputs.values() if isinstance(out, dict) and "documents" in out]
    if len(documents) != 1:
        raise RuntimeError(f"expected one component to output documents, got {list(outputs)}")
    return documents[0]


TRUSTED_MODULES = ["rerank_pipeline"]


def load_pipeline(yaml_text: str) -> Pipeline:
    """``Pipeline.loads`` that trusts this package's components (Haystack's own are trusted by default).

    Elsewhere (e.g. Hayhooks) set ``HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline`` or pass
    ``allowed_modules=["rerank_pipeline"]`` to ``Pipeline.loads``.
    """
    return Pipeline.loads(yaml_text, allowed_modules=TRUSTED_MODULES)
