"""Dense retrieval on FAISS: a document store holding embeddings, and an embedding retriever.

A small store of our own on ``faiss`` directly (faiss-haystack pins numpy < 2).
Vectors are L2-normalized and searched by inner product, i.e. cosine. ``index_type`` is a
``faiss.index_factory`` string (``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ48"``, ``"SQ8"``, ...)
or one of the names ``"flat"`` (exact), ``"hnsw"`` and ``"ivf"`` (aliases, see :func:`factory_string`). Vectors are
float32 throughout (FAISS's own precision); ``embeddings.npy`` is float32 and opened memory-mapped, and saved indexes
are read with ``faiss.IO_FLAG_MMAP`` where the type allows, so opening a large folder makes no resident copy.
With faiss-gpu and a CUDA device, indexes other than HNSW search on the GPU where FAISS supports the type.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.types import FilterPolicy

from rerank_pipeline.components._document_store import InMemoryIndexedStore, validate_filters
from rerank_pipeline.components._store_retriever import StoreRetriever
from rerank_pipeline.components.document_table import open_documents, write_snapshot
from rerank_pipeline.components.index_folder import IndexFolderError, read_settings, require_index, write_settings

logger = logging.getLogger(__name__)

BACKEND_NAME = "faiss"
VECTOR_ROWS_FILE = "vector_rows.npy"  # for each row of embeddings.npy, the row of its document in the snapshot
INDEX_TYPES = ("flat", "hnsw", "ivf")  # names kept from format 1; any faiss.index_factory string is accepted too
TRAIN_SAMPLE_MIN = 100_000  # training-based types train on at most max(this, 50 per IVF cell) sampled vectors
_PROBE_DIM = 3840  # divisible by the usual PQ/OPQ sizes: used to check a factory string's syntax before any vector


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 copy of ``vectors`` with unit-length rows (zero rows stay zero)."""
    vectors = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


