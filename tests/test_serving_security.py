"""`rerank-pipeline serve` trusts nobody (issue 19): a client can search, nothing else, and one request's cost is
bounded. Two real servers (subprocesses on 127.0.0.1): one with the default limits, one with an API key and limits
raised so that huge queries reach the ranker; the request limits' busy and timeout answers are checked in-process."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.first_stage import build_first_stage
from test_pipelines import DOCS
from test_serving import LOOPBACK, QUERY, Server, free_port

pytest.importorskip("hayhooks", reason="pip install 'rerank-pipeline[serve]' for serving")

ALLOWED_ORIGIN = "https://allowed.example"
CANDIDATES, TOP_K = 3, 2  # "wing flutter" matches three of the six documents
ONE_MB_QUERY = "flutter wing " * 80659  # the 1 MB query
TEN_MB_QUERY = ONE_MB_QUERY * 10
RSS_HEADROOM_KB = 500 * 1024
API_KEY_VAR, API_KEY = "RERANK_PIPELINE_TEST_KEY", "s3cret-key-for-tests"
MARKER_WRAPPER = """
from pathlib import Path
Path({marker!r}).write_text("deployed")
from hayhooks import BasePipelineWrapper
class PipelineWrapper(BasePipelineWrapper):
    def setup(self):
        Path({marker!r}).write_text("set up")
    def run_api(self, query: str) -> str:
        return query
"""


def request(base: str, path: str, payload=None, *, method: str = "POST", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one request; HTTP errors are answers too."""
    data = body if body is not None else (json.dumps(payload).encode() if payload is not None else None)
    sent = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                  headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with LOOPBACK.open(sent, timeout=timeout) as response:
            status, answer_headers, text = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, text = error.code, error.headers, error.read()
    return status, {key.lower(): value for key, value in answer_headers.items()}, json.loads(text or b"null")


