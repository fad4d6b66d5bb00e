"""The daemon's edge: how it listens, and what it refuses before any route runs.

Checked against aiohttp 3.14, which on its own

- holds any number of connections, so one client's idle or half-sent
  requests (slowloris) can use up the file descriptors streams need;
- answers a request head it cannot parse, or one over its size limits, with
  a text/plain 400 and logs a traceback at ERROR, from below the
  application, where no middleware sees it.

Connections are counted where they are accepted, in the protocol object
aiohttp makes for each one (``_Connection``, a ``web.RequestHandler``): one
over ``limits.max_connections`` in all, or ``limits.max_connections_per_client``
from one address, is answered 503 JSON and closed before anything is read.
aiohttp has no hook for the protocol class, so ``Runner`` (an ``AppRunner``)
hands its sites a factory of them (ytproxy.private.aiohttp); the daemon
(``serve``) and the tests run the app through it.  The same class answers
malformed heads as JSON with the precise status (405, 414, 431, 400) and
logs them at DEBUG: they are the client's problem, not ours.

Idle and slow connections are cut by aiohttp's keep-alive timer, which is
armed when a connection opens and re-armed after each response: a client gets
``limits.idle_timeout`` seconds to deliver a complete request head, however
slowly it drips.  The timer never fires while a response is being sent, so a
paused MPD keeps its stream for as long as it likes.  The head limits and the
timer go in through ``web.Application(handler_args=…)`` (``handler_args``), so
they hold under any runner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from aiohttp import HttpVersion11, web

from ytproxy.config import LimitsConfig
from ytproxy.private.aiohttp import (
    ProtocolRunner,
    RequestHandler,
    answer_as_http1,
    head_error_kind,
    protocol_factory,
    wrap_request_handler,
)

__all__ = [
    "CONNECTIONS",
    "MAX_BODY",
    "MAX_HEADERS",
    "MAX_HEADER_FIELD",
    "MAX_REQUEST_LINE",
    "ConnectionLimits",
    "Runner",
    "expect_handler",
    "handler_args",
    "json_http_error",
    "serve",
]

log = logging.getLogger(__name__)

_BACKLOG = 4096

# Bytes in the request target (the request line's URL); more → 414.  MPD's
# URLs are ~30 bytes.  Kept different from MAX_HEADER_FIELD: aiohttp reports
# both as LineTooLong, and the limit it names tells which one it was.
MAX_REQUEST_LINE = 4096
# Bytes in one header (name and value); more → 431.
MAX_HEADER_FIELD = 8190
# Header lines in one request; more → 431.  MPD sends five.
MAX_HEADERS = 64
# Bytes in a request body (only POST /tracks has one); more → 413.
MAX_BODY = 64 * 1024

# How often a run of refused connections is logged, at most.
_REFUSAL_LOG_EVERY = 10.0


class ConnectionLimits:
    """Open client connections, in all and per client address; ``admit`` before use."""

    def __init__(self, config: LimitsConfig) -> None:
        self.max_total = config.max_connections
        self.max_per_client = config.max_connections_per_client
        self.open = 0
        self.refused = 0
        self._by_client: Counter[str] = Counter()
        self._unlogged = 0
        self._logged_at = float("-inf")

    def by_client(self, client: str) -> int:
        return self._by_client[client]

    def admit(self, client: str) -> str | None:
        """Count a new connection from ``client``; or, over a limit, why it is refused."""
        reason = None
        if self._by_client[client] >= self.max_per_client:
            reason = (f"{client} already has {self._by_client[client]} connections open "
                      f"(limits.max_connections_per_client = {self.max_per_client}); "
                      "close some and try again")
        elif self.open >= self.max_total:
            reason = (f"the server already has {self.open} connections open "
                      f"(limits.max_connections = {self.max_total}); try again shortly")
        if reason is not None:
            self.refused += 1
            self._log_refusal(reason)
            return reason
        self.open += 1
        self._by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.open = max(0, self.open - 1)
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]

    def _log_refusal(self, reason: str) -> None:
        # A flood of connections must not become a flood of log lines.
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= _REFUSAL_LOG_EVERY:
            log.warning("listener: refused %d connection(s) in the last %g s; latest: %s",
                        self._unlogged, _REFUSAL_LOG_EVERY, reason)
            self._unlogged = 0
            self._logged_at = now


CONNECTIONS = web.AppKey("connections", ConnectionLimits)


def handler_args(limits: LimitsConfig) -> dict[str, Any]:
    """aiohttp's per-connection settings: head size limits and the idle/slow-head timer."""
    return {
        "max_line_size": MAX_REQUEST_LINE,
        "max_field_size": MAX_HEADER_FIELD,
        "max_headers": MAX_HEADERS,
        "keepalive_timeout": limits.idle_timeout,
        # After an early answer (413, 408), how long the rest of a body is read
        # and dropped so the client sees the answer (aiohttp's default: 10 s).
        "lingering_time": 2.0,
    }


def json_http_error(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    """One of aiohttp's HTTP errors (404, 405, 413, 417…) as ytproxy's JSON error.

    ``Allow`` is kept; nothing of the request is echoed beyond 100 characters.
    """
    text = exc.text or ""
    if not text or text.startswith(f"{exc.status}:"):  # aiohttp's default "404: Not Found"
        path = request.path if len(request.path) <= 100 else request.path[:100] + "…"
        text = f"{exc.reason}: {request.method} {path}"
    code = exc.reason.lower().replace(" ", "_")
    allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return web.json_response({"error": code, "message": text[:300]}, status=exc.status,
                             headers=allow)


def _json_error(status: int, code: str, message: str,
                headers: dict[str, str] | None = None) -> web.Response:
    response = web.json_response({"error": code, "message": message}, status=status,
                                 headers=headers)
    response.force_close()
    return response


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """``Expect`` answered as aiohttp's default does, except that a body past
    ``MAX_BODY`` gets its 413 at once, not a ``100 Continue`` inviting it.

    Given to every route (``expect_handler=``); it runs before the app's
    middlewares, so its answers are made as JSON here.
    """
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no 100 Continue; the body comes anyway
    expect = request.headers.get("Expect", "")
    if expect.strip().lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:100]}")
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return _json_error(413, "request_entity_too_large",
                           f"the request body would be {length} bytes; at most {MAX_BODY} "
                           "are read")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # The 100 is not the answer: an error after it must still be a JSON answer.
    request.writer.output_size = 0
    return None


