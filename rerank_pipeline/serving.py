"""Serve the first stage -> ``CrossEncoderRanker`` pipeline over HTTP with Hayhooks (Haystack's serving convention).

:func:`hayhooks_yaml` writes the pipeline YAML that ``hayhooks pipeline deploy-yaml`` accepts: the pipeline itself
(absolute index paths) plus the ``inputs`` / ``outputs`` declarations Hayhooks builds its request and response
models from (``query`` feeds every query input; ``documents`` is the final ranking). Hayhooks loads YAML through
Haystack's deserialization allow-list, which does not know this package: run the server with
``HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline`` (:func:`serve` allows it for its own process).

:func:`serve` binds the port, deploys the pipeline with Hayhooks' run route on an app that has nothing else but
``GET /status`` and the OpenAPI docs (:func:`create_app`), warms its models up (so the first request does not load
them) and runs the server: ``POST /<name>/run`` with ``{"query": "...", "top_k": 5}`` returns
``{"result": {"<final component>": {"documents": [{"id", "content", "meta", "score", ...}, ...]}}}``.
:class:`ServeSettings` bounds each request (query length, body size, time, requests at once) and sets CORS origins
and an API key. ``GET /status`` adds each ``CrossEncoderRanker``'s score cache figures
(:func:`~rerank_pipeline.pipelines.score_cache_infos`),
which the server also logs (INFO) every :data:`SCORE_CACHE_LOG_EVERY` searches.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from rerank_pipeline.atomic import write_text_atomic

if TYPE_CHECKING:  # imported lazily: the CLI reads this module's defaults without loading Haystack
    from haystack import Pipeline
    from haystack.utils import Secret

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1416
DEFAULT_NAME = "search"
ALLOWLIST_ENV_VAR = "HAYSTACK_DESERIALIZATION_ALLOWLIST"
DEFAULT_MAX_QUERY_CHARS = 10_000
DEFAULT_MAX_TOP_K = 100
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 10,000-character query takes at most 120 kB of JSON
DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_REQUEST_TIMEOUT_S = 60.0
DEFAULT_SCORE_CACHE = 100_000  # pair scores a served ranker keeps (``serve``/``export --score-cache``; 0: off)
SCORE_CACHE_LOG_EVERY = 100  # searches between two log lines of the score cache figures


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


@dataclass(frozen=True)
class ServeSettings:
    """What a served pipeline accepts, how much one request may cost, and who may call it.

    Usage:
        ServeSettings(max_query_chars=2_000, cors_origins=("https://search.example.com",),
                      api_key=Secret.from_env_var("SEARCH_API_KEY"))

    :param max_query_chars: Longest query, in characters (422 beyond).
    :param max_top_k: Most documents a request's ``top_k`` gets (the first stage's candidates).
    :param max_body_bytes: Largest request body (413 beyond).
    :param max_in_flight: Search requests running or waiting at once; the next gets 503 with ``Retry-After``.
    :param request_timeout_s: Seconds a request may take before it gets 503 with ``Retry-After``.
    :param cors_origins: Web origins (``scheme://host[:port]``) whose pages may call the server; none by default.
    :param api_key: When set (a Haystack ``Secret``), every request but ``GET /status`` needs
        ``Authorization: Bearer <key>``.
    :raises ValueError: For a limit below 1, an origin that is not ``scheme://host[:port]``, or an API key that is
        unset or empty.
    """

    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_top_k: int = DEFAULT_MAX_TOP_K
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    cors_origins: tuple[str, ...] = ()
    api_key: Secret | None = None

    def __post_init__(self) -> None:
        for name in ("max_query_chars", "max_top_k", "max_body_bytes", "max_in_flight", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for origin in self.cors_origins:
            if not re.fullmatch(r"https?://[^/\s*]+", origin):
                raise ValueError(f"CORS origin {origin!r} is not scheme://host[:port] (e.g. https://app.example.com); "
                                 "'*' is not accepted: name each origin")
        self.resolved_api_key()

    def resolved_api_key(self) -> str | None:
        """The API key's value, or None without one; ``ValueError`` when its variable is unset or empty."""
        if self.api_key is None:
            return None
        key = self.api_key.resolve_value()
        if not key or not str(key).strip():
            where = self.api_key.to_dict()["env_vars"] if self.api_key.type.value == "env_var" else "the token"
            raise ValueError(f"the API key is empty ({where})")
        return str(key).strip()


def search_request_model(max_query_chars: int) -> type:
    """The run route's request body: ``query`` (text, 1 to ``max_query_chars`` characters) and optional ``top_k``.

    Unknown fields, a query that is blank or holds a lone surrogate (not encodable as UTF-8), and a ``top_k`` that is
    not an integer >= 1 are refused (422).
    """
    from pydantic import BaseModel, ConfigDict, Field, field_validator
    from pydantic_core import PydanticCustomError

    class SearchRequest(BaseModel):
        """A search: the query and, optionally, how many documents to return."""

        model_config = ConfigDict(extra="forbid")

        query: str = Field(min_length=1, max_length=max_query_chars, description="the query text")
        top_k: Annotated[int, Field(ge=1, strict=True)] | None = Field(
            None, description="documents to return (default: the server's --top-k; at most its candidates)"
        )

        @field_validator("query")
        @classmethod
        def _text(cls, query: str) -> str:
            if not query.strip():
                raise PydanticCustomError("blank_query", "the query is blank (only whitespace)")
            try:
                query.encode("utf-8")
            except UnicodeEncodeError as error:
                raise PydanticCustomError(
                    "invalid_text", "the query is not valid text: a lone surrogate at character {position}",
                    {"position": error.start},
                ) from None
            return query

    return SearchRequest


def score_cache_line(infos: dict[str, dict[str, int]]) -> str:
    """One log line of :func:`~rerank_pipeline.pipelines.score_cache_infos`, e.g. ``ranker: 1200/100000 entries, hit rate 61.0% (...)``."""
    parts = []
    for name, info in infos.items():
        looked_up = info["hits"] + info["misses"]
        rate = f"{info['hits'] / looked_up:.1%}" if looked_up else "n/a"
        parts.append(f"{name}: {info['entries']}/{info['max_entries']} entries, hit rate {rate} "
                     f"({info['hits']} hits, {info['misses']} misses, {info['evictions']} evictions)")
    return "score cache: " + ("; ".join(parts) or "no cross-encoder")


def _search_wrapper(yaml_text: str, max_top_k: int) -> Any:
    """A Hayhooks pipeline wrapper around the pipeline of ``yaml_text`` whose run route takes ``query`` and ``top_k``."""
    import itertools

    from hayhooks.server.logger import log
    from hayhooks.server.utils.base_pipeline_wrapper import BasePipelineWrapper

    from rerank_pipeline.pipelines import (
        load_pipeline,
        output_component,
        query_inputs,
        score_cache_infos,
    )

    class SearchPipelineWrapper(BasePipelineWrapper):
        def __init__(self) -> None:
            super().__init__()
            self._is_run_api_async_implemented = True

        def setup(self) -> None:
            self.pipeline = load_pipeline(yaml_text)
            self.output = output_component(self.pipeline)
            self.searches = itertools.count(1)  # next() is atomic: safe from any thread

        async def run_api_async(self, query: str, top_k: int | None = None) -> dict:
            """Search: the final ranking's documents, best first."""
            data = query_inputs(self.pipeline, query)
            if top_k is not None:
                data.setdefault(self.output, {})["top_k"] = min(top_k, max_top_k)
            result = await self.pipeline.run_async(data=data, include_outputs_from={self.output})
            if next(self.searches) % SCORE_CACHE_LOG_EVERY == 0:
                log.info(score_cache_line(score_cache_infos(self.pipeline)))
            return result

    wrapper = SearchPipelineWrapper()
    wrapper.setup()
    return wrapper


def create_app(
    yaml_text: str, name: str = DEFAULT_NAME, warm_up: bool = True, settings: ServeSettings | None = None
) -> Any:
    """A FastAPI app serving ``yaml_text`` as ``POST /<name>/run``, with ``GET /status`` and the OpenAPI docs only.

    The run route is Hayhooks' (its request/response models and status), on an app of its own: no deploy, undeploy,
    file, chat, trace or draw routes, so a client can only search. ``settings`` bounds each request and sets CORS
    and the API key; by default no web origin may call it and no key is asked. Log lines keep at most the first
    200 characters of a request parameter. The models are loaded before this returns (unless ``warm_up=False``).
    """
    settings = settings or ServeSettings()
    api_key = settings.resolved_api_key()
    trust_this_package()
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from hayhooks.server.logger import RequestIdMiddleware, log
    from hayhooks.server.pipelines.registry import registry
    from hayhooks.server.utils.deploy_utils import commit_prepared_pipeline
    from hayhooks.server.utils.models import PreparedPipeline
    from starlette.middleware.cors import CORSMiddleware

    from rerank_pipeline import __version__
    from rerank_pipeline.http_guards import BearerAuth, RequestLimits, cut_long_log_values, one_line_validation_error

    log.configure(patcher=cut_long_log_values)
    app = FastAPI(title="rerank-pipeline", version=__version__,
                  description="First stage -> cross-encoder search, served with Hayhooks")
    # what Hayhooks' status route reads: a live registry, no durable runtime
    app.state.pipeline_registry = registry
    app.state.durable_mode = False
    app.state.durable_runtime = None
    app.state.durable_health = None
    app.state.monitoring_enabled = False
    app.add_exception_handler(RequestValidationError, one_line_validation_error)
    wrapper = _search_wrapper(yaml_text, settings.max_top_k)
    _add_status_routes(app, {name: wrapper.pipeline})
    request_model = search_request_model(settings.max_query_chars)
    commit_prepared_pipeline(PreparedPipeline(name, wrapper, {"request_model": request_model}), app=app,
                             overwrite=True, cleanup_files_on_overwrite=False)
    # the first added is the innermost: limits, then the key, then CORS (which answers browsers' preflights)
    run_path = f"/{name}/run"
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s,
                       max_in_flight=settings.max_in_flight, limited_paths=[run_path])
    if api_key is not None:
        app.add_middleware(BearerAuth, key=api_key, open_paths=["/status", f"/status/{name}"])
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(RequestIdMiddleware)
    if warm_up:
        wrapper.pipeline.warm_up()
    return app


