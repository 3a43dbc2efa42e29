"""BM25MatrixBuilder: the engine it builds from batches retrieves exactly what bm25s's own index does."""

from __future__ import annotations

import json
import logging
import tracemalloc

import bm25s
import numpy as np
import pytest

from rerank_pipeline.components.bm25 import Analyzer
from rerank_pipeline.components.bm25_matrix import BM25MatrixBuilder

logging.getLogger("bm25s").setLevel(logging.WARNING)

K1, B = 0.9, 0.4


def reference(corpus: list[list[str]], k1: float = K1, b: float = B) -> bm25s.BM25:
    engine = bm25s.BM25(k1=k1, b=b, method="lucene")
    engine.index(corpus, show_progress=False)
    return engine


def built(corpus: list[list[str]], sizes: list[int], k1: float = K1, b: float = B):
    builder = BM25MatrixBuilder(k1, b)
    start = 0
    for size in sizes:
        builder.add(corpus[start:start + size])
        start += size
    builder.add(corpus[start:])
    assert builder.documents == len(corpus)
    return builder.build()


def uneven_sizes(rng: np.random.Generator, n: int) -> list[int]:
    sizes, total = [], 0
    while total < n:
        size = int(rng.choice([0, 1, 7, 60, 5000]))
        sizes.append(size)
        total += size
    return sizes


def random_corpus(seed: int, n_docs: int = 400, n_words: int = 300) -> tuple[list[list[str]], list[list[str]]]:
    """Zipf-ish documents (some empty, with repeats), and queries (some with no known term, or none at all)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n_words)]
    corpus = [[words[j % n_words] for j in rng.zipf(1.4, size=int(rng.integers(0, 50)))] for _ in range(n_docs)]
    for row in rng.choice(n_docs, size=n_docs // 20, replace=False):
        corpus[row] = []
    corpus[0], corpus[-1] = [], []
    queries = [[words[j] for j in rng.integers(0, n_words, size=int(rng.integers(1, 6)))] for _ in range(46)]
    queries += [["unknown"], ["unknown", words[0]], [words[1], words[1]], []]
    return corpus, queries


def assert_same_matrix(ours: bm25s.BM25, theirs: bm25s.BM25) -> None:
    """Each term's column (rows and scores) is the same; only the column ids differ."""
    assert ours.scores["num_docs"] == theirs.scores["num_docs"]
    assert set(ours.vocab_dict) == set(theirs.vocab_dict)
    for name in ("data", "indices", "indptr"):
        assert ours.scores[name].dtype == theirs.scores[name].dtype, name
    assert len(ours.scores["indptr"]) == len(theirs.scores["indptr"])

    def column(engine, term):
        i = engine.vocab_dict[term]
        if i + 1 >= len(engine.scores["indptr"]):
            return None  # bm25s's empty token: an id past the last column
        lo, hi = engine.scores["indptr"][i], engine.scores["indptr"][i + 1]
        return engine.scores["indices"][lo:hi].tolist(), engine.scores["data"][lo:hi].tolist()

    for term in theirs.vocab_dict:
        assert column(ours, term) == column(theirs, term), term


