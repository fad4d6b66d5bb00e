"""Each private or undocumented piece of aiohttp that ytproxy.aiohttp_private
relies on, checked against the installed aiohttp: a failure here names the
piece that changed, before the daemon meets it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser, HttpVersion11, RawRequestMessage

from ytproxy.aiohttp_private import (
    close_when_done,
    head_error_kind,
    payload_writer,
    protocol_factory,
    set_read_limit,
    with_version,
)
from ytproxy.http.listener import MAX_HEADER_FIELD, MAX_HEADERS, MAX_REQUEST_LINE
from ytproxy.loops import loop_name

CHANGED = "aiohttp {version} changed {what}: ytproxy.aiohttp_private.{fn} must follow it"


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
