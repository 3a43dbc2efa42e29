"""Dense retrieval on FAISS: a document store holding embeddings, and an embedding retriever.

A small store of our own on ``faiss`` directly (faiss-haystack pins numpy < 2).
Vectors are L2-normalized and searched by inner product, i.e. cosine. ``index_type``
picks exact search (``"flat"``) or an approximate one for large corpora (``"hnsw"``
or ``"ivf"``). With faiss-gpu and a CUDA device, flat and IVF indexes search on the GPU.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.types import FilterPolicy
from haystack.utils.filters import document_matches_filter

from rerank_pipeline.components._document_store import InMemoryIndexedStore, validate_filters
from rerank_pipeline.components._store_retriever import StoreRetriever
from rerank_pipeline.components.index_folder import (
    DOCUMENTS_FILE,
    IndexFolderError,
    read_documents_jsonl,
    read_settings,
    require_index,
    write_documents_jsonl,
    write_settings,
)

logger = logging.getLogger(__name__)

BACKEND_NAME = "faiss"
INDEX_TYPES = ("flat", "hnsw", "ivf")


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 copy of ``vectors`` with unit-length rows (zero rows stay zero)."""
    vectors = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


def build_faiss_index(
    vectors: np.ndarray,
    index_type: str = "flat",
    *,
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    nlist: int | None = None,
    nprobe: int = 16,
) -> faiss.Index:
    """An inner-product FAISS index over (normalized) ``vectors``.

    ``nlist`` defaults to about 2·sqrt(n) IVF cells, capped so each cell gets ~39 training points;
    IVF centroids are trained (10 k-means rounds) on a sample of 40 points a cell.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index_type {index_type!r}; choose one of {INDEX_TYPES}")
    count, dim = vectors.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        cells = nlist or max(1, min(int(2 * np.sqrt(count)), count // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if count > 40 * cells:  # k-means on a sample: enough for the centroids, far cheaper at 1M vectors
            sample = vectors[np.random.default_rng(0).choice(count, 40 * cells, replace=False)]
        index.cp.niter = 10
        index.train(sample)
        index.nprobe = min(nprobe, cells)
    if count:
        index.add(vectors)
    return index


class FAISSDocumentStore(InMemoryIndexedStore):
    """Documents with embeddings, searched with FAISS; persisted to a folder.

    - ``index_dir``: folder to load from (when it holds an index) and to :meth:`save` to.
    - ``index_type``: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate).
    - ``hnsw_m``, ``ef_construction``, ``ef_search``, ``nlist``, ``nprobe``: ANN settings.
    - ``use_gpu``: ``"auto"`` (GPU when faiss-gpu sees CUDA), True, or False.
    - ``embedding_model``: recorded in the index settings so queries use the same model.

    Documents are written as by Haystack's ``InMemoryDocumentStore`` (``DuplicatePolicy.NONE`` refuses an id
    already stored); documents without an embedding are kept (filterable, counted) but never returned by vector
    search. Readers get the embeddings as written. With an ``index_dir``, every change is saved there before the
    call returns. The FAISS index is rebuilt lazily after replacements or deletions, and extended in place after
    additions.
    """

    def __init__(
        self,
        index_dir: str | Path | None = None,
        index_type: str = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        use_gpu: bool | str = "auto",
        embedding_model: str | None = None,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index_type {index_type!r}; choose one of {INDEX_TYPES}")
        self.index_dir = str(index_dir) if index_dir is not None else None
        self.index_type = index_type
        self.ann_settings = {
            "hnsw_m": hnsw_m,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
            "nlist": nlist,
            "nprobe": nprobe,
        }
        self.use_gpu = use_gpu
        self.embedding_model = embedding_model
        self._init_document_store()
        self._rows: dict[str, int] = {}
        self._vectors = np.zeros((0, 0), dtype=np.float64)
        self._index: faiss.Index | None = None
        self._indexed_rows = 0
        self._recorded_settings: dict[str, Any] = {}
        settings = read_settings(self.index_dir) if self.index_dir else None
        if settings is not None:
            self._open_folder()

    # --- Haystack DocumentStore protocol -------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Serialize the settings (vectors and documents live in ``index_dir``)."""
        return default_to_dict(
            self,
            index_dir=self.index_dir,
            index_type=self.index_type,
            use_gpu=self.use_gpu,
            embedding_model=self.embedding_model,
            **self.ann_settings,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FAISSDocumentStore":
        """Rebuild from :meth:`to_dict`, loading the index from ``index_dir``.

        A serialized ``index_dir`` that holds no index (moved or deleted) raises ``FileNotFoundError`` naming it,
        instead of opening an empty store.
        """
        index_dir = data.get("init_parameters", {}).get("index_dir")
        if index_dir is not None:
            require_index(index_dir)
        return default_from_dict(cls, data)

    @property
    def embedding_dim(self) -> int | None:
        """Dimension of the stored vectors (None while none is stored)."""
        return self._vectors.shape[1] if self._vectors.size else None

    # --- index upkeep (the DocumentStore protocol itself is in InMemoryIndexedStore) ------------

    def _check_writable(self, documents: list[Document]) -> None:
        dims = {len(doc.embedding) for doc in documents if doc.embedding is not None}
        if 0 in dims:
            raise ValueError("a document has an empty embedding")
        expected = self.embedding_dim
        if len(dims) > 1 or (expected is not None and dims and dims != {expected}):
            raise ValueError(
                f"embedding dimensions {sorted(dims)} do not match the store's {expected or 'single dimension'}"
            )

    def _index_written(self, documents: list[Document]) -> None:
        unembedded = [doc.id for doc in documents if doc.embedding is None and doc.id in self._rows]
        if unembedded:
            self._remove_rows(unembedded)
        embedded = [doc for doc in documents if doc.embedding is not None]
        fresh = []
        for doc in embedded:
            vector = np.asarray(doc.embedding, dtype=np.float64)
            if doc.id in self._rows:
                self._vectors[self._rows[doc.id]] = vector
                self._index = None  # a replaced vector needs a rebuild
            else:
                self._rows[doc.id] = len(self._rows)
                fresh.append(vector)
        if fresh:
            stacked = np.vstack(fresh)
            self._vectors = stacked if not self._vectors.size else np.vstack([self._vectors, stacked])
        for doc in embedded:  # the vector lives in self._vectors only
            self._documents[doc.id] = replace(doc, embedding=None)

    def _index_removed(self, document_ids: list[str]) -> None:
        self._remove_rows([doc_id for doc_id in document_ids if doc_id in self._rows])

    def _index_cleared(self) -> None:
        self._rows, self._vectors = {}, np.zeros((0, 0), dtype=np.float64)
        self._index, self._indexed_rows = None, 0

    def _remove_rows(self, document_ids: list[str]) -> None:
        drop = {self._rows[doc_id] for doc_id in document_ids}
        keep = [doc_id for doc_id, row in self._rows.items() if row not in drop]
        self._vectors = self._vectors[[self._rows[doc_id] for doc_id in keep]]
        self._rows = {doc_id: row for row, doc_id in enumerate(keep)}
        if not keep:
            self._vectors = np.zeros((0, 0), dtype=np.float64)
        self._index, self._indexed_rows = None, 0

    def _stored_document(self, document: Document) -> Document:
        row = self._rows.get(document.id)
        return document if row is None else replace(document, embedding=self._vectors[row].tolist())

    # --- search ----------------------------------------------------------------------------

    def search_ids(self, query_embeddings: np.ndarray, top_k: int = 10, filters: dict[str, Any] | None = None):
        """For each query vector, ``[(doc_id, score)]`` best first (score = cosine similarity).

        Only documents with an embedding are searched.
        """
        validate_filters(filters)
        queries = normalize_rows(query_embeddings)
        with self._lock:
            if not self._rows:
                return [[] for _ in range(len(queries))]
            if queries.shape[1] != self._vectors.shape[1]:
                raise ValueError(
                    f"query dimension {queries.shape[1]} does not match the store's {self._vectors.shape[1]}"
                )
            ids = list(self._rows)
            if filters:  # exact search over the matching documents only
                rows = np.array(
                    [row for row, d in enumerate(ids) if document_matches_filter(filters, self._documents[d])],
                    dtype=np.int64,
                )
                if rows.size == 0:
                    return [[] for _ in range(len(queries))]
                scores = queries @ normalize_rows(self._vectors[rows]).T
                k = min(top_k, rows.size)
                top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                return [[(ids[rows[j]], float(scores[q, j])) for j in top[q]] for q in range(len(queries))]
            index = self._ensure_index()
            scores, rows = index.search(queries, min(top_k, len(ids)))
        return [
            [(ids[r], float(s)) for r, s in zip(row_ids.tolist(), row_scores.tolist()) if r >= 0]
            for row_ids, row_scores in zip(rows, scores)
        ]

    def embedding_retrieval(
        self,
        query_embedding: list[float],
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        scale_score: bool = False,
        return_embedding: bool = False,
    ) -> list[Document]:
        """The ``top_k`` nearest documents, each a copy carrying its cosine ``score``.

        ``scale_score`` maps cosine to (0, 1) as ``InMemoryDocumentStore`` does, ``(score + 1) / 2``;
        ``return_embedding`` includes the stored vectors.
        """
        return self.embedding_retrieval_batch([query_embedding], top_k, filters, scale_score, return_embedding)[0]

    def embedding_retrieval_batch(
        self,
        query_embeddings: list[list[float]],
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        scale_score: bool = False,
        return_embedding: bool = False,
    ) -> list[list[Document]]:
        """:meth:`embedding_retrieval` for many query vectors in one FAISS search."""
        with self._lock:  # one hold: a document deleted by another thread meanwhile is never looked up
            hits = self.search_ids(np.asarray(query_embeddings, dtype=np.float32), top_k=top_k, filters=filters)
            return [
                [
                    replace(
                        self._stored_document(self._documents[d]) if return_embedding else self._documents[d],
                        score=(score + 1) / 2 if scale_score else score,
                    )
                    for d, score in query_hits
                ]
                for query_hits in hits
            ]

    async def embedding_retrieval_async(
        self,
        query_embedding: list[float],
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        scale_score: bool = False,
        return_embedding: bool = False,
    ) -> list[Document]:
        """Async :meth:`embedding_retrieval` (runs in a worker thread)."""
        return await self._in_thread(
            self.embedding_retrieval, query_embedding, top_k, filters, scale_score, return_embedding
        )

    def get_documents(self, document_ids: list[str]) -> list[Document]:
        """Stored documents by id, in the order asked (unknown ids raise ``KeyError``)."""
        with self._lock:
            return [self._documents[doc_id] for doc_id in document_ids]

    def _ensure_index(self) -> faiss.Index:
        if self._index is not None and self._indexed_rows < len(self._rows):
            self._index_add(self._vectors[self._indexed_rows :])
        if self._index is None:
            cpu_index = build_faiss_index(normalize_rows(self._vectors), self.index_type, **self.ann_settings)
            self._index = self._to_device(cpu_index)
        self._indexed_rows = len(self._rows)
        return self._index

    def _index_add(self, vectors: np.ndarray) -> None:
        self._index.add(normalize_rows(vectors))

    def _to_device(self, index: faiss.Index) -> faiss.Index:
        wants_gpu = self.use_gpu is True or (self.use_gpu == "auto" and gpu_available())
        if not wants_gpu or self.index_type == "hnsw":
            return index
        if not gpu_available():
            raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no CUDA device")
        self._gpu_resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)

    # --- persistence -----------------------------------------------------------------------

    def write_to(self, folder: Path) -> None:
        """Write the index files into an existing, empty ``folder`` (not atomic; see :meth:`save`).

        ``documents.jsonl`` lists the embedded documents in the row order of ``embeddings.npy`` (the vectors as
        written, float64), then the documents without an embedding.
        """
        with self._lock:
            write_settings(folder, self.settings())
            unembedded = (doc for doc_id, doc in self._documents.items() if doc_id not in self._rows)
            write_documents_jsonl(folder / DOCUMENTS_FILE, [*(self._documents[i] for i in self._rows), *unembedded])
            np.save(folder / "embeddings.npy", self._vectors)
            if self._rows:
                index = self._ensure_index()
                if self.index_type != "flat":  # flat indexes are rebuilt from embeddings.npy in no time
                    cpu_index = faiss.index_gpu_to_cpu(index) if hasattr(index, "getDevice") else index
                    faiss.write_index(cpu_index, str(folder / "faiss.index"))

    def settings(self) -> dict[str, Any]:
        """What ``index.json`` records about this index."""
        return {
            **self._recorded_settings,  # what others recorded in index.json (e.g. the dense first stage's fields)
            "backend": BACKEND_NAME,
            "format_version": 1,
            "index_type": self.index_type,
            "metric": "inner_product_normalized",
            "embedding_model": self.embedding_model,
            "embedding_dim": self.embedding_dim,
            "documents": len(self._documents),
            "embedded_documents": len(self._rows),
            **self.ann_settings,
        }

    def _load(self, folder: Path, settings: dict[str, Any]) -> None:
        if settings.get("backend") != BACKEND_NAME:
            raise ValueError(f"{folder} holds a {settings.get('backend')!r} index, not a FAISS index")
        self._recorded_settings = settings
        self.index_type = settings["index_type"]
        self.ann_settings = {key: settings[key] for key in self.ann_settings}
        self.embedding_model = self.embedding_model or settings.get("embedding_model")
        documents = read_documents_jsonl(folder / DOCUMENTS_FILE)
        embedded = settings.get("embedded_documents", len(documents))  # older folders: every document has a vector
        self._documents = {doc.id: doc for doc in documents}
        self._rows = {doc.id: row for row, doc in enumerate(documents[:embedded])}
        self._vectors = np.load(folder / "embeddings.npy", allow_pickle=False).astype(np.float64)
        if len(self._documents) != len(documents) or self._vectors.shape[0] != len(self._rows):
            raise IndexFolderError(
                f"{folder / DOCUMENTS_FILE}: {len(documents)} lines ({len(self._documents)} ids, {len(self._rows)} "
                f"embedded) do not match the {self._vectors.shape[0]} vectors of {folder / 'embeddings.npy'}"
            )
        if (folder / "faiss.index").is_file():
            self._index = self._to_device(faiss.read_index(str(folder / "faiss.index")))
            self._indexed_rows = len(self._rows)