def _faiss_message(error: Exception) -> str:
    """The last clause of FAISS's first error line (its C++ location left out)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return first.rsplit(": ", 1)[-1]


def check_index_type(index_type: str) -> str:
    """``index_type`` if it is an alias or a factory string FAISS can parse, else a one-line ``ValueError``."""
    if not isinstance(index_type, str) or not index_type.strip():
        raise ValueError(f"index_type {index_type!r} is not a FAISS index_factory string nor one of {INDEX_TYPES}")
    if index_type in INDEX_TYPES:
        return index_type
    try:
        faiss.index_factory(_PROBE_DIM, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        message = _faiss_message(error)
        if "could not parse" in message or "not supported" in message or "unknown" in message.lower():
            raise ValueError(
                f"index_type {index_type!r} is not a FAISS index_factory string nor one of {INDEX_TYPES} ({message})"
            ) from None
        # other errors depend on the dimension (e.g. PQ48 needs a multiple of 48): checked at build
    return index_type


def factory_string(index_type: str, count: int, *, hnsw_m: int = 32, nlist: int | None = None) -> str:
    """The ``faiss.index_factory`` string ``index_type`` stands for over ``count`` vectors.

    ``"flat"`` is ``"Flat"``; ``"hnsw"`` is ``"HNSW{hnsw_m}"``; ``"ivf"`` is ``"IVF{nlist},Flat"`` with ``nlist``
    defaulting to about 2·sqrt(count) cells, capped so each cell gets ~39 training points. Any other string is
    returned as given.
    """
    if index_type == "flat":
        return "Flat"
    if index_type == "hnsw":
        return f"HNSW{hnsw_m}"
    if index_type == "ivf":
        cells = nlist or max(1, min(int(2 * np.sqrt(count)), count // 39))
        return f"IVF{cells},Flat"
    return index_type


def set_search_parameters(index: faiss.Index, *, nprobe: int, ef_search: int) -> None:
    """Apply IVF ``nprobe`` and HNSW ``efSearch`` where the index has them (through ``faiss.ParameterSpace``)."""
    space = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            pass  # this index type has no such parameter


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
    """An inner-product FAISS index over (normalized, float32) ``vectors``, built with ``faiss.index_factory``.

    ``index_type`` is an alias or a factory string (see :func:`factory_string`). Types that need training (IVF, PQ,
    SQ) train on a sample of at most ``max(100_000, 50 per IVF cell)`` vectors; IVF centroids get 10 k-means rounds;
    PQ skips FAISS's polysemous training (it serves polysemous search only, and was ~20x the PQ training time).
    A string FAISS cannot build for these vectors raises a one-line ``ValueError`` naming it.
    """
    check_index_type(index_type)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    factory = factory_string(index_type, count, hnsw_m=hnsw_m, nlist=nlist)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        message = _faiss_message(error)
        raise ValueError(f"index_type {factory!r} cannot index {dim}-dimensional vectors: {message}") from None
    hnsw = faiss.downcast_index(index)
    if isinstance(hnsw, faiss.IndexHNSW):
        hnsw.hnsw.efConstruction = ef_construction
    ivf = faiss.try_extract_index_ivf(index)
    for part in (hnsw, faiss.downcast_index(ivf) if ivf is not None else None):
        if getattr(part, "do_polysemous_training", False):
            part.do_polysemous_training = False  # only polysemous search uses it (not done here); it is 20x the cost
    if not index.is_trained:
        cap = max(TRAIN_SAMPLE_MIN, 50 * ivf.nlist) if ivf is not None else TRAIN_SAMPLE_MIN
        if count > cap:  # a sample is enough for centroids and codebooks, and far cheaper at millions of vectors
            sample = vectors[np.sort(np.random.default_rng(0).choice(count, cap, replace=False))]
        else:
            sample = vectors
        if ivf is not None:
            ivf.cp.niter = 10
        try:
            index.train(sample)
        except RuntimeError as error:
            raise ValueError(
                f"index_type {factory!r} cannot be trained on {len(sample)} vectors: {_faiss_message(error)}"
            ) from None
    set_search_parameters(index, nprobe=nprobe, ef_search=ef_search)
    if count:
        index.add(vectors)
    return index


def read_faiss_index(path: Path, factory: str = "") -> tuple[faiss.Index, bool]:
    """``(index, memory_mapped)``: the index at ``path``, memory-mapped where its type allows.

    IVF indexes map their inverted lists (``faiss.IO_FLAG_MMAP``); flat-code indexes (Flat, SQ, PQ, HNSW's storage)
    map their codes (``faiss.IO_FLAG_MMAP_IFC``, recent faiss). A type that cannot be mapped is read into memory.
    ``factory`` (the recorded factory string) only picks which flag is tried first.
    """
    flags = [faiss.IO_FLAG_MMAP, getattr(faiss, "IO_FLAG_MMAP_IFC", None)]
    if "IVF" not in factory:
        flags.reverse()
    for flag in flags:
        if flag is None:
            continue
        try:
            index = faiss.read_index(str(path), flag)
        except RuntimeError:
            continue
        if _is_mapped(index):
            return index, True
        del index
    return faiss.read_index(str(path)), False


def _is_mapped(index: faiss.Index) -> bool:
    """Whether ``index`` keeps its vectors in a memory-mapped file rather than in owned memory."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    codes = getattr(inner, "codes", None)
    return codes is not None and hasattr(codes, "is_owned") and not codes.is_owned


class FAISSDocumentStore(InMemoryIndexedStore):
    """Documents with embeddings, searched with FAISS; persisted to a folder.

    - ``index_dir``: folder to load from (when it holds an index) and to :meth:`save` to.
    - ``index_type``: a ``faiss.index_factory`` string (``"Flat"`` exact; ``"HNSW32"``, ``"IVF1024,Flat"``,
      ``"IVF4096,PQ48"``, ``"SQ8"`` approximate or compressed) or an alias: ``"flat"``, ``"hnsw"``, ``"ivf"``.
    - ``hnsw_m``, ``nlist``: sizes the ``"hnsw"`` / ``"ivf"`` aliases use (a factory string names its own);
      ``ef_construction``, ``ef_search``, ``nprobe``: HNSW / IVF build and search settings, for any string.
    - ``use_gpu``: ``"auto"`` (GPU when faiss-gpu sees CUDA), True, or False.
    - ``embedding_model``: recorded in the index settings so queries use the same model.

    Documents are written as by Haystack's ``InMemoryDocumentStore`` (``DuplicatePolicy.NONE`` refuses an id
    already stored); documents without an embedding are kept (filterable, counted) but never returned by vector
    search. Vectors are kept as float32: readers get each embedding value rounded to float32 (``float(np.float32(x))``),
    what FAISS searches. With an ``index_dir``, every change is saved there before the call returns; an opened folder's
    ``embeddings.npy`` stays memory-mapped (read-only) until a write makes the vectors resident. The FAISS index is
    rebuilt lazily after replacements or deletions, and extended in place after additions (a memory-mapped index is
    rebuilt in memory instead, since FAISS cannot extend a mapped file).

    :raises ValueError: If ``index_type`` is neither an alias nor a string FAISS can parse, or ``index_dir`` holds
        another kind of index.
    :raises IndexFolderError: If a file of ``index_dir`` is missing, damaged or of another generation (the message
        names the file).
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
        check_index_type(index_type)
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
        self._row_ids: list[str] | None = None  # the ids of the vector rows, in order (computed lazily)
        self._vectors: np.ndarray = np.zeros((0, 0), dtype=np.float32)  # float32; a read-only memmap once opened
        self._index: faiss.Index | None = None
        self._indexed_rows = 0
        self._index_source = None  # open file the memory-mapped index was read from (copied as is by a save)
        self._built_factory: str | None = None  # the factory string of self._index
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
        if any(doc.id in self._rows for doc in embedded) and not self._vectors.flags.writeable:
            self._vectors = np.array(self._vectors, dtype=np.float32)  # the memory-mapped file is read-only
        for doc in embedded:
            vector = np.asarray(doc.embedding, dtype=np.float32)
            if doc.id in self._rows:
                self._vectors[self._rows[doc.id]] = vector
                self._drop_index()  # a replaced vector needs a rebuild
            else:
                self._rows[doc.id] = len(self._rows)
                self._row_ids = None
                fresh.append(vector)
        if fresh:
            stacked = np.vstack(fresh)
            self._vectors = stacked if not self._vectors.size else np.vstack([self._vectors, stacked])
        for doc in embedded:  # the vector lives in self._vectors only
            self._documents[doc.id] = replace(doc, embedding=None)

    def _index_removed(self, document_ids: list[str]) -> None:
        self._remove_rows([doc_id for doc_id in document_ids if doc_id in self._rows])

    def _index_cleared(self) -> None:
        self._rows, self._row_ids, self._vectors = {}, None, np.zeros((0, 0), dtype=np.float32)
        self._drop_index()

    def _drop_index(self) -> None:
        if self._index_source is not None:
            self._index_source.close()
        self._index, self._indexed_rows, self._index_source = None, 0, None

    def _remove_rows(self, document_ids: list[str]) -> None:
        drop = {self._rows[doc_id] for doc_id in document_ids}
        keep = [doc_id for doc_id, row in self._rows.items() if row not in drop]
        self._vectors = self._vectors[[self._rows[doc_id] for doc_id in keep]]
        self._rows, self._row_ids = {doc_id: row for row, doc_id in enumerate(keep)}, keep
        if not keep:
            self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._drop_index()

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
            if self._row_ids is None:
                self._row_ids = list(self._rows)
            ids = self._row_ids
            if filters:  # exact search over the matching documents only
                matching = self._documents.matching_ids(filters)
                rows = np.array(sorted(self._rows[d] for d in matching if d in self._rows), dtype=np.int64)
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
                        self._stored_document(document) if return_embedding else document,
                        score=(score + 1) / 2 if scale_score else score,
                    )
                    for document, (_, score) in zip(self._documents.get_many([d for d, _ in query_hits]), query_hits)
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
            return self._documents.get_many(list(document_ids))

    @property
    def factory(self) -> str:
        """The ``faiss.index_factory`` string of the index over the stored vectors (aliases resolved)."""
        settings = self.ann_settings
        return factory_string(self.index_type, len(self._rows), hnsw_m=settings["hnsw_m"], nlist=settings["nlist"])

    @property
    def index_memory_mapped(self) -> bool:
        """Whether the FAISS index in use was read memory-mapped from the folder (no resident copy of its codes)."""
        return self._index_source is not None

    def _ensure_index(self) -> faiss.Index:
        if self._index is not None and self._indexed_rows < len(self._rows):
            if self._index_source is not None:
                self._drop_index()  # FAISS cannot extend a memory-mapped index: rebuild it in memory
            else:
                self._index_add(self._vectors[self._indexed_rows :])
        if self._index is None:
            cpu_index = build_faiss_index(normalize_rows(self._vectors), self.index_type, **self.ann_settings)
            self._built_factory = self.factory
            self._index = self._to_device(cpu_index)
        self._indexed_rows = len(self._rows)
        return self._index

    def _index_add(self, vectors: np.ndarray) -> None:
        self._index.add(normalize_rows(vectors))

    def _to_device(self, index: faiss.Index) -> faiss.Index:
        wants_gpu = self.use_gpu is True or (self.use_gpu == "auto" and gpu_available())
        if not wants_gpu or "HNSW" in (self._built_factory or self.factory):
            return index
        if not gpu_available():
            raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no CUDA device")
        self._gpu_resources = faiss.StandardGpuResources()
        try:
            return faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        except RuntimeError as error:  # a type FAISS cannot move to the GPU searches on the CPU
            if self.use_gpu is True:
                raise
            logger.warning("FAISS index %s stays on the CPU: %s", self.factory, _faiss_message(error))
            return index

    # --- persistence -----------------------------------------------------------------------

    def write_to(self, folder: Path) -> None:
        """Write the index files into an existing, empty ``folder`` (not atomic; see :meth:`save`).

        The documents (see :func:`write_snapshot`) are the embedded documents in the row order of ``embeddings.npy`` (the vectors as
        written, float32), then the documents without an embedding. ``faiss.index`` holds the index of any type but
        ``Flat`` (rebuilt from ``embeddings.npy`` in no time); an unchanged memory-mapped index is copied byte for
        byte (FAISS would write a mapped IVF index as a reference to its old file).
        """
        with self._lock:
            index = self._ensure_index() if self._rows else None
            write_settings(folder, self.settings())
            positions = np.zeros(len(self._rows), dtype=np.int64)  # the document row of each vector row

            def documents() -> Iterator[Document]:
                for position, document in enumerate(self._documents.values()):
                    row = self._rows.get(document.id)
                    if row is not None:
                        positions[row] = position
                    yield document

            write_snapshot(folder, documents())
            np.save(folder / VECTOR_ROWS_FILE, positions)
            np.save(folder / "embeddings.npy", np.asarray(self._vectors, dtype=np.float32))
            if index is not None:
                if self._built_factory != "Flat":
                    if self._index_source is not None:
                        self._index_source.seek(0)
                        with open(folder / "faiss.index", "wb") as target:
                            shutil.copyfileobj(self._index_source, target, 1 << 20)
                    else:
                        cpu_index = faiss.index_gpu_to_cpu(index) if hasattr(index, "getDevice") else index
                        faiss.write_index(cpu_index, str(folder / "faiss.index"))

    def settings(self) -> dict[str, Any]:
        """What ``index.json`` records about this index."""
        return {
            **self._recorded_settings,  # what others recorded in index.json (e.g. the dense first stage's fields)
            "backend": BACKEND_NAME,
            "format_version": 1,
            "index_type": self.index_type,
            "faiss_factory": (self._built_factory or self.factory) if self._rows else None,
            "vector_dtype": "float32",
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
        self._documents = open_documents(folder)
        count = len(self._documents)
        embedded = settings.get("embedded_documents", count)  # older folders: every document has a vector
        if not isinstance(embedded, int) or not 0 <= embedded <= count:
            raise IndexFolderError(f"{folder / 'index.json'}: embedded_documents {embedded!r} of {count} documents")
        snapshot = self._documents.snapshot
        if (folder / VECTOR_ROWS_FILE).is_file():
            positions = np.load(folder / VECTOR_ROWS_FILE, allow_pickle=False)
            if positions.shape != (embedded,) or positions.dtype != np.int64 or (
                positions.size and not 0 <= positions.min() <= positions.max() < count
            ):
                raise IndexFolderError(f"{folder / VECTOR_ROWS_FILE}: not {embedded} document rows of {count}")
            self._row_ids = snapshot.ids(positions)
        else:  # older folders: the embedded documents first, in vector order
            self._row_ids = snapshot.ids(range(embedded)) if snapshot else list(self._documents.written)[:embedded]
        if len(set(self._row_ids)) != len(self._row_ids):
            raise IndexFolderError(f"{folder / VECTOR_ROWS_FILE}: a document row listed twice")
        self._rows = {doc_id: row for row, doc_id in enumerate(self._row_ids)}
        vectors = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        if vectors.dtype != np.float32:  # older folders hold float64: read into memory as float32
            vectors = np.asarray(vectors, dtype=np.float32)
        self._vectors = vectors if vectors.size else np.zeros((0, 0), dtype=np.float32)
        if self._vectors.shape[0] != len(self._rows):
            raise IndexFolderError(
                f"{folder}: {count} documents ({len(self._rows)} embedded) do not match the "
                f"{self._vectors.shape[0]} vectors of {folder / 'embeddings.npy'}"
            )
        if (folder / "faiss.index").is_file():
            self._built_factory = settings.get("faiss_factory") or self.factory
            index, mapped = read_faiss_index(folder / "faiss.index", self._built_factory)
            set_search_parameters(index, nprobe=self.ann_settings["nprobe"], ef_search=self.ann_settings["ef_search"])
            device_index = self._to_device(index)
            if mapped and device_index is index:  # kept open: a save copies this generation's file as is
                self._index_source = open(folder / "faiss.index", "rb")  # noqa: SIM115 - lives with the index
            self._index = device_index
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
