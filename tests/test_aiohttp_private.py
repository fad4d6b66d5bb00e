"""Each private or undocumented piece of aiohttp that ytproxy.private.aiohttp
relies on, checked against the installed aiohttp: a failure here names the
piece that changed, before the daemon meets it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser, HttpVersion11, RawRequestMessage

from ytproxy.http.listener import MAX_HEADER_FIELD, MAX_HEADERS, MAX_REQUEST_LINE
from ytproxy.loops import loop_name
from ytproxy.private.aiohttp import (
    ProtocolRunner,
    RequestHandler,
    answer_as_http1,
    close_when_done,
    head_error_kind,
    payload_writer,
    protocol_factory,
    set_read_limit,
    with_version,
    wrap_request_handler,
)

CHANGED = "aiohttp {version} changed {what}: ytproxy.private.aiohttp.{fn} must follow it"


def changed(what: str, fn: str) -> str:
    return CHANGED.format(version=aiohttp.__version__, what=what, fn=fn)


def parse(head: bytes) -> RawRequestMessage | BaseException:
    """``head`` through aiohttp's own request parser, with the listener's limits."""
    loop = asyncio.get_running_loop()
    parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16, max_line_size=MAX_REQUEST_LINE,
                               max_field_size=MAX_HEADER_FIELD, max_headers=MAX_HEADERS)
    try:
        messages, _, _ = parser.feed_data(head)
    except Exception as exc:
        return exc
    message = messages[0][0]
    assert isinstance(message, RawRequestMessage)
    return message


async def test_head_errors_are_told_apart_as_aiohttp_raises_them() -> None:
    long_line = parse(b"GET /" + b"a" * (MAX_REQUEST_LINE + 10) + b" HTTP/1.1\r\n\r\n")
    long_field = parse(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEADER_FIELD + 10) + b"\r\n\r\n")
    many = parse(b"GET / HTTP/1.1\r\n"
                 + b"".join(b"X%d: y\r\n" % i for i in range(MAX_HEADERS + 5)) + b"\r\n")
    fine = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    what = "how a request head over its limits is reported (LineTooLong.args, the text " \
           "'Too many headers')"
    assert head_error_kind(long_line, MAX_REQUEST_LINE) == "request_line", \
        changed(what, "head_error_kind")
    assert head_error_kind(long_field, MAX_REQUEST_LINE) == "header_field", \
        changed(what, "head_error_kind")
    assert head_error_kind(many, MAX_REQUEST_LINE) == "header_count", \
        changed(what, "head_error_kind")
    assert isinstance(fine, RawRequestMessage)
    assert head_error_kind(None, MAX_REQUEST_LINE) is None
    tls_hello = parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 / HTTP/1.1\r\n\r\n")
    assert head_error_kind(tls_hello, MAX_REQUEST_LINE) == "method", \
        changed("how a method it cannot parse is reported (BadHttpMethod)", "head_error_kind")


async def test_a_parsed_request_can_claim_another_version() -> None:
    message = parse(b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n")
    assert isinstance(message, RawRequestMessage)
    assert hasattr(message, "_replace"), changed("RawRequestMessage._replace", "with_version")
    answered = with_version(message, HttpVersion11)
    assert answered.version == HttpVersion11
    assert (answered.method, answered.path) == ("GET", "/x")


class Counted(web.RequestHandler):
    made = 0

    def __init__(self, manager: web.Server, *, mark: str, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        Counted.made += 1
        self.mark = mark


async def test_connections_are_made_with_the_servers_own_settings() -> None:
    async def hello(request: web.BaseRequest) -> web.Response:
        return web.Response(text="hi")

    server = web.Server(hello, keepalive_timeout=7.5)
    for attribute in ("_loop", "_kwargs"):
        assert hasattr(server, attribute), changed(f"web.Server.{attribute}", "protocol_factory")
    make = protocol_factory(server, Counted, mark="ok")
    listening = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/") as response:
            assert await response.text() == "hi"
    finally:
        listening.close()
        await server.shutdown(1.0)
        await listening.wait_closed()
    assert Counted.made >= 1


async def test_a_responses_writer_leaves_the_wait_to_its_caller(
    aiohttp_client: object,
) -> None:
    seen: list[bool] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        pair = payload_writer(response)
        seen.append(pair is not None)
        assert pair is not None
        write, drain = pair
        await write(b"x" * 200_000)
        await drain()
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)  # type: ignore[operator]
    async with client.get("/") as response:
        assert len(await response.read()) == 200_000
    assert seen == [True], changed("StreamResponse._payload_writer", "payload_writer")


async def test_a_connection_told_to_close_is_not_pooled(aiohttp_server: object) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")
                     if request.transport else None)
        return web.Response(body=b"y" * 4_000_000)  # more than comes with the head

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)  # type: ignore[operator]
    url = f"http://127.0.0.1:{server.port}/"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            await response.read()
        async with session.get(url) as response:  # a kept connection: the same peer
            assert response.connection is not None  # the body is still coming
            close_when_done(response)
            await response.read()
        async with session.get(url) as response:
            await response.read()
    assert peers[0] == peers[1], "aiohttp no longer keeps a connection between requests"
    assert peers[2] != peers[1], changed("ResponseHandler.force_close", "close_when_done")


async def test_read_sizes_are_set_on_asyncios_own_transports() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        if loop_name(loop) == "uvloop":
            set_read_limit(transport, 8192)  # no such knob: nothing happens
            assert not hasattr(transport, "max_size")
            pytest.skip("uvloop's transports have no read size to set")
        default = getattr(type(transport), "max_size", None)
        assert isinstance(default, int), changed("asyncio's _SelectorSocketTransport.max_size",
                                                 "set_read_limit")
        set_read_limit(transport, 8192)
        assert transport.max_size == 8192  # type: ignore[attr-defined]
        set_read_limit(transport, None)
        assert transport.max_size == default  # type: ignore[attr-defined]
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


async def _raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_servers_handler_and_request_factory_can_be_wrapped() -> None:
    seen: list[str] = []

    async def hello(request: web.BaseRequest) -> web.Response:
        return web.Response(text="hi")

    def noting(handler: RequestHandler) -> RequestHandler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            seen.append(request.path)
            return await handler(request)
        return handle

    server = web.Server(hello)
    for attribute in ("request_handler", "request_factory"):
        assert hasattr(server, attribute), changed(
            f"web.Server.{attribute}", "wrap_request_handler / answer_as_http1")
    wrap_request_handler(server, noting)
    answer_as_http1(server)
    listening = await asyncio.get_running_loop().create_server(
        protocol_factory(server, web.RequestHandler), "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        answer = await _raw_exchange(port, b"GET /two HTTP/2.0\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")
    finally:
        listening.close()
        await server.shutdown(1.0)
        await listening.wait_closed()
    assert seen == ["/two"], changed("web.Server.request_handler", "wrap_request_handler")
    assert answer.startswith(b"HTTP/1.1 200"), changed("web.Server.request_factory",
                                                      "answer_as_http1")


async def test_a_runners_sites_make_connections_with_its_factory() -> None:
    made: list[str] = []

    class Marking(ProtocolRunner):
        def connection_factory(self, server: web.Server
                               ) -> Callable[[], web.RequestHandler]:
            make = protocol_factory(server, web.RequestHandler)

            def marked() -> web.RequestHandler:
                made.append("made")
                return make()
            return marked

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = Marking(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        answer = await _raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 200")
    assert made == ["made"], changed("how a site makes its protocol (runner.server)",
                                     "ProtocolRunner")