def _add_status_routes(app: Any, pipelines: dict[str, Pipeline]) -> None:
    """Hayhooks' ``GET /status/<name>``, and its ``GET /status`` with a ``score_cache`` field added: per pipeline
    of ``pipelines`` (the served ones, by name), each ``CrossEncoderRanker``'s :func:`~rerank_pipeline.pipelines.score_cache_infos`."""
    from fastapi import Request
    from hayhooks.server.routers import status as hayhooks_status
    from pydantic import Field

    class StatusWithScoreCache(hayhooks_status.StatusResponse):
        score_cache: dict[str, dict[str, dict[str, int]]] = Field(
            default_factory=dict, description="per pipeline, each cross-encoder's score cache: max_entries, entries, "
                                              "hits, misses, evictions (all 0 when off)")

    async def status_all(request: Request) -> StatusWithScoreCache:
        status = await hayhooks_status.status_all(request)
        from rerank_pipeline.pipelines import score_cache_infos

        caches = {name: score_cache_infos(pipeline) for name, pipeline in pipelines.items()}
        return StatusWithScoreCache(**status.model_dump(), score_cache=caches)

    # this module's annotations are strings (postponed) and these names are local: FastAPI gets the types themselves
    status_all.__annotations__ = {"request": Request, "return": StatusWithScoreCache}

    app.add_api_route("/status", status_all, methods=["GET"], tags=["status"], response_model=StatusWithScoreCache,
                      operation_id="status_all", summary="Status of the server, its pipelines and score caches")
    app.add_api_route("/status/{pipeline_name}", hayhooks_status.status, methods=["GET"], tags=["status"],
                      response_model=hayhooks_status.PipelineStatusResponse, operation_id="status_pipeline",
                      summary="Get status of a specific pipeline")