@component
class FAISSEmbeddingRetriever(StoreRetriever):
    """Haystack retriever over a :class:`FAISSDocumentStore`, like ``InMemoryEmbeddingRetriever``.

    ``scale_score`` maps cosine to (0, 1); ``return_embedding`` adds the stored vectors to the documents.
    """

    store_class = FAISSDocumentStore

    def __init__(
        self,
        document_store: FAISSDocumentStore,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        scale_score: bool = False,
        return_embedding: bool = False,
        filter_policy: FilterPolicy | str = FilterPolicy.REPLACE,
    ) -> None:
        StoreRetriever.__init__(self, document_store, top_k, filters, scale_score, filter_policy)
        self.return_embedding = return_embedding

    def to_dict(self) -> dict[str, Any]:
        """Serialize, document store included."""
        data = StoreRetriever.to_dict(self)
        data["init_parameters"]["return_embedding"] = self.return_embedding
        return data

    def _arguments(self, top_k, filters, scale_score, return_embedding) -> dict[str, Any]:
        arguments = self._search_arguments(top_k, filters, scale_score)
        arguments["return_embedding"] = self.return_embedding if return_embedding is None else return_embedding
        return arguments

    @component.output_types(documents=list[Document])
    def run(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
        return_embedding: bool | None = None,
    ) -> dict[str, list[Document]]:
        """Return ``{"documents": [...]}``, nearest first, each with its cosine ``score``.

        ``filters`` combine with the init filters per ``filter_policy``; the other inputs override the init values
        for this call.
        """
        arguments = self._arguments(top_k, filters, scale_score, return_embedding)
        return {"documents": self.document_store.embedding_retrieval(query_embedding, **arguments)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
        return_embedding: bool | None = None,
    ) -> dict[str, list[Document]]:
        """Async :meth:`run`: the search runs in the store's worker thread."""
        arguments = self._arguments(top_k, filters, scale_score, return_embedding)
        return {"documents": await self.document_store.embedding_retrieval_async(query_embedding, **arguments)}

    def run_batch(
        self,
        query_embedding: list[list[float]],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
        return_embedding: bool | None = None,
    ) -> dict[str, list[list[Document]]]:
        """:meth:`run` for many query vectors in one FAISS search: ``{"documents": [one list a query]}``."""
        arguments = self._arguments(top_k, filters, scale_score, return_embedding)
        return {"documents": self.document_store.embedding_retrieval_batch(list(query_embedding), **arguments)}
