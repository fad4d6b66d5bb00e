"""The fetcher's HTTP client (aiohttp's ClientSession, one pool) against a
scripted HTTP/1.1 server on loopback that answers each request as told and
counts connections: what googlevideo's ways and a failing network ask of it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ytproxy.config import UpstreamConfig
from ytproxy.errors import UpstreamUnreachable
from ytproxy.models import StreamInfo
from ytproxy.upstream import (
    FIRST_RANGE,
    RangeStream,
    StreamSource,
    UpstreamFetcher,
    upstream_connector,
)

BODY = bytes(range(256)) * 800  # 204,800 bytes
# (request head, connection number, request number on it) -> raw bytes to send,
# or None to close the connection without answering.
Script = Callable[[bytes, int, int], bytes | None]


def partial_content(head: bytes, body: bytes = BODY) -> bytes:
    spec = next(line for line in head.decode().split("\r\n")
                if line.lower().startswith("range:")).split("=", 1)[1]
    first, last = (int(x) for x in spec.split("-"))
    part = body[first:last + 1]
    return (f"HTTP/1.1 206 Partial Content\r\nContent-Type: audio/webm\r\n"
            f"Content-Range: bytes {first}-{first + len(part) - 1}/{len(body)}\r\n"
            f"Content-Length: {len(part)}\r\n\r\n").encode() + part


class Scripted:
    """A loopback HTTP/1.1 server that answers requests as its script says."""

    def __init__(self, script: Script, close_after: tuple[int, int] | None = None) -> None:
        self.script = script
        # (connection number, request number): close the connection after this answer.
        self.close_after = close_after
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._handlers: set[tuple[asyncio.Task[None], asyncio.StreamWriter]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, served = self.connections, 0
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add((task, writer))
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                served += 1
                answer = self.script(head, number, served)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if (number, served) == self.close_after:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for _, writer in self._handlers:
            writer.close()  # the connections a client still keeps
        await asyncio.gather(*(task for task, _ in self._handlers), return_exceptions=True)
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/videoplayback?id=x&expire=1"


@pytest.fixture
async def fetcher() -> AsyncIterator[UpstreamFetcher]:
    session = aiohttp.ClientSession(connector=upstream_connector(), auto_decompress=False)
    fetcher = UpstreamFetcher(UpstreamConfig(allowed_hosts=("127.0.0.1",), chunk_size=65_536,
                                             connect_timeout=2.0, read_timeout=1.0), session)
    yield fetcher
    await fetcher.aclose()
    await session.close()


async def no_refresh(*_: object) -> StreamInfo:
    raise AssertionError("the URL is good")


async def play(fetcher: UpstreamFetcher, url: str, first: int = 0, last: int = len(BODY) - 1
               ) -> tuple[bytes, RangeStream]:
    info = StreamInfo(url=url, expires_at=time.time() + 3600)
    got = bytearray()
    async with RangeStream(StreamSource(fetcher, no_refresh), info, first, last) as body:
        body.pace(False)
        while (piece := await body.next_piece()) is not None:
            got += piece
    return bytes(got), body


async def test_a_streams_ranges_share_one_kept_connection(fetcher: UpstreamFetcher) -> None:
    async with Scripted(lambda head, conn, n: partial_content(head)) as server:
        got, body = await play(fetcher, server.url())
        assert got == BODY
        # A short first range, then 64 KiB ranges: four requests, one connection.
        assert len(server.heads) == 4
        assert server.connections == 1
        again, _ = await play(fetcher, server.url(), 1000, 9999)  # the next stream too
        assert again == BODY[1000:10000]
        assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("GET /videoplayback?id=x&expire=1 HTTP/1.1\r\n")
    assert f"\r\nRange: bytes=0-{FIRST_RANGE - 1}\r\n" in head
    assert "\r\nAccept-Encoding: identity\r\n" in head
    assert body.retry_count == 0


async def test_a_kept_connection_upstream_closed_is_replaced_without_an_error(
    fetcher: UpstreamFetcher,
) -> None:
    # Each connection answers one request, then closes without a word (as a
    # server whose keep-alive ran out does) when the next one comes.
    async with Scripted(lambda head, conn, n: partial_content(head) if n == 1 else None
                        ) as server:
        got, body = await play(fetcher, server.url())
        host = f"127.0.0.1:{server.port}"
    assert got == BODY
    assert body.retry_count == 0
    assert host in fetcher.breakers and not fetcher.breakers[host].failures
    assert server.connections == 4  # one per range answered


async def test_a_server_that_ignores_range_gives_only_what_was_asked_and_is_not_kept(
    fetcher: UpstreamFetcher,
) -> None:
    big = BODY * 25  # 5 MB, all of it sent at once
    everything = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(big)}\r\n\r\n").encode() + big
    async with Scripted(lambda head, conn, n: everything) as server:
        got, _ = await play(fetcher, server.url(), 0, 999)
        assert got == big[:1000]
        await asyncio.sleep(0.5)  # long enough to read all 5 MB on loopback, had it been read
        got, _ = await play(fetcher, server.url(), 0, 999)
        assert got == big[:1000]
        # The rest of the first body was not read and kept for the next stream.
        assert server.connections == 2


async def test_a_body_cut_short_is_resumed_at_the_exact_byte(fetcher: UpstreamFetcher) -> None:
    def script(head: bytes, conn: int, n: int) -> bytes | None:
        answer = partial_content(head)
        return answer[:-100] if conn == 1 and n == 2 else answer  # the second range cut

    async with Scripted(script, close_after=(1, 2)) as server:
        got, body = await play(fetcher, server.url())
    assert got == BODY
    assert body.resumes == 1 and body.retries["reset"] == 1


async def test_a_silent_upstream_times_out_as_unreachable(fetcher: UpstreamFetcher) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    info = StreamInfo(url=f"http://127.0.0.1:{port}/videoplayback", expires_at=time.time() + 60)
    began = time.monotonic()
    try:
        with pytest.raises(UpstreamUnreachable, match=r"cannot reach upstream 127\.0\.0\.1"):
            await fetcher.open_range(info, 0, 999)
    finally:
        server.close()
        await server.wait_closed()
    # connect_timeout + read_timeout bound the wait for the head (3 s here).
    assert time.monotonic() - began < 10


async def test_a_refused_connection_is_unreachable_naming_the_port(
    fetcher: UpstreamFetcher,
) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    info = StreamInfo(url=f"http://127.0.0.1:{port}/videoplayback", expires_at=time.time() + 60)
    with pytest.raises(UpstreamUnreachable, match=rf"127\.0\.0\.1:{port}"):
        await fetcher.open_range(info, 0, 999)


@pytest.fixture
def tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context, and a
    client context that trusts it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_a_paced_stream_over_tls_comes_whole(
    tls_context: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Over TLS a paced, held stream (its read-ahead bounded by
    set_tls_read_buffer) comes whole, byte for byte, with no retry."""
    body = bytes(range(256)) * 12_000  # ~3 MB: three 1 MiB ranges

    async def videoplayback(request: web.Request) -> web.Response:
        first, last = (int(x) for x in request.headers["Range"][6:].split("-"))
        part = body[first:last + 1]
        return web.Response(status=206, body=part, headers={
            "Content-Range": f"bytes {first}-{first + len(part) - 1}/{len(body)}"})

    app = web.Application()
    app.router.add_get("/videoplayback", videoplayback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_context[0])
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls_context[1]),
                                    auto_decompress=False)
    fetcher = UpstreamFetcher(UpstreamConfig(allowed_hosts=("127.0.0.1",)), session)
    info = StreamInfo(url=f"https://127.0.0.1:{port}/videoplayback?expire=1",
                      expires_at=time.time() + 3600)
    got = bytearray()
    try:
        async with asyncio.timeout(30), RangeStream(
                StreamSource(fetcher, no_refresh), info, 0, len(body) - 1) as stream:
            stream.pace()  # a slow listener's stream: small reads, held sockets
            while (piece := await stream.next_piece()) is not None:
                got += piece
                stream.hold()  # as the relay does while its listener's socket drains
    finally:
        await session.close()
        await runner.cleanup()
    assert bytes(got) == body
    assert stream.retry_count == 0
