"""Embedded BM25: a document store and a retriever that need no server.

Scoring is Lucene's BM25 (the formula Elasticsearch uses) computed by ``bm25s``
on a sparse matrix of precomputed term scores, so a query costs a few sparse
column sums instead of a pass over every document. Text goes through an
:class:`Analyzer` (lowercase, word tokens, stop words, Snowball stemming) whose
settings are stored with the index.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import bm25s
import numpy as np
import Stemmer
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.in_memory.document_store import BM25_SCALING_FACTOR
from haystack.utils import expit
from haystack.utils.filters import document_matches_filter
from huggingface_hub.utils import are_progress_bars_disabled
from tqdm.auto import tqdm

from rerank_pipeline.components._document_store import InMemoryIndexedStore, validate_filters
from rerank_pipeline.components._store_retriever import StoreRetriever
from rerank_pipeline.components.bm25_matrix import BM25MatrixBuilder
from rerank_pipeline.components.document_table import (
    BATCH_ROWS,
    DocumentTable,
    Snapshot,
    SnapshotWriter,
    open_documents,
    write_snapshot,
)
from rerank_pipeline.components.index_folder import IndexFolderError, read_settings, require_index, write_settings

logger = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its logger to DEBUG on import

BACKEND_NAME = "bm25"
DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
DELTA_SHARE = 0.1  # the delta is folded into a new matrix once it holds more than this share of the documents
DELTA_MIN = 1000  # ... and more than this many documents
T = TypeVar("T")


@dataclass(frozen=True)
class Analyzer:
    """Turns text into index terms: lowercase -> word tokens -> stop words removed -> stemmed.

    ``stopwords`` is ``"en"`` (the English list of bm25s, also used for the
    Elasticsearch mapping), an explicit list, or None. ``stemmer`` is a Snowball
    language name understood by PyStemmer (``"english"``) or None.
    ``token_pattern`` is a Python regex; the default keeps words of two or more
    word characters.

    :raises ValueError: If ``stopwords`` is a string other than ``"en"`` or ``stemmer`` is unknown to PyStemmer.
    """

    lowercase: bool = True
    stopwords: str | tuple[str, ...] | None = "en"
    stemmer: str | None = "english"
    token_pattern: str = r"(?u)\b\w\w+\b"
    _cache: dict[str, str | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stopwords, list):
            object.__setattr__(self, "stopwords", tuple(self.stopwords))
        if isinstance(self.stopwords, str) and self.stopwords != "en":
            raise ValueError(f"unknown stop word list {self.stopwords!r}: use 'en', a list of words, or None")
        if self.stemmer is not None and self.stemmer not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer {self.stemmer!r}; PyStemmer knows {sorted(Stemmer.algorithms())}")
        object.__setattr__(self, "_pattern", re.compile(self.token_pattern))
        object.__setattr__(self, "_stopword_set", frozenset(self.stopword_list()))
        object.__setattr__(self, "_stem", Stemmer.Stemmer(self.stemmer).stemWord if self.stemmer else None)

    def stopword_list(self) -> list[str]:
        """The stop words this analyzer removes."""
        if self.stopwords is None:
            return []
        if self.stopwords == "en":
            return list(bm25s.stopwords.STOPWORDS_EN)
        return list(self.stopwords)

    def analyze(self, text: str) -> list[str]:
        """The index terms of one text, in order (repeats kept)."""
        if self.lowercase:
            text = text.lower()
        cache = self._cache
        terms = []
        for word in self._pattern.findall(text):
            term = cache.get(word, "")
            if term == "":
                term = None if word in self._stopword_set else (self._stem(word) if self._stem else word)
                cache[word] = term
            if term is not None:
                terms.append(term)
        return terms

    def analyze_many(self, texts: list[str], progress: bool = False) -> list[list[str]]:
        """The index terms of many texts."""
        return [self.analyze(text) for text in tqdm(texts, desc="analyzing", unit="doc", disable=not progress)]

    def to_dict(self) -> dict[str, Any]:
        """Settings as plain JSON values."""
        stopwords = list(self.stopwords) if isinstance(self.stopwords, tuple) else self.stopwords
        return {
            "lowercase": self.lowercase,
            "stopwords": stopwords,
            "stemmer": self.stemmer,
            "token_pattern": self.token_pattern,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Analyzer":
        """Inverse of :meth:`to_dict`; None gives the default analyzer."""
        return cls(**(data or {}))


DEFAULT_META_FIELDS = ("title",)


def document_text(document: Document, meta_fields: tuple[str, ...] | list[str] = DEFAULT_META_FIELDS) -> str:
    """The text that is indexed for a document: the named meta fields (when set), then the content.

    Prepending the title is the BEIR convention for title + body collections.
    """
    parts = [str(document.meta[name]) for name in meta_fields if document.meta.get(name)]
    parts.append(document.content or "")
    return " ".join(parts)


class EmbeddedBM25DocumentStore(InMemoryIndexedStore):
    """In-process document store with Lucene BM25 search, persisted to a folder.

    - ``index_dir``: folder to load from (when it holds an index) and to :meth:`save` to.
    - ``k1``, ``b``: BM25 parameters (defaults 0.9 / 0.4, as Pyserini); None keeps a loaded index's values.
    - ``analyzer``: :class:`Analyzer` or its dict; None keeps a loaded index's analyzer or uses the default.
    - ``meta_fields_to_index``: meta fields indexed before the content (default ``["title"]``).

    Documents are written as by Haystack's ``InMemoryDocumentStore`` (``DuplicatePolicy.NONE`` refuses an id
    already stored). With an ``index_dir``, every change is saved there before the call returns.

    Changes after the BM25 matrix was built go to a *delta*, searched beside the matrix, so a write costs the
    analysis of its own documents, not a rebuild. Scoring rule: matrix rows keep the scores they were built with
    (corpus statistics of that build); a deleted or replaced row scores 0; a delta document is scored by Lucene's
    BM25 with ``N`` = the matrix's rows + the delta's documents, ``df(t)`` = the term's matrix rows + delta documents
    holding it, and the matrix's average length. :meth:`compact` (also run by :meth:`save`, and on its own once the
    delta holds more than :data:`DELTA_SHARE` of the documents) rebuilds the matrix, after which every score equals
    a fresh index's.

    :raises ValueError: If ``index_dir`` holds another kind of index, or ``analyzer`` / ``meta_fields_to_index``
        differ from those the index was built with (re-index to change them).
    :raises IndexFolderError: If a file of ``index_dir`` is missing, damaged or of another generation (the message
        names the file).
    """

    def __init__(
        self,
        index_dir: str | Path | None = None,
        k1: float | None = None,
        b: float | None = None,
        analyzer: Analyzer | dict[str, Any] | None = None,
        meta_fields_to_index: list[str] | None = None,
    ) -> None:
        self.index_dir = str(index_dir) if index_dir is not None else None
        requested = Analyzer.from_dict(analyzer) if isinstance(analyzer, dict) else analyzer
        self._init_document_store()
        self._terms: dict[str, list[str]] | None = {}  # every document's terms; None when not held (after a load)
        self._engine: bm25s.BM25 | None = None
        self._engine_ids: list[str] | None = []  # the matrix's rows (None: the rows of the snapshot)
        self._engine_avgdl: float | None = None  # its average document length (None: unknown, an older folder)
        self._engine_df: np.ndarray | None = None  # its document frequency per vocabulary id (computed lazily)
        self._dead: set[int] = set()  # matrix rows deleted or replaced since it was built (rows of a list)
        self._delta: dict[str, tuple[Counter, int]] = {}  # documents written since: term counts, length
        self._delta_postings: dict[str, set[str]] = {}  # term -> the delta documents holding it
        self._rows: dict[str, int] | None = None  # id -> matrix row (computed lazily)
        settings = read_settings(self.index_dir) if self.index_dir else None
        if settings is not None:
            self._open_folder()
            fields_changed = meta_fields_to_index is not None and list(meta_fields_to_index) != self.meta_fields
            if fields_changed or (requested is not None and requested != self.analyzer):
                raise ValueError(
                    f"the index in {self.index_dir} was built with analyzer {self.analyzer.to_dict()} "
                    f"and meta fields {self.meta_fields}; re-index to change them"
                )
        else:
            self.analyzer = requested or Analyzer()
            self.meta_fields = list(DEFAULT_META_FIELDS if meta_fields_to_index is None else meta_fields_to_index)
            self.k1, self.b = DEFAULT_K1, DEFAULT_B
        if k1 is not None and k1 != self.k1:
            self.k1, self._engine = float(k1), None
        if b is not None and b != self.b:
            self.b, self._engine = float(b), None

    # --- Haystack DocumentStore protocol -------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Serialize the settings (not the documents: those live in ``index_dir``)."""
        return default_to_dict(
            self,
            index_dir=self.index_dir,
            k1=self.k1,
            b=self.b,
            analyzer=self.analyzer.to_dict(),
            meta_fields_to_index=self.meta_fields,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbeddedBM25DocumentStore":
        """Rebuild from :meth:`to_dict`, loading the documents from ``index_dir``.

        A serialized ``index_dir`` that holds no index (moved or deleted) raises ``FileNotFoundError`` naming it,
        instead of opening an empty store.
        """
        index_dir = data.get("init_parameters", {}).get("index_dir")
        if index_dir is not None:
            require_index(index_dir)
        return default_from_dict(cls, data)

    # --- index upkeep (the DocumentStore protocol itself is in InMemoryIndexedStore) ------------

    def _index_written(self, documents: list[Document]) -> None:
        progress = len(documents) > 10000 and not are_progress_bars_disabled()
        analyzed = self.analyzer.analyze_many([self._text(d) for d in documents], progress=progress)
        if self._terms is not None:
            self._terms.update((document.id, terms) for document, terms in zip(documents, analyzed))
        if self._engine is None:
            return  # built from self._terms at the next search
        if self._engine_avgdl is None:  # an older folder: no statistics for a delta, rebuild instead
            self._engine = None
            return
        for document, terms in zip(documents, analyzed):
            self._mark_dead(document.id)
            self._delta_remove(document.id)
            self._delta[document.id] = (Counter(terms), len(terms))
            for term in self._delta[document.id][0]:
                self._delta_postings.setdefault(term, set()).add(document.id)

    def _index_removed(self, document_ids: list[str]) -> None:
        for doc_id in document_ids:
            if self._terms is not None:
                self._terms.pop(doc_id, None)
            self._delta_remove(doc_id)
            if self._engine is not None:
                self._mark_dead(doc_id)

    def _index_cleared(self) -> None:
        self._terms = {}
        self._set_engine(None, [], None)

    def _set_engine(self, engine: bm25s.BM25 | None, ids: list[str] | None, avgdl: float | None) -> None:
        self._engine, self._engine_ids, self._engine_avgdl = engine, ids, avgdl
        self._engine_df, self._rows, self._dead, self._delta, self._delta_postings = None, None, set(), {}, {}

    def _delta_remove(self, doc_id: str) -> None:
        counts, _ = self._delta.pop(doc_id, (Counter(), 0))
        for term in counts:
            holders = self._delta_postings[term]
            holders.discard(doc_id)
            if not holders:
                del self._delta_postings[term]

    def _mark_dead(self, doc_id: str) -> None:
        """A matrix row of ``doc_id`` no longer counts (snapshot rows: the table has hidden it already)."""
        if self._engine_ids is None:
            return
        if self._rows is None:
            self._rows = {doc_id: row for row, doc_id in enumerate(self._engine_ids)}
        row = self._rows.get(doc_id)
        if row is not None:
            self._dead.add(row)

    def _engine_size(self) -> int:
        return len(self._documents.snapshot) if self._engine_ids is None else len(self._engine_ids)

    def _row_mask(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        """Over the matrix rows: live and matching ``filters`` (None when every row is)."""
        if self._engine_ids is None:
            return self._documents.snapshot_mask(filters)
        if not filters and not self._dead:
            return None
        mask = np.ones(len(self._engine_ids), dtype=bool)
        mask[list(self._dead)] = False
        if filters:
            live = [self._documents.get(doc_id) if ok else None for doc_id, ok in zip(self._engine_ids, mask)]
            mask &= [doc is not None and document_matches_filter(filters=filters, document=doc) for doc in live]
        return mask

    def compact(self) -> None:
        """Fold the delta (documents written since the BM25 matrix was built) into a new matrix.

        Afterwards every score equals a fresh index's of the same documents. :meth:`save` compacts first.
        """
        with self._lock:
            if self._delta or self._dead or (self._engine_ids is None and self._documents.hidden):
                self._engine = None
            self._ensure_engine()

    def _wants_snapshot(self) -> bool:
        return len(self._delta) > max(DELTA_MIN, DELTA_SHARE * len(self._documents))

    # --- search ----------------------------------------------------------------------------

    def search_ids(
        self, queries: list[str], top_k: int = 10, filters: dict[str, Any] | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each query, ``[(doc_id, score)]`` best first; documents sharing no term are left out."""
        with self._lock:
            results = self._search(queries, top_k, filters)
            rows = [row for hits in results for _, _, row in hits if row is not None]
            names = iter(self._documents.snapshot.ids(rows) if rows else ())
            return [[(next(names) if row is not None else doc_id, score) for doc_id, score, row in hits]
                    for hits in results]

    def _search(self, queries: list[str], top_k: int, filters: dict[str, Any] | None):
        """For each query, ``[(doc_id, score, None)]`` or, for a snapshot row, ``[(None, score, row)]``, best first
        (a row's id is read only when asked for: its document holds it)."""
        validate_filters(filters)
        with self._lock:  # reentrant: callers that look the ids up hold it across both steps
            if self.index_dir is None and len(self._delta) > max(DELTA_MIN, DELTA_SHARE * len(self._documents)):
                self.compact()  # with a folder, the write that grew the delta saved a new snapshot instead
            self._ensure_engine()
            if (self._engine is None and not self._delta) or not queries:
                return [[] for _ in queries]
            query_terms = self.analyzer.analyze_many(queries)
            results = self._search_matrix(query_terms, top_k, filters)
            if self._delta:
                delta = self._search_delta(query_terms, top_k, filters)
                results = [sorted(a + b, key=lambda hit: -hit[1])[:top_k] for a, b in zip(results, delta)]
        return results

    def _search_matrix(self, query_terms: list[list[str]], top_k: int, filters: dict[str, Any] | None):
        if self._engine is None:
            return [[] for _ in query_terms]
        mask = self._row_mask(filters)
        if mask is not None and not mask.any():
            return [[] for _ in query_terms]
        if mask is None:
            k = min(top_k, self._engine_size())
            rows, scores = self._engine.retrieve(query_terms, k=k, show_progress=False)
        else:  # bm25s's weight_mask leaves mostly zeros, on which numpy's argpartition is slow: select among the rows
            live = np.flatnonzero(mask)
            rows, scores = zip(*(self._top_rows(terms, top_k, live) for terms in query_terms))
        kept = [[(r, float(s)) for r, s in zip(row_ids.tolist(), row_scores.tolist()) if s > 0]
                for row_ids, row_scores in zip(rows, scores)]
        if self._engine_ids is None:
            return [[(None, s, r) for r, s in hits] for hits in kept]
        return [[(self._engine_ids[r], s, None) for r, s in hits] for hits in kept]

    def _top_rows(self, terms: list[str], top_k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` best of matrix ``rows`` for one query, best first (ties: lower row first)."""
        token_ids = self._engine.get_tokens_ids(terms)
        if not token_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self._engine.get_scores_from_ids(token_ids)[rows]
        best = np.argpartition(-scores, top_k - 1)[:top_k] if top_k < len(scores) else np.arange(len(scores))
        best = best[np.lexsort((rows[best], -scores[best]))]
        return rows[best], scores[best]

    def _search_delta(self, query_terms: list[list[str]], top_k: int, filters: dict[str, Any] | None):
        """The delta's documents holding a query term, scored by the rule in the class docstring."""
        if self._engine_df is None and self._engine is not None:
            self._engine_df = np.diff(np.asarray(self._engine.scores["indptr"]))
        n = (self._engine_size() if self._engine is not None else 0) + len(self._delta)
        vocabulary = self._engine.vocab_dict if self._engine is not None else {}
        avgdl = self._engine_avgdl or 1.0
        allowed: dict[str, bool] = {}  # filter verdicts, each document judged once per call

        def idf(term: str) -> float:
            column = vocabulary.get(term)
            df = len(self._delta_postings[term]) + (int(self._engine_df[column]) if column is not None else 0)
            return math.log(1 + (n - df + 0.5) / (df + 0.5))

        results = []
        for terms in query_terms:
            weights = {term: idf(term) for term in set(terms) if term in self._delta_postings}
            candidates = set().union(*(self._delta_postings[term] for term in weights))
            hits = []
            for doc_id in candidates:
                if filters and doc_id not in allowed:
                    allowed[doc_id] = document_matches_filter(filters=filters, document=self._documents[doc_id])
                if filters and not allowed[doc_id]:
                    continue
                counts, length = self._delta[doc_id]
                norm = self.k1 * (1 - self.b + self.b * length / avgdl)
                score = sum(weights[t] * counts[t] / (norm + counts[t]) for t in terms if counts.get(t))
                hits.append((doc_id, float(score), None))
            results.append(sorted(hits, key=lambda hit: (-hit[1], hit[0]))[:top_k])  # ties: by id
        return results

    def bm25_retrieval(
        self, query: str, top_k: int = 10, filters: dict[str, Any] | None = None, scale_score: bool = False
    ) -> list[Document]:
        """The ``top_k`` best documents for ``query``, each a copy carrying its BM25 ``score``.

        ``scale_score`` maps scores to (0, 1) as ``InMemoryDocumentStore`` does: ``expit(score / 8)``.
        """
        return self.bm25_retrieval_batch([query], top_k, filters, scale_score)[0]

    def bm25_retrieval_batch(
        self, queries: list[str], top_k: int = 10, filters: dict[str, Any] | None = None, scale_score: bool = False
    ) -> list[list[Document]]:
        """:meth:`bm25_retrieval` for many queries in one bm25s search."""
        with self._lock:  # one hold: a document deleted by another thread meanwhile is never looked up
            results = self._search(queries, top_k, filters)
            rows = [row for hits in results for _, _, row in hits if row is not None]
            read = iter(self._documents.snapshot.documents(rows)) if rows else iter(())
            return [
                [replace(next(read) if row is not None else self._documents[doc_id],
                         score=expit(score / BM25_SCALING_FACTOR) if scale_score else score)
                 for doc_id, score, row in hits]
                for hits in results
            ]

    async def bm25_retrieval_async(
        self, query: str, top_k: int = 10, filters: dict[str, Any] | None = None, scale_score: bool = False
    ) -> list[Document]:
        """Async :meth:`bm25_retrieval` (runs in a worker thread)."""
        return await self._in_thread(self.bm25_retrieval, query, top_k, filters, scale_score)

    def get_documents(self, document_ids: list[str]) -> list[Document]:
        """Stored documents by id, in the order asked (unknown ids raise ``KeyError``)."""
        with self._lock:
            return self._documents.get_many(list(document_ids))

    # --- persistence -----------------------------------------------------------------------

    def write_to(self, folder: Path) -> None:
        """Write the index files into an existing, empty ``folder`` (not atomic; see :meth:`save`), compacted."""
        with self._lock:
            self.compact()
            write_settings(folder, self.settings())
            # Compacted, the matrix rows are the documents in the table's order (built from it, nothing changed since).
            written = write_snapshot(folder, self._documents.values())
            if self._engine is not None:
                if written != self._engine_size():
                    raise RuntimeError(f"{written} documents but {self._engine_size()} matrix rows")  # a bug
                self._engine.save(str(folder / "bm25s"), show_progress=False)

    def settings(self) -> dict[str, Any]:
        """What ``index.json`` records about this index."""
        return {
            "backend": BACKEND_NAME,
            "format_version": 1,
            "k1": self.k1,
            "b": self.b,
            "method": "lucene",
            "analyzer": self.analyzer.to_dict(),
            "meta_fields_to_index": self.meta_fields,
            "documents": len(self._documents),
            "average_length": self._engine_avgdl,
        }

    def _load(self, folder: Path, settings: dict[str, Any]) -> None:
        if settings.get("backend") != BACKEND_NAME:
            raise ValueError(f"{folder} holds a {settings.get('backend')!r} index, not an embedded BM25 index")
        self.analyzer = Analyzer.from_dict(settings.get("analyzer"))
        self.k1, self.b = float(settings["k1"]), float(settings["b"])
        self.meta_fields = list(settings.get("meta_fields_to_index", DEFAULT_META_FIELDS))
        self._documents = open_documents(folder)
        self._terms = None  # analyzed again only for a compaction
        if (folder / "bm25s").is_dir():
            engine = bm25s.BM25.load(str(folder / "bm25s"), mmap=True, show_progress=False)
            snapshot = self._documents.snapshot
            ids = None if snapshot is not None else list(self._documents.written)  # an older folder: a list
            self._set_engine(engine, ids, settings.get("average_length"))
            rows = self._engine.scores.get("num_docs")
            if rows != len(self._documents):
                raise IndexFolderError(f"{folder}: {len(self._documents)} documents, the BM25 matrix in "
                                       f"{folder / 'bm25s'} has {rows} rows")

    def _text(self, document: Document) -> str:
        return document_text(document, self.meta_fields)

    def _term_batches(self, progress: bool) -> Iterator[tuple[list[str], list[list[str]]]]:
        """Every document's id and terms, in table order, a batch at a time (analyzed now when not held)."""
        if self._terms is not None:
            ids = list(self._documents.written)  # a store without a folder holds everything in memory
            for start in range(0, len(ids), BATCH_ROWS):
                yield ids[start : start + BATCH_ROWS], [self._terms[i] for i in ids[start : start + BATCH_ROWS]]
            return
        documents = tqdm(self._documents.values(), total=len(self._documents), desc="analyzing", unit="doc",
                         disable=not progress)
        for batch in _batched(documents, BATCH_ROWS):
            yield [d.id for d in batch], [self.analyzer.analyze(self._text(d)) for d in batch]

    def _ensure_engine(self) -> None:
        if self._engine is not None:
            return
        progress = len(self._documents) > 10000 and not are_progress_bars_disabled()
        builder = BM25MatrixBuilder(self.k1, self.b)
        ids: list[str] = []
        for batch_ids, terms in self._term_batches(progress):
            ids.extend(batch_ids)
            builder.add(terms)
        engine, avgdl = builder.build()
        self._set_engine(engine, ids if engine is not None else [], avgdl)

    def stream_to(self, folder: Path, documents: Iterable[Document], total: int | None = None) -> int:
        """Write an index of ``documents`` into the empty ``folder``, streaming; returns how many were written.

        Memory holds the terms of the documents as compact arrays (see :class:`BM25MatrixBuilder`) and their ids,
        never the documents. A document whose id came earlier in the stream replaces it (a second pass then
        rewrites the folder without the replaced ones). This store must be empty and is left unchanged; ``total``
        (the expected count) gives the progress bar an ETA.
        """
        if self._documents:
            raise ValueError("stream_to writes a new index: the store must be empty")
        folder = Path(folder)
        builder = BM25MatrixBuilder(self.k1, self.b)
        writer = SnapshotWriter(folder, unique=False)
        rows: dict[str, int] = {}
        replaced: set[int] = set()
        progress = tqdm(total=total, desc="indexing", unit="doc",
                        disable=are_progress_bars_disabled() or (total or 0) <= 10000)
        with progress:
            for batch in _batched(documents, BATCH_ROWS):
                for offset, document in enumerate(batch):
                    earlier = rows.get(document.id)
                    if earlier is not None:
                        replaced.add(earlier)
                    rows[document.id] = writer.count + offset
                writer.add(batch)
                builder.add([self.analyzer.analyze(self._text(d)) for d in batch])
                progress.update(len(batch))
        count = writer.close()
        del rows
        if replaced:  # rewrite without the replaced rows: a stream of unique ids, so no third pass
            kept = DocumentTable(Snapshot(folder))
            kept.hidden = replaced
            with tempfile.TemporaryDirectory(dir=folder) as rewritten:
                count = self.stream_to(Path(rewritten), kept.values(), total=len(kept))
                del kept
                for name in os.listdir(rewritten):
                    os.replace(Path(rewritten) / name, folder / name)
            return count
        engine, avgdl = builder.build()
        write_settings(folder, {**self.settings(), "documents": count, "average_length": avgdl})
        if engine is not None:
            engine.save(str(folder / "bm25s"), show_progress=False)
        return count


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@component
class EmbeddedBM25Retriever(StoreRetriever):
    """Haystack retriever over an :class:`EmbeddedBM25DocumentStore`, like ``InMemoryBM25Retriever``.

    Usage:
        retriever = EmbeddedBM25Retriever(store, top_k=5, filter_policy="merge")
        retriever.run(query="boundary layer")["documents"]
    """

    store_class = EmbeddedBM25DocumentStore

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
    ) -> dict[str, list[Document]]:
        """Return ``{"documents": [...]}``, best first, each with its BM25 ``score``.

        ``filters`` combine with the init filters per ``filter_policy``; ``top_k`` and ``scale_score`` override
        the init values for this call.
        """
        arguments = self._search_arguments(top_k, filters, scale_score)
        return {"documents": self.document_store.bm25_retrieval(query, **arguments)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
    ) -> dict[str, list[Document]]:
        """Async :meth:`run`: the search runs in the store's worker thread."""
        arguments = self._search_arguments(top_k, filters, scale_score)
        return {"documents": await self.document_store.bm25_retrieval_async(query, **arguments)}

    def run_batch(
        self,
        query: list[str],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        scale_score: bool | None = None,
    ) -> dict[str, list[list[Document]]]:
        """:meth:`run` for many queries in one bm25s search: ``{"documents": [one list a query]}``."""
        arguments = self._search_arguments(top_k, filters, scale_score)
        return {"documents": self.document_store.bm25_retrieval_batch(list(query), **arguments)}