def _refusal(message: str) -> bytes:
    """The whole 503 answer to a connection over a limit, sent before its request is read."""
    body = json.dumps({"error": "too_many_connections", "message": message}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 5\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "?")  # a Unix socket: all one client


class _Connection(web.RequestHandler):
    """aiohttp's protocol for one client connection, counted, with JSON for its own errors."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, allow: str,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._allow = allow
        self._client: str | None = None  # set once admitted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = _client_of(transport)
        refusal = self._limits.admit(client)
        if refusal is not None:
            # A stream transport (uvloop's is not an asyncio.Transport subclass).
            stream = cast(asyncio.Transport, transport)
            stream.write(_refusal(refusal))
            stream.close()
            return
        self._client = client
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._client is not None:
            self._limits.release(self._client)
            self._client = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._client is not None:  # a refused connection's bytes are not read
            super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON answer for what aiohttp catches itself: bad heads, and handler crashes."""
        if request.writer.output_size > 0:
            # Some of a response is out already: the connection is all that can be
            # cut, and a crash there is still a bug to be told, with its traceback.
            if status >= 500:
                log.error("listener: %s %s from %s failed after its answer began; "
                          "closing the connection", request.method, request.path,
                          request.remote, exc_info=exc)
            raise ConnectionError("response already started; closing the connection")
        if status >= 500:
            # A handler crashed: a bug, with its traceback.
            log.error("listener: %s %s from %s failed", request.method, request.path,
                      request.remote, exc_info=exc)
            if status == 500:
                return _json_error(500, "internal_error", "ytproxy failed unexpectedly while "
                                   "answering; the daemon's log has the details")
            return _json_error(status, "internal_error", "the request could not be answered")
        log.debug("listener: malformed request from %s: %s", request.remote, exc)
        return self._client_error(exc)

    def _client_error(self, exc: BaseException | None) -> web.Response:
        kind = head_error_kind(exc, MAX_REQUEST_LINE)
        if kind == "method":
            if "HTTPS" in str(exc):
                return _json_error(400, "bad_request", "this port speaks plain HTTP, not HTTPS")
            return _json_error(405, "method_not_allowed",
                               f"ytproxy answers only these methods: {self._allow}",
                               {"Allow": self._allow})
        if kind == "request_line":
            return _json_error(414, "uri_too_long",
                               f"the request line is longer than {MAX_REQUEST_LINE} bytes")
        if kind == "header_field":
            return _json_error(431, "header_too_large",
                               f"a request header is longer than {MAX_HEADER_FIELD} bytes")
        if kind == "header_count":
            return _json_error(431, "too_many_headers",
                               f"the request has more than {MAX_HEADERS} headers")
        what = str(getattr(exc, "message", "") or exc or "").strip().split("\n")[0]
        return _json_error(400, "bad_request",
                           f"malformed HTTP request: {what.rstrip(':') or 'unparsable'}")


def _http_errors_as_json(handler: RequestHandler) -> RequestHandler:
    """JSON for HTTP errors aiohttp raises outside the app's middlewares.

    The app's error middleware converts those raised inside; the ``Expect``
    check (417 for anything but ``100-continue``) runs before middlewares.
    """

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            return json_http_error(request, exc)

    return handle


class Runner(ProtocolRunner):
    """``web.AppRunner`` for the ytproxy app: connections obey ``app[CONNECTIONS]``.

    Its sites make a ``_Connection`` for each accepted connection; aiohttp's
    own server behind it still tracks them all, for the graceful shutdown.
    """

    def connection_factory(self, server: web.Server) -> Callable[[], web.RequestHandler]:
        # Read by every connection when it is made: its request handler and factory.
        wrap_request_handler(server, _http_errors_as_json)
        answer_as_http1(server)
        methods = {route.method for route in self.app.router.routes()} - {"*"}
        return protocol_factory(server, _Connection, limits=self.app[CONNECTIONS],
                                allow=", ".join(sorted(methods)))


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    on_ready: Callable[[], None],
    access_log: logging.Logger | None,
    shutdown_timeout: float,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM: ``web.run_app``'s job, through ``Runner``,
    on a loop from ``loop_factory`` (asyncio's own by default).

    Raises ``OSError`` when the address cannot be bound, and whatever the
    app's startup raises.
    """

    async def until_stopped() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        runner = Runner(app, access_log=access_log, shutdown_timeout=shutdown_timeout)
        try:
            await runner.setup()
            # aiohttp's default backlog of 128 drops connections past it when many
            # players start at once (the kernel caps this at net.core.somaxconn).
            await web.TCPSite(runner, host, port, backlog=_BACKLOG).start()
            on_ready()
            await stop.wait()
        finally:
            # Stops accepting, runs on_shutdown (the grace period for streams), then cleanup.
            await runner.cleanup()
            for signum in signals:
                loop.remove_signal_handler(signum)

    # As run_app: whatever is still running at the end is cancelled and
    # awaited, async generators are closed, then the loop.
    with asyncio.Runner(loop_factory=loop_factory) as loop_runner:
        loop_runner.run(until_stopped())