def assert_same_retrieval(ours: bm25s.BM25, theirs: bm25s.BM25, queries: list[list[str]], seed: int = 0) -> None:
    n = theirs.scores["num_docs"]
    rng = np.random.default_rng(seed)
    masks = [None, (rng.random(n) < 0.7).astype(np.float32), rng.random(n).astype(np.float32)]
    for k in sorted({min(10, n), n}):
        for mask in masks:
            a = ours.retrieve(queries, k=k, show_progress=False, weight_mask=mask)
            b = theirs.retrieve(queries, k=k, show_progress=False, weight_mask=mask)
            assert a.documents.shape == (len(queries), k)
            np.testing.assert_array_equal(a.documents, b.documents)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=0)
    for query in queries:
        if query:  # bm25s's get_scores reads query[0]
            np.testing.assert_allclose(ours.get_scores(query), theirs.get_scores(query), rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_corpus_matches_bm25s(seed):
    corpus, queries = random_corpus(seed)
    rng = np.random.default_rng(100 + seed)
    sizes = [int(s) for s in rng.integers(1, 90, size=6)]
    engine, avgdl = built(corpus, sizes)
    ref = reference(corpus)
    assert isinstance(avgdl, float)
    assert avgdl == float(np.mean([len(doc) for doc in corpus]))
    assert_same_matrix(engine, ref)
    assert_same_retrieval(engine, ref, queries, seed)
    assert np.any(engine.get_scores(queries[0]) > 0)


def test_batch_sizes_do_not_matter():
    corpus, queries = random_corpus(3, n_docs=9000, n_words=500)
    ref = reference(corpus)
    for sizes in ([9000], [1] * 50 + [4000], uneven_sizes(np.random.default_rng(3), 9000)):
        engine, avgdl = built(corpus, sizes)
        assert avgdl == float(np.mean([len(doc) for doc in corpus]))
        assert_same_matrix(engine, ref)
    assert_same_retrieval(engine, ref, queries[:10])


def test_other_parameters_and_an_empty_string_term():
    corpus, queries = random_corpus(4, n_docs=200)
    corpus[5] = ["", "w1", ""]  # a real "" term gets a column, as in bm25s
    engine, _ = built(corpus, [50, 50], k1=1.5, b=0.75)
    ref = reference(corpus, k1=1.5, b=0.75)
    assert_same_matrix(engine, ref)
    assert_same_retrieval(engine, ref, queries + [[""], ["", "w2"]])


def test_query_of_the_empty_string_fails_as_in_bm25s():
    corpus, _ = random_corpus(5, n_docs=50)
    engine, _ = built(corpus, [20])
    ref = reference(corpus)
    assert engine.vocab_dict[""] == len(engine.scores["indptr"]) - 1
    for e in (engine, ref):
        with pytest.raises(ValueError, match="higher than the number of tokens"):
            e.retrieve([[""]], k=3, show_progress=False)


def test_save_and_load_mmap_round_trip(tmp_path):
    corpus, queries = random_corpus(6)
    engine, _ = built(corpus, [33, 100, 7])
    engine.save(str(tmp_path / "ours"), show_progress=False)
    loaded = bm25s.BM25.load(str(tmp_path / "ours"), mmap=True, show_progress=False)
    assert isinstance(loaded.scores["data"], np.memmap)
    params = json.loads((tmp_path / "ours" / "params.index.json").read_text())
    assert (params["k1"], params["b"], params["method"], params["num_docs"]) == (K1, B, "lucene", len(corpus))
    ref = reference(corpus)
    assert_same_matrix(loaded, ref)
    assert_same_retrieval(loaded, ref, queries)


def test_no_terms_gives_none():
    assert BM25MatrixBuilder(K1, B).build() == (None, None)
    builder = BM25MatrixBuilder(K1, B)
    builder.add([[], []])
    builder.add([])
    builder.add([[]])
    assert builder.documents == 3
    assert builder.build() == (None, None)


def test_one_document():
    corpus = [["wing", "flow", "wing"]]
    engine, avgdl = built(corpus, [])
    ref = reference(corpus)
    assert avgdl == 3.0
    assert_same_matrix(engine, ref)
    assert_same_retrieval(engine, ref, [["wing"], ["flow", "wing"], ["nothing"]])
    assert engine.retrieve([["wing"]], k=1, show_progress=False).scores[0, 0] > 0


def test_builder_is_spent_after_build():
    builder = BM25MatrixBuilder(K1, B)
    builder.add([["a"]])
    assert builder.build()[0] is not None
    with pytest.raises(RuntimeError):
        builder.add([["b"]])
    with pytest.raises(RuntimeError):
        builder.build()


def test_kept_memory_is_compact_arrays():
    """What add keeps is about 8 bytes per distinct (document, term) and per document, not the term lists."""
    rng = np.random.default_rng(7)
    words = [f"term{i}" for i in range(200)]
    corpus = [[words[j] for j in rng.integers(0, 200, size=60)] for _ in range(8000)]
    entries = sum(len(set(doc)) for doc in corpus)
    builder = BM25MatrixBuilder(K1, B)
    builder.add(corpus[:10])  # the vocabulary dict exists before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(10, len(corpus), 1000):
            builder.add(corpus[start:start + 1000])
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 8 * entries + 8 * len(corpus) + 64 * 1024, (kept, entries)
    assert kept < 0.8 * sum(8 * len(doc) + 56 for doc in corpus)  # less than the term lists' pointers alone
    engine, _ = builder.build()
    assert_same_matrix(engine, reference(corpus))


def test_cranfield_matches_bm25s(cranfield_dir):
    analyzer = Analyzer()
    with open(cranfield_dir / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    corpus = [analyzer.analyze(row.get("title", "") + " " + row.get("text", "")) for row in rows]
    with open(cranfield_dir / "queries.jsonl", encoding="utf-8") as f:
        queries = [analyzer.analyze(json.loads(line)["text"]) for line in f][:60]
    engine, avgdl = built(corpus, [1, 299, 500])
    ref = reference(corpus)
    assert avgdl == float(np.mean([len(doc) for doc in corpus]))
    assert_same_matrix(engine, ref)
    assert_same_retrieval(engine, ref, queries)


def test_term_frequencies_past_uint16():
    corpus = [["a"] * 70000 + ["b"], ["a", "c"], []]
    engine, avgdl = built(corpus, [1])
    ref = reference(corpus)
    assert avgdl == float(np.mean([len(doc) for doc in corpus]))
    assert_same_matrix(engine, ref)
    assert_same_retrieval(engine, ref, [["a"], ["b"], ["c", "a"]])
