"""Thin helpers on elasticsearch-haystack: an index that ranks like the embedded BM25, bulk indexing, clear errors.

Connection settings come from the environment: ``ELASTICSEARCH_URL`` (default
``http://localhost:9200``) and, for secured clusters, ``ELASTIC_API_KEY`` (plus
``ELASTIC_API_KEY_ID`` when the key is not base64 ``id:secret``). Credentials
stay in environment variables (Haystack ``Secret`` objects); they are never put
into URLs, logs, index folders or serialized pipelines.
"""

from __future__ import annotations

import logging
import os
from typing import Any
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


def _require_integration():
    try:
        from haystack_integrations.components.retrievers.elasticsearch import ElasticsearchBM25Retriever
        from haystack_integrations.document_stores.elasticsearch import ElasticsearchDocumentStore
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("Elasticsearch support needs: pip install 'rerank-pipeline[elasticsearch]'") from error
    return ElasticsearchDocumentStore, ElasticsearchBM25Retriever


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


def index_mapping(meta_fields_to_index: list[str] | tuple[str, ...] = DEFAULT_META_FIELDS) -> dict[str, Any]:
    """Mapping: ``content`` analyzed like the embedded store; indexed meta fields (the title) copied into it."""
    properties: dict[str, Any] = {"content": {"type": "text", "analyzer": ANALYZER_NAME}}
    for name in meta_fields_to_index:
        properties[name] = {"type": "keyword", "ignore_above": 8191, "copy_to": "content"}
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


def open_document_store(
    index: str = "rerank-pipeline",
    *,
    url: str | None = None,
    analyzer: Analyzer | dict[str, Any] | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    meta_fields_to_index: list[str] | tuple[str, ...] = DEFAULT_META_FIELDS,
    request_timeout: float = 30.0,
):
    """Check the server, create ``index`` with our analyzer and BM25 settings if missing, return the store."""
    store_cls, _ = _require_integration()
    from elastic_transport import TransportError
    from elasticsearch import ApiError, Elasticsearch

    url = elasticsearch_url(url)
    analyzer = analyzer if isinstance(analyzer, Analyzer) else Analyzer.from_dict(analyzer)
    mapping = index_mapping(meta_fields_to_index)
    store = store_cls(hosts=url, index=index, custom_mapping=mapping, request_timeout=request_timeout)
    client = Elasticsearch(url, api_key=store._handle_auth(), request_timeout=request_timeout, max_retries=0)
    try:
        client.info()
        _create_index_if_missing(client, index, index_settings(analyzer, k1, b), mapping)
        store.count_documents()  # the store's own client connects now, so later errors are not connection errors
    except (TransportError, ConnectionError, OSError) as error:
        raise _connection_error(url, error) from None
    except ApiError as error:
        raise RuntimeError(f"Elasticsearch at {url} refused the request: {error.meta.status} {error.message}") from None
    finally:
        client.close()
    return store


def bulk_index(store, documents: list[Document], batch_size: int = 500, progress: bool = True) -> int:
    """Write documents in bulk batches (an existing id is replaced), with a progress bar; returns the count."""
    written = 0
    with tqdm(total=len(documents), desc="indexing into Elasticsearch", unit="doc", disable=not progress) as bar:
        for start in range(0, len(documents), batch_size):
            batch = documents[start : start + batch_size]
            written += store.write_documents(batch, policy=DuplicatePolicy.OVERWRITE, refresh=False)
            bar.update(len(batch))
    store.client.indices.refresh(index=store._index)
    return written


def bm25_retriever(store, top_k: int = 10):
    """An ``ElasticsearchBM25Retriever`` without fuzzy matching, so it ranks like the embedded BM25."""
    _, retriever_cls = _require_integration()
    return retriever_cls(document_store=store, top_k=top_k, fuzziness="0")


def _first_set(*values: Any) -> Any:
    """The first value that is not None (0.0 is a valid BM25 ``b`` or ``k1``, so ``or`` would drop it)."""
    return next(value for value in values if value is not None)


class ElasticsearchSide:
    """Elasticsearch BM25 as a side of :class:`rerank_pipeline.first_stage.FirstStage`: the store, bulk writes, the
    retriever; the index folder only records where the index lives."""

    name = "elasticsearch"

    def __init__(self, store, settings: dict[str, Any]):
        self.store = store
        self.settings = settings

    @classmethod
    def create(cls, settings: dict[str, Any] | None, options: dict[str, Any]) -> "ElasticsearchSide":
        """Open (or create) the index named by ``options``/the recorded ``settings``; pops the options it uses."""
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
        }
        store = open_document_store(
            config["index"],
            url=config["url"],
            analyzer=config["analyzer"],
            k1=config["k1"],
            b=config["b"],
            meta_fields_to_index=config["meta_fields_to_index"],
        )
        return cls(store, config)

    def write(self, documents: list[Document]) -> None:
        """Bulk-write documents (replacing by id)."""
        bulk_index(self.store, list(documents), progress=not are_progress_bars_disabled())

    def write_to(self, folder) -> None:
        """Record the index (url, name, BM25 settings, document count) in ``folder``."""
        write_settings(folder, {**self.settings, "documents": self.store.count_documents()})

    def reopen(self, index_dir: str) -> None:
        """Nothing to do: the documents live on the server."""

    def add_to(self, pipeline, top_k: int, prefix: str = "") -> str:
        """Add elasticsearch-haystack's BM25 retriever (no fuzziness); returns its name."""
        pipeline.add_component(f"{prefix}es_retriever", bm25_retriever(self.store, top_k=top_k))
        return f"{prefix}es_retriever"
