"""Thin helpers on elasticsearch-haystack: an index that ranks like the embedded BM25, optionally kNN on a
``dense_vector`` field (hybrid on the cluster), bulk indexing that resumes, clear errors.

Connection settings come from the environment: ``ELASTICSEARCH_URL`` (default
``http://localhost:9200``) and, for secured clusters, ``ELASTIC_API_KEY`` (plus
``ELASTIC_API_KEY_ID`` when the key is not base64 ``id:secret``). Credentials
stay in environment variables (Haystack ``Secret`` objects); they are never put
into URLs, logs, index folders or serialized pipelines.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable
from urllib.parse import urlsplit

from haystack import Document
from haystack.document_stores.types import DuplicatePolicy
from huggingface_hub.utils import are_progress_bars_disabled
from tqdm.auto import tqdm

from rerank_pipeline.components.bm25 import DEFAULT_B, DEFAULT_K1, DEFAULT_META_FIELDS, Analyzer
from rerank_pipeline.components.index_folder import write_settings

logger = logging.getLogger(__name__)

BACKEND_NAME = "elasticsearch"
DEFAULT_URL = "http://localhost:9200"
ANALYZER_NAME = "rerank_bm25"


DEFAULT_BULK_SIZE = 500
EMBEDDING_FIELD = "embedding"  # the field elasticsearch-haystack writes and its kNN search reads
SIMILARITY = "cosine"  # embeddings are normalized, as on the FAISS side


def _require_integration():
    try:
        from haystack_integrations.components.retrievers.elasticsearch import (
            ElasticsearchBM25Retriever,
            ElasticsearchEmbeddingRetriever,
        )
        from haystack_integrations.document_stores.elasticsearch import ElasticsearchDocumentStore
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("Elasticsearch support needs: pip install 'rerank-pipeline[elasticsearch]'") from error
    return ElasticsearchDocumentStore, ElasticsearchBM25Retriever, ElasticsearchEmbeddingRetriever


def elasticsearch_url(url: str | None = None) -> str:
    """The server URL: ``url``, else ``$ELASTICSEARCH_URL``, else localhost; URLs with credentials are refused."""
    url = url or os.environ.get("ELASTICSEARCH_URL") or DEFAULT_URL
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(
            "the Elasticsearch URL must not contain credentials; set ELASTIC_API_KEY in the environment instead"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # "user:secret@host" without a scheme parses with no username: never echo what precedes an '@'
        shown = "<redacted>@" + url.rsplit("@", 1)[1] if "@" in url else url
        raise ValueError(f"not an http(s) URL for Elasticsearch: {shown!r}")
    return url


def index_settings(analyzer: Analyzer | None = None, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> dict[str, Any]:
    """Index settings whose analysis chain and BM25 similarity mirror the embedded store.

    The embedded analyzer keeps runs of 2+ word characters, lowercases, drops stop
    words and applies the Snowball stemmer; here: a ``pattern`` tokenizer splitting
    on non-word characters (Unicode classes), ``lowercase``, a ``length`` filter
    (min 2), ``stop`` with the same word list, ``snowball``. Lucene's BM25 uses
    ``k1`` and ``b``. Remaining differences: Lucene stores document lengths lossily.
    """
    analyzer = analyzer or Analyzer()
    filters = []
    if analyzer.lowercase:
        filters.append("lowercase")
    filters.append("rerank_min_length")
    token_filters: dict[str, Any] = {"rerank_min_length": {"type": "length", "min": 2}}
    if analyzer.stopword_list():
        token_filters["rerank_stop"] = {"type": "stop", "stopwords": analyzer.stopword_list()}
        filters.append("rerank_stop")
    if analyzer.stemmer:
        token_filters["rerank_snowball"] = {"type": "snowball", "language": analyzer.stemmer.capitalize()}
        filters.append("rerank_snowball")
    if analyzer.token_pattern != Analyzer().token_pattern:
        logger.warning("a custom token_pattern cannot be mirrored exactly in Elasticsearch; using \\W+ splitting")
    return {
        "index": {
            "similarity": {"default": {"type": "BM25", "k1": k1, "b": b}},
            "query": {"default_field": ["content"]},
        },
        "analysis": {
            "tokenizer": {
                "rerank_words": {"type": "pattern", "pattern": "\\W+", "flags": "UNICODE_CHARACTER_CLASS"}
            },
            "filter": token_filters,
            "analyzer": {ANALYZER_NAME: {"type": "custom", "tokenizer": "rerank_words", "filter": filters}},
        },
    }


def index_mapping(
    meta_fields_to_index: list[str] | tuple[str, ...] = DEFAULT_META_FIELDS, embedding_dims: int | None = None
) -> dict[str, Any]:
    """Mapping: ``content`` analyzed like the embedded store; indexed meta fields (the title) copied into it; with
    ``embedding_dims``, an indexed ``dense_vector`` ``embedding`` field of that many dims (cosine, for kNN)."""
    properties: dict[str, Any] = {"content": {"type": "text", "analyzer": ANALYZER_NAME}}
    for name in meta_fields_to_index:
        properties[name] = {"type": "keyword", "ignore_above": 8191, "copy_to": "content"}
    if embedding_dims:
        properties[EMBEDDING_FIELD] = {
            "type": "dense_vector", "dims": int(embedding_dims), "index": True, "similarity": SIMILARITY
        }
    return {
        "properties": properties,
        "dynamic_templates": [
            {"strings": {"path_match": "*", "match_mapping_type": "string", "mapping": {"type": "keyword"}}}
        ],
    }


def _connection_error(url: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"cannot reach Elasticsearch at {url} ({type(error).__name__}); start one with "
        f"`docker compose up -d elasticsearch` or set ELASTICSEARCH_URL"
    )


def _create_index_if_missing(client, index: str, settings: dict[str, Any], mapping: dict[str, Any]) -> None:
    if not client.indices.exists(index=index):
        client.indices.create(index=index, settings=settings, mappings=mapping)


def check_embedding_field(index: str, mapping: dict[str, Any], embedding_dims: int | None) -> None:
    """Raise ``ValueError`` when an existing index's ``mapping`` does not fit: a dense first stage needs a
    ``dense_vector`` ``embedding`` field of ``embedding_dims``; a BM25-only one must not write into a dense index
    (its documents would have no embedding, and kNN would never find them)."""
    field = mapping.get("properties", {}).get(EMBEDDING_FIELD)
    if embedding_dims:
        if not field or field.get("type") != "dense_vector" or field.get("dims") != embedding_dims:
            found = f"{field.get('type')} of {field.get('dims')} dims" if field else "no such field"
            raise ValueError(
                f"Elasticsearch index {index!r} has no dense_vector {EMBEDDING_FIELD!r} field of {embedding_dims} "
                f"dims ({found}); index into a new --es-index, or delete this one"
            )
    elif field and field.get("type") == "dense_vector":
        raise ValueError(
            f"Elasticsearch index {index!r} holds embeddings ({field.get('dims')} dims): pass the --embedding-model "
            f"it was built with, or use another --es-index"
        )


def _mapping_of(client, index: str) -> dict[str, Any]:
    response = client.indices.get_mapping(index=index)
    return next(iter(response.values()))["mappings"]  # keyed by the concrete index (``index`` may be an alias)


def open_document_store(
    index: str = "rerank-pipeline",
    *,
    url: str | None = None,
    analyzer: Analyzer | dict[str, Any] | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    meta_fields_to_index: list[str] | tuple[str, ...] = DEFAULT_META_FIELDS,
    embedding_dims: int | None = None,
    request_timeout: float = 30.0,
):
    """Check the server, create ``index`` with our analyzer and BM25 settings (and a ``dense_vector`` field of
    ``embedding_dims``) if missing, check an existing index's embedding field, return the store."""
    store_cls, _, _ = _require_integration()
    from elastic_transport import TransportError
    from elasticsearch import ApiError, Elasticsearch

    url = elasticsearch_url(url)
    analyzer = analyzer if isinstance(analyzer, Analyzer) else Analyzer.from_dict(analyzer)
    mapping = index_mapping(meta_fields_to_index, embedding_dims)
    store = store_cls(hosts=url, index=index, custom_mapping=mapping, embedding_similarity_function=SIMILARITY,
                      request_timeout=request_timeout)
    # The store's private _handle_auth resolves its API key secrets exactly as its own client does; the public
    # store.client would create the index (with the integration's settings, not ours) before it is checked here.
    client = Elasticsearch(url, api_key=store._handle_auth(), request_timeout=request_timeout, max_retries=0)
    try:
        client.info()
        _create_index_if_missing(client, index, index_settings(analyzer, k1, b), mapping)
        check_embedding_field(index, _mapping_of(client, index), embedding_dims)
        store.count_documents()  # the store's own client connects now, so later errors are not connection errors
    except (TransportError, ConnectionError, OSError) as error:
        raise _connection_error(url, error) from None
    except ApiError as error:
        raise RuntimeError(f"Elasticsearch at {url} refused the request: {error.meta.status} {error.message}") from None
    finally:
        client.close()
    return store


