"""Serve the first stage -> ``CrossEncoderRanker`` pipeline over HTTP with Hayhooks (Haystack's serving convention).

:func:`hayhooks_yaml` writes the pipeline YAML that ``hayhooks pipeline deploy-yaml`` accepts: the pipeline itself
(absolute index paths) plus the ``inputs`` / ``outputs`` declarations Hayhooks builds its request and response
models from (``query`` feeds every query input; ``documents`` is the final ranking). Hayhooks loads YAML through
Haystack's deserialization allow-list, which does not know this package: run the server with
``HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline`` (:func:`serve` allows it for its own process).

:func:`serve` deploys the pipeline on a Hayhooks app, warms its models up (so the first request does not load them)
and runs the server: ``POST /<name>/run`` with ``{"query": "..."}`` returns
``{"result": {"documents": [{"id", "content", "meta", "score", ...}, ...]}}``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: the CLI reads this module's defaults without loading Haystack
    from haystack import Pipeline

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1416
DEFAULT_NAME = "search"
ALLOWLIST_ENV_VAR = "HAYSTACK_DESERIALIZATION_ALLOWLIST"


def io_declarations(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Hayhooks' ``inputs`` (``query`` -> every query input) and ``outputs`` (``documents`` -> the final ranking)."""
    from rerank_pipeline.pipelines import output_component, query_inputs

    targets = [f"{name}.{input_name}" for name, inputs in query_inputs(pipeline, "").items() for input_name in inputs]
    if not targets:
        raise ValueError("the pipeline has no query input (an input named query or text)")
    return {"inputs": {"query": targets}, "outputs": {"documents": f"{output_component(pipeline)}.documents"}}


def hayhooks_yaml(pipeline: Pipeline) -> str:
    """The pipeline's YAML with the ``inputs``/``outputs`` that ``hayhooks pipeline deploy-yaml`` requires."""
    from haystack.marshal import YamlMarshaller

    return YamlMarshaller().marshal({**pipeline.to_dict(), **io_declarations(pipeline)})


def trust_this_package() -> None:
    """Let Haystack deserialize this package's components in this process (and in the servers it starts)."""
    from haystack.core.serialization import allow_deserialization_module

    from rerank_pipeline.pipelines import TRUSTED_MODULES

    for module in TRUSTED_MODULES:
        allow_deserialization_module(module)
    listed = [entry.strip() for entry in os.environ.get(ALLOWLIST_ENV_VAR, "").split(",") if entry.strip()]
    os.environ[ALLOWLIST_ENV_VAR] = ",".join(dict.fromkeys([*listed, *TRUSTED_MODULES]))


def create_app(yaml_text: str, name: str = DEFAULT_NAME, warm_up: bool = True) -> Any:
    """A Hayhooks FastAPI app with ``yaml_text`` deployed as ``name`` and (by default) its models loaded.

    Hayhooks' startup deployment from a pipelines folder is turned off (an empty temporary folder), so nothing is
    read from or written to the working directory.
    """
    trust_this_package()
    from hayhooks.server.pipelines.registry import registry
    from hayhooks.settings import settings

    settings.pipelines_dir = tempfile.mkdtemp(prefix="rerank-pipeline-hayhooks-")
    from hayhooks.server.app import create_app as create_hayhooks_app
    from hayhooks.server.utils.deploy_utils import deploy_pipeline_yaml

    app = create_hayhooks_app()
    deploy_pipeline_yaml(pipeline_name=name, source_code=yaml_text, app=app, options={"save_file": False})
    if warm_up:
        registry.get(name).pipeline.warm_up()
    return app


def serve(
    yaml_text: str,
    name: str = DEFAULT_NAME,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    on_ready: Callable[[float], None] | None = None,
) -> None:
    """Deploy ``yaml_text`` as ``name``, warm it up, then serve until interrupted (Hayhooks' Uvicorn runner).

    ``on_ready`` receives the seconds spent deploying and warming up, before the server starts listening.
    """
    started = time.perf_counter()
    app = create_app(yaml_text, name=name)
    if on_ready is not None:
        on_ready(time.perf_counter() - started)
    from hayhooks.server.app import run_app

    run_app(app, host=host, port=port)


def export(pipeline: Pipeline, output: str | Path) -> Path:
    """Write :func:`hayhooks_yaml` to ``output`` atomically (a temporary file, then ``os.replace``)."""
    output = Path(output)
    text = hayhooks_yaml(pipeline)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=output.parent, prefix=f".{output.name}.", delete=False
    ) as handle:
        handle.write(text)
    os.chmod(handle.name, 0o644)  # a temporary file is private (0600); the export is an ordinary file
    os.replace(handle.name, output)
    return output
