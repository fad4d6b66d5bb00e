"""Every use of aiohttp's (and asyncio's) private or undocumented parts, in one place.

Each is here because no public API does the job (the reason is with each);
everything else in ytproxy uses public APIs only.  ``tests/test_aiohttp_private.py``
checks each one against the installed aiohttp and fails naming the piece
that changed; pyproject.toml keeps aiohttp below 4.  (Part of ytproxy.private,
with python-mpd2's piece.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong

__all__ = [
    "ProtocolRunner",
    "RequestHandler",
    "answer_as_http1",
    "close_when_done",
    "head_error_kind",
    "payload_writer",
    "protocol_factory",
    "read_size_settable",
    "set_read_limit",
    "set_tls_read_buffer",
    "with_version",
    "wrap_request_handler",
]

# What a web.Server calls with each request (the app's handler, in an AppRunner).
RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def protocol_factory(
    server: web.Server, cls: type[web.RequestHandler], **extra: Any
) -> Callable[[], web.RequestHandler]:
    """Make ``cls`` (a ``web.RequestHandler`` subclass) for each connection to
    ``server`` with the settings the runner gave ``server`` (its loop and
    handler arguments: head limits, keep-alive timer, access log).

    aiohttp has no hook for the protocol class (``web.Server.__call__`` makes
    a plain ``RequestHandler``), and ytproxy counts connections when they are
    accepted, before anything is read (``ytproxy.http.listener``).  Private:
    ``Server._loop`` and ``Server._kwargs``.
    """
    loop: asyncio.AbstractEventLoop = server._loop
    kwargs: dict[str, Any] = server._kwargs
    return lambda: cls(server, loop=loop, **kwargs, **extra)


class ProtocolRunner(web.AppRunner):
    """``web.AppRunner`` whose sites make each accepted connection's protocol
    with ``connection_factory(server)``: a subclass says how, given the
    ``web.Server`` aiohttp set up (see ``protocol_factory``).

    Sites call their runner's ``server`` once per accepted connection (as
    ``loop.create_server``'s protocol factory); that the property may be a
    plain callable instead of the ``web.Server`` is not documented.
    """

    _protocols: Callable[[], web.RequestHandler] | None = None

    def connection_factory(self, server: web.Server) -> Callable[[], web.RequestHandler]:
        raise NotImplementedError

    async def setup(self) -> None:
        await super().setup()  # starts the app (cleanup contexts run here)
        inner = super().server
        assert inner is not None
        self._protocols = self.connection_factory(inner)

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None or self._protocols is None:
            return inner
        return cast(web.Server, self._protocols)


def wrap_request_handler(server: web.Server,
                         wrap: Callable[[RequestHandler], RequestHandler]) -> None:
    """Have the connections ``server`` makes from now on call ``wrap(handler)``
    instead of its handler.  ``web.Server.request_handler``, read by each
    connection when it is made, is not documented."""
    server.request_handler = wrap(server.request_handler)


def answer_as_http1(server: web.Server) -> None:
    """Requests that claim HTTP/2.0 or HTTP/0.9 are answered as HTTP/1.1 or 1.0.

    aiohttp echoes the request's version in its status line, and "HTTP/2.0 200
    OK" over HTTP/1 framing is unreadable to a client (the fuzz found it).
    RFC 9110 §6.2: answer with the highest version we conform to whose major
    is at most the client's.  ``web.Server.request_factory`` (read by each
    connection when it is made) is not documented, nor is the message it takes.
    """
    factory = server.request_factory

    def make(message: RawRequestMessage, *args: Any) -> web.BaseRequest:
        if message.version not in (HttpVersion10, HttpVersion11):
            version = HttpVersion10 if message.version.major < 1 else HttpVersion11
            message = with_version(message, version)
        return factory(message, *args)

    server.request_factory = make


def with_version(message: RawRequestMessage, version: HttpVersion) -> RawRequestMessage:
    """``message`` claiming another HTTP version.

    aiohttp's C parser makes ``RawRequestMessage`` a class of its own whose
    only way to change a field is ``_replace`` (the pure-Python one is a
    NamedTuple, with the same method).
    """
    return message._replace(version=version)


def head_error_kind(exc: BaseException | None, max_line_size: int) -> str | None:
    """What was wrong with a request head aiohttp refused: ``"method"`` (a method
    it cannot parse, such as a TLS hello's bytes), or what was too big:
    ``"request_line"`` (414), ``"header_field"`` or ``"header_count"`` (431);
    else None.  aiohttp's parser errors are not documented.

    aiohttp raises one ``LineTooLong`` for both the request line and a header
    (the limit it names, ``args[1]``, tells which: the two limits differ) and
    a plain ``BadHttpMessage`` with the text "Too many headers" for the count.
    """
    if isinstance(exc, BadHttpMethod):
        return "method"
    if isinstance(exc, LineTooLong):
        return "request_line" if exc.args[1:2] == (max_line_size,) else "header_field"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return "header_count"
    return None


def payload_writer(
    response: web.StreamResponse,
) -> tuple[Callable[[bytes], Awaitable[None]], Callable[[], Awaitable[None]]] | None:
    """A prepared response's body write that never waits, and its wait for
    the transport; None when aiohttp has no such writer.

    ``StreamResponse.write`` waits for the transport itself once 64 KiB went
    out since its last wait, so a full socket is over before the relay can
    see it and a slow listener never tells as one.  The payload writer
    (``StreamResponse._payload_writer``; its ``write(data, drain=False)`` and
    ``drain()`` are what the public ``write`` calls) leaves every wait to the
    relay.
    """
    writer = getattr(response, "_payload_writer", None)
    drain = getattr(writer, "drain", None)
    write = getattr(writer, "write", None)
    if writer is None or not callable(drain) or not callable(write):
        return None
    return partial(write, drain=False), drain


def close_when_done(response: aiohttp.ClientResponse) -> None:
    """Never hand ``response``'s connection back to the pool, even when its
    whole body comes (aiohttp does that before the caller could close it).

    For a connection whose receive buffer was lowered for a slow listener.
    ``ResponseHandler.force_close`` is not in aiohttp's documentation.
    """
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.force_close()


def read_size_settable(transport: asyncio.BaseTransport | None) -> bool:
    """Whether ``set_read_limit`` can size ``transport``'s reads."""
    return transport is not None and isinstance(getattr(type(transport), "max_size", None), int)


def set_read_limit(transport: asyncio.BaseTransport | None, size: int | None) -> None:
    """Bytes per recv() for ``transport``: ``size``, or the loop's default (None).

    asyncio's plain selector transports read ``max_size`` bytes per recv() (a
    class attribute, 256 KiB, not documented); uvloop's and TLS transports
    have no such knob, and there this does nothing (ytproxy.upstream bounds
    what the kernel may hold for them instead).
    """
    if read_size_settable(transport):
        default = getattr(type(transport), "max_size")  # noqa: B009
        setattr(transport, "max_size", default if size is None else min(size, default))  # noqa: B010


def set_tls_read_buffer(transport: asyncio.BaseTransport | None, high: int | None) -> None:
    """The bytes a TLS transport may read from its socket ahead of its
    protocol: at most ``high``, or the loop's default (256 KiB) for None.

    A paused protocol (aiohttp's, for a slow listener's stream) stops the
    decrypting, not the reading: the encrypted bytes pile up to this limit in
    every connection.  ``set_read_buffer_limits`` of asyncio's and uvloop's
    TLS transports is not in asyncio's documentation; plain transports have
    none, and there this does nothing.
    """
    limits = getattr(transport, "set_read_buffer_limits", None)
    if callable(limits):
        limits(high=high, low=None if high is None else high // 4)
