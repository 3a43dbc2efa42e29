"""ASGI middleware and handlers that bound what one HTTP request to the server may cost, and who may send it.

:class:`BearerAuth` asks for ``Authorization: Bearer <key>``; :class:`RequestLimits` bounds a request's body, its time
and how many run at once; :func:`one_line_validation_error` answers a refused request body in one line; and
:func:`cut_long_log_values` keeps request parameters in log records short. Used by
:func:`rerank_pipeline.serving.create_app`; plain Starlette/FastAPI, so any FastAPI app can add them.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Collection
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGED_TEXT_CHARS = 200  # characters of a request parameter a log line keeps
DETAIL_CHARS = 500  # characters of a refused request's one-line detail


async def reply(scope: Scope, receive: Receive, send: Send, status: int, detail: str,
                headers: dict[str, str] | None = None) -> None:
    """Send ``{"detail": detail}`` with ``status``."""
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


class BearerAuth:
    """Every HTTP request needs ``Authorization: Bearer <key>`` (401 otherwise), except GET/HEAD of ``open_paths``.

    The key is compared in constant time (``hmac.compare_digest``).
    """

    def __init__(self, app: ASGIApp, key: str, open_paths: Collection[str] = ()) -> None:
        if not key:
            raise ValueError("the API key is empty")
        self.app = app
        self.key = key.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] in ("GET", "HEAD") and scope["path"] in self.open_paths):
            await self.app(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
            await reply(scope, receive, send, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                        {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class RequestLimits:
    """Bound every HTTP request's body and time, and how many requests to ``limited_paths`` run at once.

    - a body over ``max_body_bytes`` gets 413 (the rest of it is read and dropped, so the client reads the answer);
    - a request still unanswered after ``timeout_s`` gets 503 with ``Retry-After``; its work goes on in the
      background and keeps its place among the running requests until it ends (a thread cannot be stopped);
    - once ``max_in_flight`` requests to ``limited_paths`` are running or waiting, the next gets 503 with
      ``Retry-After`` at once, without reading its body.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float, max_in_flight: int,
                 limited_paths: Collection[str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.limited_paths = frozenset(limited_paths)
        self.in_flight = 0
        self._background: set[asyncio.Task] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = scope["path"] in self.limited_paths
        if limited and self.in_flight >= self.max_in_flight:
            await reply(scope, receive, send, 503,
                        f"busy: {self.max_in_flight} requests are running or waiting (--max-in-flight); retry later",
                        {"Retry-After": "1"})
            return
        response_started = False
        abandoned = False

        async def send_unless_abandoned(message: Message) -> None:
            nonlocal response_started
            if abandoned:  # the client was answered 503 already
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self._bounded_body(scope, receive, send_unless_abandoned))
        if limited:
            self.in_flight += 1
            task.add_done_callback(self._release)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except asyncio.TimeoutError:
            if response_started:  # too late to answer otherwise: let the answer finish
                await task
                return
            abandoned = True
            self._background.add(task)  # keep a reference until it ends; its outcome is dropped
            task.add_done_callback(self._forget)
            await reply(scope, receive, send, 503,
                        f"the request took longer than {self.timeout_s:g} s (--request-timeout-s); retry later",
                        {"Retry-After": str(math.ceil(self.timeout_s))})

    def _release(self, _task: asyncio.Task) -> None:
        self.in_flight -= 1

    def _forget(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it; the client was answered already

    async def _bounded_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body (at most ``max_body_bytes``), then run the app on it; 413 for a larger body."""
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
            if not too_large:
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                too_large = size > self.max_body_bytes
                if too_large:
                    chunks.clear()
        if too_large:
            await reply(scope, receive, send, 413,
                        f"the request body is over {self.max_body_bytes} bytes (--max-body-bytes)")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def one_line_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 with ``{"detail": "query: String should have at most 10000 characters"}``: each refused field and why,
    in one line, without echoing the input (FastAPI's default lists every error with the whole input)."""
    problems = []
    for item in error.errors():
        if item.get("type") == "json_invalid":  # loc is ("body", character)
            reason = (item.get("ctx") or {}).get("error", "")
            problems.append(f"body: not valid JSON ({reason} at character {item['loc'][-1]})")
            continue
        where = ".".join(str(part)[:40] for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    detail = "; ".join(problems) or "invalid request"
    if len(detail) > DETAIL_CHARS:
        detail = detail[:DETAIL_CHARS] + " ..."
    return JSONResponse({"detail": detail}, status_code=422)


def cut_for_log(value: Any) -> Any:
    """``value`` with every string longer than ``LOGGED_TEXT_CHARS`` cut, e.g. ``'flutter ...' (1048567 chars)``."""
    if isinstance(value, str) and len(value) > LOGGED_TEXT_CHARS:
        return f"{value[:LOGGED_TEXT_CHARS]}... ({len(value)} characters)"
    if isinstance(value, dict):
        return {key: cut_for_log(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cut_for_log(item) for item in value)
    return value


def cut_long_log_values(record: dict[str, Any]) -> None:
    """A loguru patcher: the strings in a record's extra fields (where Hayhooks logs each request's parameters) are
    cut by :func:`cut_for_log`."""
    record["extra"].update({key: cut_for_log(value) for key, value in record["extra"].items()})
