"""CrossEncoderRanker's score cache: exact hits, rescoring of edited documents, LRU bound, threads, serialization."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from haystack import Document

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.ranker.score_cache import ScoreCache

from test_ranker import QUERY
from test_ranker import TEXTS as RANKER_TEXTS

OTHER_QUERY = "shock wave on a wing"
TEXTS = RANKER_TEXTS[:5]
ZEROS = {"max_entries": 0, "entries": 0, "hits": 0, "misses": 0, "evictions": 0}


def documents(texts=TEXTS) -> list[Document]:
    return [Document(id=f"d{index}", content=text) for index, text in enumerate(texts)]


def scores(result: dict) -> dict[str, float]:
    return {document.id: document.score for document in result["documents"]}


def make(model: Path, **kwargs) -> CrossEncoderRanker:
    return CrossEncoderRanker(str(model), top_k=None, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def uncached(tiny_bert) -> CrossEncoderRanker:
    ranker = make(tiny_bert)
    ranker.warm_up()
    return ranker


def test_off_by_default_never_stores(tiny_bert, uncached):
    assert uncached.score_cache == 0
    uncached.run(QUERY, documents())
    uncached.run(QUERY, documents())
    assert uncached.score_cache_info() == ZEROS


def test_a_hit_returns_exactly_the_uncached_score(tiny_bert, uncached):
    ranker = make(tiny_bert, score_cache=100)
    expected = scores(uncached.run(QUERY, documents()))
    assert np.ptp(list(expected.values())) > 1e-3, "the tiny model must spread scores, else equality proves nothing"
    first = scores(ranker.run(QUERY, documents()))
    assert ranker.score_cache_info() == {"max_entries": 100, "entries": 5, "hits": 0, "misses": 5, "evictions": 0}
    second = scores(ranker.run(QUERY, documents()))
    assert ranker.score_cache_info()["hits"] == 5 and ranker.score_cache_info()["misses"] == 5
    assert first == expected and second == expected  # exact: raw logits are cached, the activation applies after
    raw = scores(ranker.run(QUERY, documents(), scale_score=False))
    assert raw == scores(uncached.run(QUERY, documents(), scale_score=False)) and raw != expected
    assert ranker.score_cache_info()["hits"] == 10


def test_an_edited_document_is_rescored_and_another_query_misses(tiny_bert, uncached):
    ranker = make(tiny_bert, score_cache=100)
    before = scores(ranker.run(QUERY, documents()))["d4"]
    edited = documents([*TEXTS[:4], "boundary layer pressure on a wing"])  # d4: same id, new content
    after = scores(ranker.run(QUERY, edited))
    assert after == pytest.approx(scores(uncached.run(QUERY, edited)), abs=1e-6)  # rescored alone: another batch
    assert abs(after["d4"] - before) > 1e-3
    info = ranker.score_cache_info()
    assert (info["hits"], info["misses"], info["entries"]) == (4, 6, 6)
    assert scores(ranker.run(OTHER_QUERY, documents())) == pytest.approx(scores(uncached.run(OTHER_QUERY, documents())), abs=1e-6)
    info = ranker.score_cache_info()
    assert (info["hits"], info["misses"], info["entries"]) == (4, 11, 11)


def test_meta_fields_are_part_of_the_scored_text(tiny_bert):
    ranker = make(tiny_bert, score_cache=100, meta_fields_to_embed=["title"])
    ranker.run(QUERY, [Document(id="d", content=TEXTS[0], meta={"title": "a wing"})])
    ranker.run(QUERY, [Document(id="d", content=TEXTS[0], meta={"title": "a plate"})])
    assert ranker.score_cache_info()["misses"] == 2


def test_least_recently_used_pairs_are_evicted_at_the_bound(tiny_bert, uncached):
    ranker = make(tiny_bert, score_cache=3)
    ranker.run(QUERY, documents())  # d0, d1 evicted
    assert ranker.score_cache_info() == {"max_entries": 3, "entries": 3, "hits": 0, "misses": 5, "evictions": 2}
    ranker.run(QUERY, documents()[4:])  # d4 hit, now the most recent
    ranker.run(QUERY, documents()[:1])  # d0 missed, evicts d2 (the least recent)
    assert ranker.score_cache_info() == {"max_entries": 3, "entries": 3, "hits": 1, "misses": 6, "evictions": 3}
    ranker.run(QUERY, [documents()[index] for index in (3, 4, 0)])  # all three kept
    assert ranker.score_cache_info()["hits"] == 4
    assert scores(ranker.run(QUERY, documents())) == pytest.approx(scores(uncached.run(QUERY, documents())), abs=1e-6)


def test_run_batch_scores_only_the_misses_once(tiny_bert, uncached):
    ranker = make(tiny_bert, score_cache=100)
    ranker.run(QUERY, documents()[:2])
    result = ranker.run_batch([QUERY, QUERY, OTHER_QUERY], [documents(), documents(), documents()[:1]])
    expected = uncached.run_batch([QUERY, QUERY, OTHER_QUERY], [documents(), documents(), documents()[:1]])
    for ours, theirs in zip(result["documents"], expected["documents"]):
        assert scores({"documents": ours}) == pytest.approx(scores({"documents": theirs}), abs=1e-6)
    info = ranker.score_cache_info()
    # 2 + 11 lookups; hits: d0, d1 of each QUERY list; a pair asked twice in a call is stored once
    assert (info["hits"], info["misses"], info["entries"]) == (4, 2 + 7, 2 + 3 + 1)


def test_predict_is_not_cached(tiny_bert):
    ranker = make(tiny_bert, score_cache=100)
    ranker.predict([(QUERY, text) for text in TEXTS])
    assert ranker.score_cache_info() == {**ZEROS, "max_entries": 100}


def test_concurrent_runs_count_every_lookup_and_score_as_uncached(tiny_bert, uncached):
    ranker = make(tiny_bert, score_cache=8)  # smaller than the pairs asked: hits, misses and evictions all happen
    queries = [QUERY, OTHER_QUERY, "laminar plate"]
    expected = {query: scores(uncached.run(query, documents())) for query in queries}
    errors: list[BaseException] = []
    calls_per_thread = 6

    def work(offset: int) -> None:
        try:
            for call in range(calls_per_thread):
                query = queries[(offset + call) % len(queries)]
                assert scores(ranker.run(query, documents())) == pytest.approx(expected[query], abs=1e-6)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    info = ranker.score_cache_info()
    assert info["hits"] + info["misses"] == 4 * calls_per_thread * len(TEXTS)
    distinct = len(queries) * len(TEXTS)
    assert info["entries"] == 8 and info["misses"] >= distinct and info["evictions"] >= distinct - 8


def test_to_dict_from_dict_keeps_the_bound(tiny_bert):
    ranker = make(tiny_bert, score_cache=1234)
    data = ranker.to_dict()
    assert data["init_parameters"]["score_cache"] == 1234
    loaded = CrossEncoderRanker.from_dict(data)
    assert loaded.score_cache == 1234 and loaded.score_cache_info()["max_entries"] == 1234
    assert make(tiny_bert).to_dict()["init_parameters"]["score_cache"] == 0


@pytest.mark.parametrize("value", [-1, 1.5, True, "10"])
def test_a_bad_bound_is_one_clear_error(tiny_bert, value):
    with pytest.raises(ValueError, match="score_cache must be an integer >= 0"):
        make(tiny_bert, score_cache=value)


def test_the_fingerprint_changes_with_what_changes_a_logit(tiny_bert, tmp_path):
    def fingerprint(model: Path, **kwargs) -> str:
        ranker = make(model, score_cache=10, **kwargs)
        ranker.warm_up()
        return ranker._score_cache_fingerprint()

    base = fingerprint(tiny_bert)
    assert fingerprint(tiny_bert) == base  # stable across instances
    for kwargs in ({"max_length": 32}, {"query_prefix": "query: "}, {"document_suffix": "."},
                   {"long_document": "max_passage"}, {"passage_overlap": 8}, {"quantize": True}):
        assert fingerprint(tiny_bert, **kwargs) != base, kwargs
    copy = shutil.copytree(tiny_bert, tmp_path / "model")
    copied = fingerprint(copy)
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # retrained in place
    assert fingerprint(copy) != copied


def test_score_cache_keys_and_bad_bounds():
    key = ScoreCache.key("f", "q", "d", "text")
    assert len(key) == 32 and key == ScoreCache.key("f", "q", "d", "text")
    assert key != ScoreCache.key("f", "q", "dt", "ext")  # fields cannot run into each other
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="max_entries must be an integer >= 1"):
            ScoreCache(bad)
    cache = ScoreCache(2)
    cache.put_many([b"a", b"b", b"c"], [(1.0,), (2.0,), (3.0,)])
    assert cache.get_many([b"a", b"b", b"c"]) == [None, (2.0,), (3.0,)]
    assert cache.info() == {"max_entries": 2, "entries": 2, "hits": 2, "misses": 1, "evictions": 1}