def index_name(store) -> str:
    """The index an ``ElasticsearchDocumentStore`` reads and writes (from its public serialization)."""
    return store.to_dict()["init_parameters"]["index"]


def unchanged_ids(store, documents: list[Document]) -> set[str]:
    """The ids of ``documents`` the index already holds with the same content and meta: one ``mget`` (without the
    embeddings) for the batch, so a rerun after a failure neither re-embeds nor rewrites them."""
    if not documents:
        return set()
    response = store.client.mget(index=index_name(store), ids=[doc.id for doc in documents],
                                 source_excludes=[EMBEDDING_FIELD])
    stored = {hit["_id"]: Document.from_dict(hit["_source"]) for hit in response["docs"] if hit.get("found")}
    return {doc.id for doc in documents
            if doc.id in stored and stored[doc.id].content == doc.content and stored[doc.id].meta == doc.meta}


def bulk_index(store, documents: list[Document], batch_size: int = DEFAULT_BULK_SIZE, progress: bool = True,
               embed: Callable[[list[Document]], list[Document]] | None = None, skip_unchanged: bool = True) -> int:
    """Write documents in bulk batches of ``batch_size`` with a progress bar; returns how many were written.

    Ids are the document ids and an existing id is replaced (``DuplicatePolicy.OVERWRITE``), so a rerun after a
    failure cannot duplicate documents; with ``skip_unchanged`` the documents already stored with the same content
    and meta are skipped (:func:`unchanged_ids`) before ``embed`` (which adds embeddings) runs on the rest.
    """
    if batch_size <= 0:
        raise ValueError(f"the bulk batch size must be positive, got {batch_size}")
    written = skipped = 0
    with tqdm(total=len(documents), desc="indexing into Elasticsearch", unit="doc", disable=not progress) as bar:
        for start in range(0, len(documents), batch_size):
            batch = documents[start : start + batch_size]
            known = unchanged_ids(store, batch) if skip_unchanged else set()
            fresh = [doc for doc in batch if doc.id not in known]
            if fresh:
                written += store.write_documents(embed(fresh) if embed else fresh, policy=DuplicatePolicy.OVERWRITE,
                                                 refresh=False)
            skipped += len(batch) - len(fresh)
            bar.update(len(batch))
            if skipped:
                bar.set_postfix(unchanged=skipped)
    store.client.indices.refresh(index=index_name(store))
    if skipped:
        logger.info("%d of %d documents were already indexed unchanged and were skipped", skipped, len(documents))
    return written


