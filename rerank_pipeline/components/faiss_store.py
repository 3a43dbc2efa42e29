"""Dense retrieval on FAISS: a document store holding embeddings, and an embedding retriever.

A small store of our own on ``faiss`` directly (faiss-haystack pins numpy < 2).
Vectors are L2-normalized and searched by inner product, i.e. cosine. ``index_type``
picks exact search (``"flat"``) or an approximate one for large corpora (``"hnsw"``
or ``"ivf"``). With faiss-gpu and a CUDA device, flat and IVF indexes search on the GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy
from haystack.utils.filters import document_matches_filter

from rerank_pipeline.components._store_retriever import StoreRetriever
from rerank_pipeline.components.index_folder import (
    DOCUMENTS_FILE,
    SavesToIndexFolder,
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


class FAISSDocumentStore(SavesToIndexFolder):
    """Documents with embeddings, searched with FAISS; persisted to a folder.

    - ``index_dir``: folder to load from (when it holds an index) and to :meth:`save` to.
    - ``index_type``: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate).
    - ``hnsw_m``, ``ef_construction``, ``ef_search``, ``nlist``, ``nprobe``: ANN settings.
    - ``use_gpu``: ``"auto"`` (GPU when faiss-gpu sees CUDA), True, or False.
    - ``embedding_model``: recorded in the index settings so queries use the same model.

    Writing a document whose id is stored replaces it; the FAISS index is rebuilt
    lazily after replacements or deletions, and extended in place after additions.
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
        self._documents: dict[str, Document] = {}
        self._rows: dict[str, int] = {}
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._index: faiss.Index | None = None
        self._indexed_rows = 0
        settings = read_settings(self.index_dir) if self.index_dir else None
        if settings is not None:
            self._load(Path(self.index_dir), settings)

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

    def count_documents(self) -> int:
        """Number of stored documents."""
        return len(self._documents)

    @property
    def embedding_dim(self) -> int | None:
        """Dimension of the stored vectors (None while empty)."""
        return self._vectors.shape[1] if self._vectors.size else None

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Stored documents (without embeddings) matching Haystack ``filters``."""
        docs = list(self._documents.values())
        if not filters:
            return docs
        return [doc for doc in docs if document_matches_filter(filters=filters, document=doc)]

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Add documents that carry an ``embedding``; an existing id is replaced by default."""
        if not isinstance(documents, list) or not all(isinstance(doc, Document) for doc in documents):
            raise ValueError("write_documents expects a list of haystack Document objects")
        missing = [doc.id for doc in documents if doc.embedding is None]
        if missing:
            raise ValueError(f"{len(missing)} documents have no embedding (first: {missing[0]!r}); embed them first")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.OVERWRITE
        kept: dict[str, Document] = {}
        for doc in documents:
            if doc.id in self._documents or doc.id in kept:
                if policy == DuplicatePolicy.FAIL:
                    raise DuplicateDocumentError(f"a document with id {doc.id!r} is already stored")
                if policy == DuplicatePolicy.SKIP:
                    continue
            kept[doc.id] = doc
        if not kept:
            return 0
        vectors = normalize_rows(np.asarray([doc.embedding for doc in kept.values()], dtype=np.float32))
        if self._vectors.size and vectors.shape[1] != self._vectors.shape[1]:
            raise ValueError(f"embedding dimension {vectors.shape[1]} does not match the store's {self._vectors.shape[1]}")
        new_rows = []
        for doc, vector in zip(kept.values(), vectors):
            stripped = Document.from_dict({**doc.to_dict(flatten=False), "embedding": None})
            self._documents[doc.id] = stripped
            if doc.id in self._rows:
                self._vectors[self._rows[doc.id]] = vector
                self._index = None  # a replaced vector needs a rebuild
            else:
                self._rows[doc.id] = len(self._rows)
                new_rows.append(vector)
        if new_rows:
            stacked = np.vstack(new_rows)
            self._vectors = stacked if not self._vectors.size else np.vstack([self._vectors, stacked])
        return len(kept)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Remove documents by id (unknown ids are ignored)."""
        drop = {self._rows[i] for i in document_ids if i in self._rows}
        if not drop:
            return
        keep = [i for i in self._rows if self._rows[i] not in drop]
        self._vectors = self._vectors[[self._rows[i] for i in keep]]
        self._rows = {doc_id: row for row, doc_id in enumerate(keep)}
        for doc_id in document_ids:
            self._documents.pop(doc_id, None)
        self._index = None

    # --- search ----------------------------------------------------------------------------

    def search_ids(self, query_embeddings: np.ndarray, top_k: int = 10, filters: dict[str, Any] | None = None):
        """For each query vector, ``[(doc_id, score)]`` best first (score = cosine similarity)."""
        queries = normalize_rows(query_embeddings)
        if not self._rows:
            return [[] for _ in range(len(queries))]
        if queries.shape[1] != self._vectors.shape[1]:
            raise ValueError(f"query dimension {queries.shape[1]} does not match the store's {self._vectors.shape[1]}")
        ids = list(self._rows)
        if filters:  # exact search over the matching documents only
            rows = np.array([self._rows[d] for d in ids if document_matches_filter(filters=filters, document=self._documents[d])])
            if rows.size == 0:
                return [[] for _ in range(len(queries))]
            scores = queries @ self._vectors[rows].T
            k = min(top_k, rows.size)
            top = np.argsort(-scores, axis=1)[:, :k]
            return [[(ids[rows[j]], float(scores[q, j])) for j in top[q]] for q in range(len(queries))]
        index = self._ensure_index()
        scores, rows = index.search(queries, min(top_k, len(ids)))
        return [
            [(ids[r], float(s)) for r, s in zip(row_ids.tolist(), row_scores.tolist()) if r >= 0]
            for row_ids, row_scores in zip(rows, scores)
        ]

    def embedding_retrieval(
        self, query_embedding: list[float], top_k: int = 10, filters: dict[str, Any] | None = None
    ) -> list[Document]:
        """The ``top_k`` nearest documents, each a copy carrying its cosine ``score``."""
        hits = self.search_ids(np.asarray([query_embedding]), top_k=top_k, filters=filters)[0]
        return [Document.from_dict({**self._documents[d].to_dict(flatten=False), "score": s}) for d, s in hits]

    def get_documents(self, document_ids: list[str]) -> list[Document]:
        """Stored documents by id, in the order asked (unknown ids raise ``KeyError``)."""
        return [self._documents[doc_id] for doc_id in document_ids]

    def _ensure_index(self) -> faiss.Index:
        if self._index is not None and self._indexed_rows < len(self._rows):
            self._index_add(self._vectors[self._indexed_rows :])
        if self._index is None:
            cpu_index = build_faiss_index(self._vectors, self.index_type, **self.ann_settings)
            self._index = self._to_device(cpu_index)
        self._indexed_rows = len(self._rows)
        return self._index

    def _index_add(self, vectors: np.ndarray) -> None:
        self._index.add(vectors)

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
        """Write the index files into an existing, empty ``folder`` (not atomic; see :meth:`save`)."""
        write_settings(folder, self.settings())
        write_documents_jsonl(folder / DOCUMENTS_FILE, (self._documents[i] for i in self._rows))
        np.save(folder / "embeddings.npy", self._vectors)
        if self._rows:
            index = self._ensure_index()
            if self.index_type != "flat":  # flat indexes are rebuilt from embeddings.npy in no time
                cpu_index = faiss.index_gpu_to_cpu(index) if hasattr(index, "getDevice") else index
                faiss.write_index(cpu_index, str(folder / "faiss.index"))

    def settings(self) -> dict[str, Any]:
        """What ``index.json`` records about this index."""
        return {
            "backend": BACKEND_NAME,
            "format_version": 1,
            "index_type": self.index_type,
            "metric": "inner_product_normalized",
            "embedding_model": self.embedding_model,
            "embedding_dim": self.embedding_dim,
            "documents": len(self._documents),
            **self.ann_settings,
        }

    def _load(self, folder: Path, settings: dict[str, Any]) -> None:
        if settings.get("backend") != BACKEND_NAME:
            raise ValueError(f"{folder} holds a {settings.get('backend')!r} index, not a FAISS index")
        self.index_type = settings["index_type"]
        self.ann_settings = {key: settings[key] for key in self.ann_settings}
        self.embedding_model = self.embedding_model or settings.get("embedding_model")
        documents = read_documents_jsonl(folder / DOCUMENTS_FILE)
        self._documents = {doc.id: doc for doc in documents}
        self._rows = {doc.id: row for row, doc in enumerate(documents)}
        self._vectors = np.load(folder / "embeddings.npy")
        if (folder / "faiss.index").is_file():
            self._index = self._to_device(faiss.read_index(str(folder / "faiss.index")))
            self._indexed_rows = len(self._rows)


@component
class FAISSEmbeddingRetriever(StoreRetriever):
    """Haystack retriever over a :class:`FAISSDocumentStore`: query embedding in, top-k documents out."""

    store_class = FAISSDocumentStore

    @component.output_types(documents=list[Document])
    def run(
        self, query_embedding: list[float], top_k: int | None = None, filters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return ``{"documents": [...]}``, nearest first, each with its cosine ``score``."""
        return {
            "documents": self.document_store.embedding_retrieval(
                query_embedding, top_k=top_k or self.top_k, filters=filters if filters is not None else self.filters
            )
        }