def listen(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` for :func:`serve`; a busy port fails here, before any model loads.

    :raises RuntimeError: ``cannot listen on HOST:PORT: Address already in use`` (or the system's other reason).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def serve(
    yaml_text: str,
    name: str = DEFAULT_NAME,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    on_ready: Callable[[float], None] | None = None,
    settings: ServeSettings | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Deploy ``yaml_text`` as ``name`` (:func:`create_app`), warm it up, then serve until interrupted (Uvicorn).

    The port is bound first (``sock`` from :func:`listen`, else bound here), so a busy port fails before any model
    loads. ``on_ready`` receives the seconds spent deploying and warming up, before the server starts listening.
    """
    sock = sock or listen(host, port)
    started = time.perf_counter()
    app = create_app(yaml_text, name=name, settings=settings)
    if on_ready is not None:
        on_ready(time.perf_counter() - started)
    import uvicorn
    from hayhooks.server.logger import intercept_stdlib_logging
    from hayhooks.settings import settings as hayhooks_settings

    intercept_stdlib_logging(hayhooks_settings.intercepted_loggers,
                             access_log_excluded_path_prefixes=hayhooks_settings.access_log_excluded_path_prefixes)
    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=hayhooks_settings.graceful_shutdown_timeout)
    uvicorn.Server(config).run(sockets=[sock])


def export(pipeline: Pipeline, output: str | Path) -> Path:
    """Write :func:`hayhooks_yaml` to ``output`` atomically (:func:`~rerank_pipeline.atomic.write_text_atomic`)."""
    return write_text_atomic(output, hayhooks_yaml(pipeline))