def bm25_retriever(store, top_k: int = 10):
    """An ``ElasticsearchBM25Retriever`` without fuzzy matching, so it ranks like the embedded BM25."""
    _, retriever_cls, _ = _require_integration()
    return retriever_cls(document_store=store, top_k=top_k, fuzziness="0")


def embedding_retriever(store, top_k: int = 10, num_candidates: int | None = None):
    """An ``ElasticsearchEmbeddingRetriever``: approximate kNN on the ``embedding`` field (``num_candidates`` per
    shard, default elasticsearch-haystack's ``10 * top_k``)."""
    _, _, retriever_cls = _require_integration()
    return retriever_cls(document_store=store, top_k=top_k, num_candidates=num_candidates)


def embedding_dimension(model: str) -> int:
    """The embedding size of a sentence-transformers model: loads it and embeds one probe document."""
    from rerank_pipeline.first_stage import document_embedder

    probe = document_embedder(model, []).run(documents=[Document(content="dimension probe")])["documents"][0]
    return len(probe.embedding)


def _first_set(*values: Any) -> Any:
    """The first value that is not None (0.0 is a valid BM25 ``b`` or ``k1``, so ``or`` would drop it)."""
    return next(value for value in values if value is not None)


class ElasticsearchSide:
    """Elasticsearch as a side of :class:`rerank_pipeline.first_stage.FirstStage`: the store, bulk writes, the
    retrievers (BM25; with an embedding model also kNN, which the first stage fuses by RRF); the index folder only
    records where the index lives and how to rebuild the pipeline."""

    name = "elasticsearch"

    def __init__(self, store, settings: dict[str, Any]):
        self.store = store
        self.settings = settings

    @property
    def dense(self) -> bool:
        """Whether documents carry embeddings and retrieval adds kNN (hybrid on the cluster)."""
        return bool(self.settings.get("embedding_model"))

    @classmethod
    def create(cls, settings: dict[str, Any] | None, options: dict[str, Any],
               embedding_model: str | None = None) -> "ElasticsearchSide":
        """Open (or create) the index named by ``options``/the recorded ``settings``; pops the options it uses.

        ``embedding_model`` (or one recorded) makes the side dense: its dims are recorded (measured by loading the
        model once, when not recorded), and the dense options (``meta_fields_to_embed``, ``batch_size``,
        ``device``, ``num_candidates``, ``rrf_k``, ``fusion_depth``) apply; without it they are left in ``options``
        (so the caller reports them as unknown).
        """
        recorded = settings or {}
        config = {
            "backend": BACKEND_NAME,
            "format_version": 1,
            "url": elasticsearch_url(options.pop("url", None) or recorded.get("url")),
            "index": options.pop("index", None) or recorded.get("index") or "rerank-pipeline",
            "analyzer": Analyzer.from_dict(options.pop("analyzer", None) or recorded.get("analyzer")).to_dict(),
            "k1": _first_set(options.pop("k1", None), recorded.get("k1"), DEFAULT_K1),
            "b": _first_set(options.pop("b", None), recorded.get("b"), DEFAULT_B),
            "meta_fields_to_index": options.pop("meta_fields_to_index", None)
            or recorded.get("meta_fields_to_index")
            or list(DEFAULT_META_FIELDS),
            "bulk_size": _first_set(options.pop("bulk_size", None), recorded.get("bulk_size"), DEFAULT_BULK_SIZE),
        }
        config.update(_dense_config(recorded, options, embedding_model))
        store = open_document_store(
            config["index"],
            url=config["url"],
            analyzer=config["analyzer"],
            k1=config["k1"],
            b=config["b"],
            meta_fields_to_index=config["meta_fields_to_index"],
            embedding_dims=config.get("embedding_dims"),
        )
        return cls(store, config)

    def write(self, documents: list[Document]) -> None:
        """Bulk-write documents (replacing by id, skipping those stored unchanged), embedding them when dense."""
        embed = None
        if self.dense:
            from rerank_pipeline.first_stage import document_embedder

            embedders: list = []  # loaded on the first batch with new documents, then reused

            def embed(batch: list[Document]) -> list[Document]:
                if not embedders:
                    embedders.append(document_embedder(
                        self.settings["embedding_model"], self.settings["meta_fields_to_embed"],
                        self.settings["batch_size"], self.settings.get("device")))
                return embedders[0].run(documents=batch)["documents"]

        bulk_index(self.store, list(documents), batch_size=self.settings["bulk_size"],
                   progress=not are_progress_bars_disabled(), embed=embed)

    def write_to(self, folder) -> None:
        """Record the index (url, name, BM25 and dense settings, document count) in ``folder``."""
        recorded = {key: value for key, value in self.settings.items() if key != "device"}
        write_settings(folder, {**recorded, "documents": self.store.count_documents()})

    def reopen(self, index_dir: str) -> None:
        """Nothing to do: the documents live on the server."""

    def add_to(self, pipeline, top_k: int, prefix: str = "") -> list[str]:
        """Add elasticsearch-haystack's BM25 retriever (no fuzziness) and, when dense, Haystack's query embedder and
        the kNN retriever; returns the retrievers' names (the first stage fuses two by RRF)."""
        pipeline.add_component(f"{prefix}es_retriever", bm25_retriever(self.store, top_k=top_k))
        if not self.dense:
            return [f"{prefix}es_retriever"]
        from rerank_pipeline.first_stage import text_embedder

        settings = self.settings
        embedder = text_embedder(settings["embedding_model"], settings["batch_size"], settings.get("device"))
        retriever = embedding_retriever(self.store, top_k=top_k, num_candidates=settings.get("num_candidates"))
        pipeline.add_component(f"{prefix}query_embedder", embedder)
        pipeline.add_component(f"{prefix}es_dense_retriever", retriever)
        pipeline.connect(f"{prefix}query_embedder.embedding", f"{prefix}es_dense_retriever.query_embedding")
        return [f"{prefix}es_retriever", f"{prefix}es_dense_retriever"]