def search(base: str, payload, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    return request(base, "/search/run", payload, headers=headers)


def documents(answer: dict) -> list[dict]:
    return answer["result"]["ranker"]["documents"]


def rss_kb(pid: int) -> int:
    """The process's resident memory now (``VmRSS``), in kB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def start(work: Path, tiny_bert: Path, *flags: str, env: dict[str, str] | None = None) -> Server:
    index = work / "index"
    build_first_stage("bm25", index_dir=index).index(DOCS)
    port = free_port()
    command = [sys.executable, "-m", "rerank_pipeline", "serve", "--index-dir", str(index), "--model", str(tiny_bert),
               "--top-k", str(TOP_K), "--candidates", str(CANDIDATES), "--port", str(port), *flags]
    return Server(command, port, work, env={"RERANK_PIPELINE_CACHE": str(work / "cache"), **(env or {})})


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, tiny_bert):
    """The default limits, no API key, one listed CORS origin."""
    with start(tmp_path_factory.mktemp("open-server"), tiny_bert, "--cors-origin", ALLOWED_ORIGIN) as server:
        yield server


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory, tiny_bert):
    """An API key, and query/body limits raised past 10 MB so that huge queries reach the first stage and ranker."""
    with start(tmp_path_factory.mktemp("guarded-server"), tiny_bert, "--api-key-env", API_KEY_VAR,
               "--max-query-chars", str(16 << 20), "--max-body-bytes", str(16 << 20),
               env={API_KEY_VAR: API_KEY}) as server:
        yield server


# ---------------------------------------------------------------- a client can search, nothing else


def test_administration_routes_are_refused(open_server, tmp_path):
    marker = tmp_path / "deployed.txt"
    wrapper = MARKER_WRAPPER.format(marker=str(marker))
    status, _, _ = request(open_server.base, "/deploy_files",
                           {"name": "evil", "files": {"pipeline_wrapper.py": wrapper}, "save_files": False})
    assert status in (404, 405)
    assert not marker.exists(), "the uploaded wrapper ran in the server"
    for method, path, payload in [
        ("POST", "/deploy-yaml", {"name": "other", "source_code": "components: {}", "save_file": False}),
        ("POST", "/undeploy/search", None),
        ("GET", "/draw/search", None),
        ("POST", "/v1/chat/completions", {"model": "search", "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/v1/responses", {"model": "search", "input": "hi"}),
        ("GET", "/traces", None),
    ]:
        status, _, _ = request(open_server.base, path, payload, method=method)
        assert status in (404, 405), f"{method} {path} answered {status}"
    status, _, schema = request(open_server.base, "/openapi.json", method="GET")
    assert status == 200 and set(schema["paths"]) == {"/status", "/status/{pipeline_name}", "/search/run"}
    status, _, answer = search(open_server.base, {"query": QUERY})  # still deployed
    assert status == 200 and len(documents(answer)) == TOP_K


def test_cors_headers_only_for_a_listed_origin(open_server):
    for origin, allowed in [(ALLOWED_ORIGIN, True), ("https://elsewhere.example", False)]:
        status, headers, _ = search(open_server.base, {"query": QUERY}, headers={"Origin": origin})
        assert status == 200 and headers.get("access-control-allow-origin") == (origin if allowed else None)


# ---------------------------------------------------------------- bounded work per request


def test_one_and_ten_mb_queries_are_refused_at_once_and_memory_stays_bounded(open_server):
    assert search(open_server.base, {"query": QUERY})[0] == 200
    baseline = rss_kb(open_server.process.pid)
    status, _, answer = search(open_server.base, {"query": "wing " * 2001})  # 10,005 characters
    assert status == 422 and answer["detail"] == "query: String should have at most 10000 characters"
    for query in (ONE_MB_QUERY, TEN_MB_QUERY):
        status, _, answer = search(open_server.base, {"query": query})
        assert status == 413 and "--max-body-bytes" in answer["detail"]
        assert rss_kb(open_server.process.pid) < baseline + RSS_HEADROOM_KB
    assert search(open_server.base, {"query": QUERY})[0] == 200


def test_huge_queries_reaching_the_ranker_are_cut_and_memory_stays_bounded(guarded_server):
    key = {"Authorization": f"Bearer {API_KEY}"}
    status, _, answer = search(guarded_server.base, {"query": QUERY}, headers=key)
    assert status == 200
    baseline = rss_kb(guarded_server.process.pid)
    for query in (ONE_MB_QUERY, TEN_MB_QUERY):
        status, _, answer = search(guarded_server.base, {"query": query}, headers=key)
        assert status == 200 and 0 < len(documents(answer)) <= TOP_K
        assert rss_kb(guarded_server.process.pid) < baseline + RSS_HEADROOM_KB


def test_top_k_is_validated_and_honoured_up_to_the_candidates(open_server):
    for top_k in (0, -1, "ten", 2.5, True):
        status, _, answer = search(open_server.base, {"query": QUERY, "top_k": top_k})
        assert status == 422 and answer["detail"].startswith("top_k: "), (top_k, answer)
    for top_k, expected in [(None, TOP_K), (1, 1), (10**9, CANDIDATES)]:
        payload = {"query": QUERY} if top_k is None else {"query": QUERY, "top_k": top_k}
        status, _, answer = search(open_server.base, payload)
        assert status == 200 and len(documents(answer)) == expected, (top_k, answer)
    status, _, answer = search(open_server.base, {"query": QUERY, "topk": 3})
    assert status == 422 and answer["detail"] == "topk: Extra inputs are not permitted"


def test_empty_blank_or_invalid_text_gets_422_in_one_line(open_server):
    cases = [
        (json.dumps({"query": ""}).encode(), "query: String should have at least 1 character"),
        (json.dumps({"query": " \n\t"}).encode(), "query: the query is blank (only whitespace)"),
        (b'{"query": "\\ud800 wing"}', "query: Input should be a valid string"),
        (json.dumps({"query": 42}).encode(), "query: Input should be a valid string"),
        (b'{"query": ', "body: not valid JSON"),
        (b"{}", "query: Field required"),
    ]
    for body, detail in cases:
        status, _, answer = request(open_server.base, "/search/run", body=body)
        assert status == 422 and answer["detail"].startswith(detail) and "\n" not in answer["detail"], (body, answer)


def test_a_long_query_is_logged_cut(open_server):
    query = "fluttermarker " + "supersonic wing " * 600  # 9,614 characters, under the limit
    assert search(open_server.base, {"query": query})[0] == 200
    log = open_server.log.read_text(encoding="utf-8", errors="replace")
    assert query[:150] in log, "the query is logged (cut)"
    assert query[:300] not in log and f"({len(query)} characters)" in log
    assert max(len(line) for line in log.splitlines()) < 2000


# ---------------------------------------------------------------- the API key


def test_the_api_key_is_enforced(guarded_server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}, {"X-Api-Key": API_KEY}):
        status, answer_headers, answer = search(guarded_server.base, {"query": QUERY}, headers=headers)
        assert status == 401 and answer_headers.get("www-authenticate") == "Bearer", headers
    assert request(guarded_server.base, "/openapi.json", method="GET")[0] == 401
    assert request(guarded_server.base, "/status", method="GET")[0] == 200  # health probes need no key
    status, _, answer = search(guarded_server.base, {"query": QUERY}, headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 200 and len(documents(answer)) == TOP_K


# ---------------------------------------------------------------- before anything loads


def test_a_busy_port_fails_in_one_line_before_anything_loads(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # neither the index nor the model exists: reaching either would fail with another message
        code = main(["serve", "--index-dir", str(tmp_path / "no-index"), "--model", str(tmp_path / "no-model"),
                     "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"rerank-pipeline serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_bad_serve_options_fail_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(API_KEY_VAR, raising=False)
    common = ["serve", "--index-dir", str(tmp_path / "no-index"), "--port", str(free_port())]
    for flags, message in [
        (["--cors-origin", "*"], "'*' is not accepted"),
        (["--cors-origin", "allowed.example"], "is not scheme://host[:port]"),
        (["--max-in-flight", "0"], "max_in_flight must be positive"),
        (["--api-key-env", API_KEY_VAR], API_KEY_VAR),
    ]:
        assert main([*common, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (flags, err)


# ---------------------------------------------------------------- requests at once, time limit (in-process)


def test_request_limits_answer_503_with_retry_after_when_busy_or_slow():
    import httpx
    from starlette.responses import JSONResponse

    from rerank_pipeline.http_guards import RequestLimits

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_app(scope, receive, send):
            await receive()
            await release.wait()
            await JSONResponse({"ok": True})(scope, receive, send)

        limits = RequestLimits(slow_app, max_body_bytes=100, timeout_s=0.5, max_in_flight=1, limited_paths=["/run"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limits), base_url="http://test") as client:
            first = asyncio.create_task(client.post("/run", json={}))
            while limits.in_flight == 0:
                await asyncio.sleep(0.01)
            busy = await client.post("/run", json={})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "--max-in-flight" in busy.json()["detail"]
            slow = await first  # never released before its time limit
            assert slow.status_code == 503 and slow.headers["retry-after"] == "1"
            assert "--request-timeout-s" in slow.json()["detail"]
            assert limits.in_flight == 1, "abandoned work keeps its place until it ends"
            release.set()
            while limits.in_flight:
                await asyncio.sleep(0.01)
            assert (await client.post("/run", json={})).status_code == 200
            too_large = await client.post("/run", content=b"x" * 101)
            assert too_large.status_code == 413 and "--max-body-bytes" in too_large.json()["detail"]
            assert (await client.post("/elsewhere", content=b"x" * 101)).status_code == 413

    asyncio.run(scenario())
