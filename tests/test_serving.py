"""Serving on Hayhooks: the exported YAML on a real Hayhooks server (127.0.0.1, a free port), `rerank-pipeline serve`,
and pipelines whose index folder moved."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.first_stage import build_first_stage
from rerank_pipeline.pipelines import build_pipeline, load_pipeline, search
from test_pipelines import DOCS

pytest.importorskip("hayhooks", reason="pip install 'rerank-pipeline[serve]' for serving")

REPO = Path(__file__).resolve().parents[1]
QUERY = "wing flutter"
START_TIMEOUT_S = 240  # importing torch, Haystack and Hayhooks on 2 busy cores
HAYHOOKS_CLI = "import sys; from hayhooks.cli import hayhooks_cli; sys.exit(hayhooks_cli())"  # the `hayhooks` script
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy


@pytest.fixture()
def bm25_index(tmp_path) -> Path:
    folder = tmp_path / "index"
    build_first_stage("bm25", index_dir=folder).index(DOCS)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, payload: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with LOOPBACK.open(request, timeout=timeout) as response:
        return json.loads(response.read())


class Server:
    """A server subprocess on 127.0.0.1 whose output goes to a log file; stopped (and waited for) on exit."""

    def __init__(self, args: list[str], port: int, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = cwd / f"server-{port}.log"
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with LOOPBACK.open(f"{self.base}/status", timeout=5):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.__exit__()
        pytest.fail(f"server not up after {START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def served(response: dict) -> list[tuple]:
    documents = response["result"]["ranker"]["documents"]
    return [(doc["id"], doc["content"], doc["meta"], round(doc["score"], 5)) for doc in documents]


def in_process(yaml_text: str) -> list[tuple]:
    return [(doc.id, doc.content, doc.meta, round(doc.score, 5)) for doc in search(load_pipeline(yaml_text), QUERY)]


def test_exported_yaml_deploys_on_plain_hayhooks_and_answers_like_search(bm25_index, tiny_bert, tmp_path):
    output = tmp_path / "exported" / "search.yml"
    assert main(["export", "--index-dir", str(bm25_index), "--model", str(tiny_bert), "--top-k", "3",
                 "--output", str(output)]) == 0
    yaml_text = output.read_text()
    elsewhere = tmp_path / "elsewhere"  # another working directory: the YAML's paths are absolute
    (elsewhere / "pipelines").mkdir(parents=True)
    port = free_port()
    command = [sys.executable, "-c", HAYHOOKS_CLI, "run", "--host", "127.0.0.1", "--port", str(port),
               "--pipelines-dir", str(elsewhere / "pipelines")]
    with Server(command, port, elsewhere, env={"HAYSTACK_DESERIALIZATION_ALLOWLIST": "rerank_pipeline"}) as server:
        deployed = post(f"{server.base}/deploy-yaml", {"name": "search", "source_code": yaml_text, "save_file": False})
        assert deployed["name"] == "search"
        response = post(f"{server.base}/search/run", {"query": QUERY})
    expected = in_process(yaml_text)
    assert len(expected) == 3 and served(response) == expected


def test_serve_command_answers_with_models_loaded_at_start(bm25_index, tiny_bert, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "rerank_pipeline", "serve", "--index-dir", str(bm25_index),
               "--model", str(tiny_bert), "--top-k", "2", "--port", str(port), "--name", "docs"]
    with Server(command, port, tmp_path) as server:
        assert "loaded its models" in server.log.read_text()  # warmed up before listening
        response = post(f"{server.base}/docs/run", {"query": QUERY})
        empty = urllib.request.Request(f"{server.base}/docs/run", data=b"{}", method="POST",
                                       headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as missing_query:
            LOOPBACK.open(empty, timeout=30)
    assert missing_query.value.code == 422
    pipeline = build_pipeline(bm25_index, ranker_model=str(tiny_bert), top_k=2)
    expected = [(doc.id, doc.content, doc.meta, round(doc.score, 5)) for doc in search(pipeline, QUERY)]
    assert len(expected) == 2 and served(response) == expected
    assert not (tmp_path / "pipelines").exists()  # Hayhooks' default ./pipelines folder is not created


def test_serve_pipeline_serves_a_yaml_file_as_written(bm25_index, tiny_bert, tmp_path, capsys):
    yaml_file = tmp_path / "search.yml"  # as `tune` writes pipeline.yml: the export format
    assert main(["export", "--index-dir", str(bm25_index), "--model", str(tiny_bert), "--top-k", "2",
                 "--output", str(yaml_file)]) == 0
    assert main(["serve", "--pipeline", str(yaml_file), "--model", str(tiny_bert), "--port", str(free_port())]) == 2
    assert "--model: --pipeline" in capsys.readouterr().err  # its settings are the file's, not flags
    port = free_port()
    command = [sys.executable, "-m", "rerank_pipeline", "serve", "--pipeline", str(yaml_file), "--port", str(port)]
    with Server(command, port, tmp_path) as server:
        response = post(f"{server.base}/search/run", {"query": QUERY})
    expected = in_process(yaml_file.read_text())
    assert len(expected) == 2 and served(response) == expected


def test_moved_index_folder_fails_at_load_naming_it(bm25_index, tmp_path):
    output = tmp_path / "search.yml"
    assert main(["export", "--index-dir", str(bm25_index), "--output", str(output)]) == 0
    text = output.read_text()
    assert f"index_dir: {bm25_index}" in text and "inputs:" in text and "outputs:" in text
    shutil.move(bm25_index, tmp_path / "moved")
    with pytest.raises(Exception, match=str(bm25_index)):
        load_pipeline(text)


def test_export_refuses_a_missing_index_without_writing(tmp_path, capsys):
    output = tmp_path / "search.yml"
    assert main(["export", "--index-dir", str(tmp_path / "nowhere"), "--output", str(output)]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert not output.exists()
