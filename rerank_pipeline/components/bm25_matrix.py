"""A Lucene BM25 matrix built from documents' terms given in batches, in bounded memory.

``bm25s.BM25.index`` needs every document's term list at once (about 1.5 GB of
Python objects per million documents). :class:`BM25MatrixBuilder` keeps, per
document, only compact numpy arrays (the ids and counts of its distinct terms,
its length) plus one ``term -> id`` dict, and at :meth:`~BM25MatrixBuilder.build`
writes the sparse matrix in bm25s's format with bm25s's own score functions, so
that ``retrieve``, ``get_scores``, ``save`` and ``load`` give what
``bm25s.BM25(k1=k1, b=b, method="lucene").index(corpus_terms)`` gives.
Column (term) ids differ from bm25s's, which follow a set's order; no score does.
"""

from __future__ import annotations

from array import array
from itertools import chain

import bm25s
import numpy as np
# Private, kept on purpose: bm25s's own IDF and term-frequency formulas, so the matrix scores equal bm25s's; bm25s
# exposes them under no public name.
from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

METHOD = "lucene"
CHUNK_DOCUMENTS = 4096  # documents of small batches are kept together in chunks of at least this many


class BM25MatrixBuilder:
    """Builds a Lucene BM25 matrix (bm25s's format) from documents' terms given in batches, in row order."""

    def __init__(self, k1: float, b: float) -> None:
        self.k1, self.b = k1, b
        self._vocabulary: dict[str, int] = {}
        # one (term ids, term frequencies, distinct terms per document, document lengths) per chunk, int32 but the
        # frequencies (uint16 when they fit); the entries of a chunk are sorted by document, then term id
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_ids, self._pending_lengths = array("i"), array("i")
        self._documents = 0
        self._built = False

    def add(self, batch: list[list[str]]) -> None:
        """Add the terms of the next documents (repeats kept), in row order."""
        if self._built:
            raise RuntimeError("build() was called: this builder is spent")
        vocabulary = self._vocabulary
        for term in dict.fromkeys(chain.from_iterable(batch)):  # new terms get ids in order of first use
            if term not in vocabulary:
                vocabulary[term] = len(vocabulary)
        if len(vocabulary) > np.iinfo(np.int32).max:
            raise ValueError("more distinct terms than int32 term ids can number")
        self._pending_ids.extend(map(vocabulary.__getitem__, chain.from_iterable(batch)))
        self._pending_lengths.extend(map(len, batch))
        self._documents += len(batch)
        if len(self._pending_lengths) >= CHUNK_DOCUMENTS:
            self._seal()

    @property
    def documents(self) -> int:
        """Documents added so far."""
        return self._documents

    def build(self) -> tuple[bm25s.BM25 | None, float | None]:
        """The engine and the average document length; ``(None, None)`` when no document has a term.

        The builder is spent afterwards (its vocabulary is the engine's).
        """
        if self._built:
            raise RuntimeError("build() was called already")
        self._seal()
        self._built = True
        chunks, self._chunks = self._chunks, []
        n_docs = self._documents
        vocabulary, self._vocabulary = self._vocabulary, {}
        n_vocab = len(vocabulary)
        lengths = np.concatenate([c[3] for c in chunks]).astype(np.int64) if chunks else np.zeros(0, np.int64)
        if n_docs == 0 or not lengths.any():
            return None, None
        avg_doc_len = lengths.mean()  # np.float64, as bm25s computes and passes it
        del lengths

        df = np.zeros(n_vocab, dtype=np.int64)
        for term_ids, *_ in chunks:
            df += np.bincount(term_ids, minlength=n_vocab)
        # bm25s: _build_idf_array, one Python-float idf per term stored as float32
        idf_fn = _select_idf_scorer(METHOD)
        idf = np.fromiter((idf_fn(d, N=n_docs) for d in df.tolist()), dtype=np.float32, count=n_vocab)

        indptr = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        del df
        nnz = int(indptr[-1])
        data = np.empty(nnz, dtype=np.float32)
        indices = np.empty(nnz, dtype=np.int32)
        heads = indptr[:-1].copy()  # next free slot of each column
        tfc_fn = _select_tfc_scorer(METHOD)
        first_row = 0
        while chunks:
            term_ids, tf, distinct, doc_lengths = chunks.pop(0)  # freed once placed
            rows = np.repeat(np.arange(first_row, first_row + len(distinct), dtype=np.int32), distinct)
            first_row += len(distinct)
            # bm25s: _build_scores_and_indices_for_matrix, here for a chunk at once; under numpy 2's promotion rules
            # its per-document arithmetic is float64 too, so each score is the same float32
            tfc = tfc_fn(tf_array=tf.astype(np.float32), l_d=np.repeat(doc_lengths, distinct), l_avg=avg_doc_len,
                         k1=self.k1, b=self.b, delta=None)
            scores = (idf[term_ids] * tfc).astype(np.float32)
            del tf, tfc
            # counting sort by term id; stable, so each column's rows stay ascending
            order = np.argsort(term_ids, kind="stable")
            sorted_ids = term_ids[order]
            starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
            counts = np.diff(np.r_[starts, len(sorted_ids)])
            rank = np.arange(len(sorted_ids)) - np.repeat(starts, counts)
            slots = heads[sorted_ids] + rank
            data[slots] = scores[order]
            indices[slots] = rows[order]
            heads[sorted_ids[starts]] += counts
            del term_ids, rows, scores, order, sorted_ids, starts, counts, rank, slots
        if first_row != n_docs or not np.array_equal(heads, indptr[1:]):
            raise AssertionError("BM25 matrix: entries and column counts disagree")

        engine = bm25s.BM25(k1=self.k1, b=self.b, method=METHOD)
        engine.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}
        if "" not in vocabulary:  # bm25s's index(create_empty_token=True): an id past the last column
            vocabulary[""] = n_vocab
        engine.vocab_dict = vocabulary
        engine.unique_token_ids_set = set(vocabulary.values())
        engine.nonoccurrence_array = None
        return engine, float(avg_doc_len)

    def _seal(self) -> None:
        """Turn the pending documents into a chunk: each document's distinct term ids and their counts."""
        if not self._pending_lengths:
            return
        ids = np.frombuffer(self._pending_ids, dtype=np.int32).astype(np.int64) if self._pending_ids else \
            np.zeros(0, np.int64)
        lengths = np.frombuffer(self._pending_lengths, dtype=np.int32).copy()
        self._pending_ids, self._pending_lengths = array("i"), array("i")
        docs = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        keys, tf = np.unique((docs << 32) | ids, return_counts=True)
        del ids, docs
        distinct = np.bincount(keys >> 32, minlength=len(lengths)).astype(np.int32)
        term_ids = (keys & 0xFFFFFFFF).astype(np.int32)
        del keys
        tf = tf.astype(np.uint16 if len(tf) == 0 or tf.max() <= np.iinfo(np.uint16).max else np.int32)
        self._chunks.append((term_ids, tf, distinct, lengths))