def _dense_config(recorded: dict[str, Any], options: dict[str, Any], embedding_model: str | None) -> dict[str, Any]:
    """The dense settings of an Elasticsearch side (empty when it has no embedding model); pops their options."""
    model = recorded.get("embedding_model")
    if embedding_model and model and embedding_model != model:
        raise ValueError(f"the Elasticsearch index was embedded with {model!r}, not {embedding_model!r}; "
                         f"index into a new --es-index to switch")
    if embedding_model and recorded and not model:
        raise ValueError("this Elasticsearch index was built without embeddings; index into a new --es-index "
                         "with --embedding-model (and --rebuild) for dense retrieval")
    model = model or embedding_model
    if not model:
        return {}
    from rerank_pipeline.components.rrf import FUSION_DEPTH, RRF_K

    config = {
        "embedding_model": model,
        "embedding_dims": _embedding_dims(recorded.get("embedding_dims"), options.pop("embedding_dims", None)),
        "embedding_similarity": SIMILARITY,
        "meta_fields_to_embed": list(_first_set(options.pop("meta_fields_to_embed", None),
                                                recorded.get("meta_fields_to_embed"), DEFAULT_META_FIELDS)),
        "batch_size": _first_set(options.pop("batch_size", None), recorded.get("batch_size"), 64),
        "num_candidates": options.pop("num_candidates", None) or recorded.get("num_candidates"),
        "rrf_k": _first_set(options.pop("rrf_k", None), recorded.get("rrf_k"), RRF_K),
        "fusion_depth": _first_set(options.pop("fusion_depth", None), recorded.get("fusion_depth"), FUSION_DEPTH),
    }
    device = options.pop("device", None)
    if device:
        config["device"] = device  # this process's device: used, not recorded as a setting of the index
    if not config["embedding_dims"]:
        config["embedding_dims"] = embedding_dimension(model)
    return config


def _embedding_dims(recorded: int | None, given: int | None) -> int | None:
    if recorded and given and int(given) != int(recorded):
        raise ValueError(f"the Elasticsearch index holds {recorded}-dim embeddings, not {given}")
    return int(recorded or given) if (recorded or given) else None
