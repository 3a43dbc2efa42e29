"""The score cache in a served pipeline: `serve`/`export --score-cache`, GET /status, the log line, eval turns it off."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from test_pipelines import DOCS

from rerank_pipeline.cli import build_parser, main
from rerank_pipeline.first_stage import build_first_stage
from rerank_pipeline.pipelines import (
    build_pipeline,
    score_cache_infos,
    score_caches_off,
    search,
)
from rerank_pipeline.serving import DEFAULT_SCORE_CACHE

QUERY = "wing flutter"  # three of the six documents match


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache") / "bm25"
    build_first_stage("bm25", index_dir=folder).index(DOCS)
    return folder


def ranker_parameters(path) -> dict:
    return yaml.safe_load(path.read_text())["components"]["ranker"]["init_parameters"]


def test_serve_and_export_cache_by_default_and_eval_has_no_cache_flag(bm25_index, tiny_bert, tmp_path, capsys):
    parser = build_parser()
    for arguments in (["serve", "--index-dir", "i"], ["export", "--index-dir", "i", "--output", "o"]):
        assert parser.parse_args(arguments).score_cache == DEFAULT_SCORE_CACHE > 0
    assert not hasattr(parser.parse_args(["eval", "--beir-dir", "b"]), "score_cache")
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--index-dir", "i", "--score-cache", "-1"])
    assert "--score-cache: must be >= 0, got -1" in capsys.readouterr().err
    for flags, expected in (([], DEFAULT_SCORE_CACHE), (["--score-cache", "0"], 0), (["--score-cache", "7"], 7)):
        output = tmp_path / f"search{len(flags)}{expected}.yml"
        assert main(["export", "--index-dir", str(bm25_index), "--model", str(tiny_bert), "--output", str(output),
                     *flags]) == 0
        assert ranker_parameters(output)["score_cache"] == expected


def test_status_shows_the_cache_and_the_server_logs_it(bm25_index, tiny_bert, monkeypatch):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("hayhooks", reason="pip install 'rerank-pipeline[serve]' for serving")
    from hayhooks.server.logger import log

    from rerank_pipeline import serving

    monkeypatch.setattr(serving, "SCORE_CACHE_LOG_EVERY", 2)
    pipeline = build_pipeline(bm25_index, ranker_model=str(tiny_bert), top_k=2, candidates=3,
                              ranker_options={"score_cache": 50})
    app = serving.create_app(serving.hayhooks_yaml(pipeline), name="search")
    lines: list[str] = []
    sink = log.add(lambda message: lines.append(str(message)), level="INFO")

    async def scenario() -> tuple[dict, dict, list, dict]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            before = (await client.get("/status")).json()
            first = (await client.post("/search/run", json={"query": QUERY})).json()
            second = (await client.post("/search/run", json={"query": QUERY})).json()
            after = (await client.get("/status")).json()
            paths = set((await client.get("/openapi.json")).json()["paths"])
            assert (await client.get("/status/search")).json() == {"status": "Up!", "pipeline": "search"}
            assert (await client.get("/status/elsewhere")).status_code == 404
        return before, after, [first, second], paths

    try:
        before, after, answers, paths = asyncio.run(scenario())
    finally:
        log.remove(sink)
    assert before["status"] == "Up!" and before["pipelines"] == ["search"]
    assert before["score_cache"] == {"search": {"ranker": {"max_entries": 50, "entries": 0, "hits": 0, "misses": 0,
                                                           "evictions": 0}}}
    assert after["score_cache"]["search"]["ranker"] == {"max_entries": 50, "entries": 3, "hits": 3, "misses": 3,
                                                        "evictions": 0}
    assert answers[0] == answers[1] and len(answers[0]["result"]["ranker"]["documents"]) == 2
    assert paths == {"/status", "/status/{pipeline_name}", "/search/run"}
    logged = [line for line in lines if "score cache:" in line]
    assert len(logged) == 1 and "ranker: 3/50 entries, hit rate 50.0% (3 hits, 3 misses, 0 evictions)" in logged[0]


def test_eval_turns_a_pipelines_cache_off_and_restores_it(bm25_index, tiny_bert):
    pipeline = build_pipeline(bm25_index, ranker_model=str(tiny_bert), top_k=2, ranker_options={"score_cache": 10})
    with score_caches_off(pipeline) as turned_off:
        assert turned_off == ["ranker"]
        search(pipeline, QUERY)
        assert score_cache_infos(pipeline)["ranker"]["max_entries"] == 0
    assert score_cache_infos(pipeline) == {"ranker": {"max_entries": 10, "entries": 0, "hits": 0, "misses": 0,
                                                      "evictions": 0}}
    search(pipeline, QUERY)
    assert score_cache_infos(pipeline)["ranker"]["misses"] == 3
