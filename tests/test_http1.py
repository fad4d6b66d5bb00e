"""The lean client for a stream's first range (ytproxy.http1), against a
scripted HTTP/1.1 server on loopback that answers each request as told and
counts connections, and through UpstreamFetcher where it falls back to aiohttp.
"""

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

from ytproxy import http1
from ytproxy.config import UpstreamConfig
from ytproxy.http1 import ConnectFailed, Disconnected, FirstRanges, Unsupported
from ytproxy.models import StreamInfo
from ytproxy.upstream import FIRST_RANGE, RangeStream, UpstreamFetcher

BODY = bytes(range(256)) * 200  # 51,200 bytes
# (request head, connection number, request number on it) -> raw bytes to send,
# or None to close the connection without answering.
Script = Callable[[bytes, int, int], bytes | None]


def partial_content(head: bytes, extra: str = "") -> bytes:
    spec = next(line for line in head.decode().split("\r\n")
                if line.lower().startswith("range:")).split("=", 1)[1]
    first, last = (int(x) for x in spec.split("-"))
    body = BODY[first:last + 1]
    return (f"HTTP/1.1 206 Partial Content\r\nContent-Type: audio/webm\r\n"
            f"Content-Range: bytes {first}-{first + len(body) - 1}/{len(BODY)}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


class Scripted:
    """A loopback HTTP/1.1 server that answers requests as its script says."""

    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
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
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                 ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for _, writer in self._handlers:
            writer.close()  # the connections a client still keeps
        await asyncio.gather(*(task for task, _ in self._handlers), return_exceptions=True)
        await self.server.wait_closed()

    def url(self, scheme: str = "http") -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{scheme}://127.0.0.1:{port}/videoplayback?id=x&expire=1"


@pytest.fixture
async def client() -> AsyncIterator[FirstRanges]:
    first = FirstRanges()
    yield first
    first.close()


async def get(client: FirstRanges, url: str, first: int = 0, last: int = FIRST_RANGE - 1,
              within: float = 5.0) -> http1.ShortResponse:
    return await client.get(url, {"User-Agent": "test"}, first, last,
                            connect_timeout=within, read_timeout=within)


async def whole(response: http1.ShortResponse) -> bytes:
    body = bytearray()
    while piece := await response.content.readany():
        body += piece
    return bytes(body)


async def test_a_short_range_comes_whole_and_its_connection_is_kept(
    client: FirstRanges,
) -> None:
    async with Scripted(lambda head, conn, n: partial_content(head)) as server:
        for first in (0, 1000, 0):
            response = await get(client, server.url(), first, first + FIRST_RANGE - 1)
            assert response.status == 206
            assert response.headers["content-range"].startswith(f"bytes {first}-")
            assert await whole(response) == BODY[first:first + FIRST_RANGE]
            assert response.content.is_eof()
            response.release()
            assert client.kept() == 1
        assert server.connections == 1
        port = server.url().split(":")[2].split("/")[0]
    head = server.heads[0].decode()
    assert head.startswith("GET /videoplayback?id=x&expire=1 HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{port}\r\n" in head


async def test_a_kept_connection_upstream_closed_is_replaced_without_an_error(
    client: FirstRanges,
) -> None:
    # Each connection answers one request, then closes without a word (as a
    # server whose keep-alive ran out does) when the next one comes.
    async with Scripted(lambda head, conn, n: partial_content(head) if n == 1 else None
                        ) as server:
        for _ in range(3):
            response = await get(client, server.url())
            assert await whole(response) == BODY[:FIRST_RANGE]
            response.release()
        assert server.connections == 3


async def test_a_connection_that_breaks_mid_body_is_an_error_and_not_kept(
    client: FirstRanges,
) -> None:
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(partial_content(head)[:-100])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut_short, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        response = await get(client, f"http://127.0.0.1:{port}/videoplayback")
        assert response.status == 206
        with pytest.raises(Disconnected):
            await whole(response)
        response.release()
    finally:
        server.close()
        await server.wait_closed()
    assert client.kept() == 0


async def test_the_body_is_had_as_it_comes(client: FirstRanges) -> None:
    """A busy upstream sends a range in pieces: the first piece is the
    listener's before the rest has come."""
    rest_sent = asyncio.Event()

    async def in_two(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            answer = partial_content(head)
            writer.write(answer[:-10_000])
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(answer[-10_000:])
            await writer.drain()
            rest_sent.set()
        writer.close()

    server = await asyncio.start_server(in_two, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        response = await get(client, f"http://127.0.0.1:{port}/videoplayback")
        first = await response.content.readany()
        assert first and not rest_sent.is_set()
        assert first + await whole(response) == BODY[:FIRST_RANGE]
        response.release()
        assert client.kept() == 1
        # Released before its body was read: kept once the rest has come, as here...
        response = await get(client, f"http://127.0.0.1:{port}/videoplayback")
        rest_sent.clear()
        await rest_sent.wait()
        await asyncio.sleep(0.05)
        response.release()
        assert client.kept() == 1
        # ...and closed while the rest is still on its way.
        response = await get(client, f"http://127.0.0.1:{port}/videoplayback")
        response.release()
        assert client.kept() == 0
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_connection_close_and_http_1_0_answers_are_not_kept(
    client: FirstRanges,
) -> None:
    answers = {1: "Connection: close\r\n"}

    def script(head: bytes, conn: int, n: int) -> bytes:
        answer = partial_content(head, answers.get(conn, ""))
        return answer.replace(b"HTTP/1.1", b"HTTP/1.0", 1) if conn == 2 else answer

    async with Scripted(script) as server:
        for _ in range(3):
            response = await get(client, server.url())
            assert await whole(response) == BODY[:FIRST_RANGE]
            response.release()
        assert server.connections == 3
        assert client.kept() == 1  # only the third, an ordinary HTTP/1.1 answer


async def test_a_server_that_ignores_range_gives_only_what_was_asked(
    client: FirstRanges,
) -> None:
    big = BODY * 100  # 5 MB, all of it sent at once
    everything = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(big)}\r\n\r\n").encode() + big
    async with Scripted(lambda head, conn, n: everything) as server:
        response = await get(client, server.url(), 0, 999)
        assert response.status == 200 and response.content_length == len(big)
        await asyncio.sleep(0.3)  # the server has pushed all it could
        # What it sends past a short range waits in the kernel, not in this process.
        buffered = len(response._conn.buffer)  # type: ignore[union-attr]
        assert buffered <= http1._MAX_BUFFER + 256 * 1024, buffered
        assert await whole(response) == big[:1000]
        response.release()
        assert client.kept() == 0  # the rest of the body is on the wire: not reusable


async def test_what_it_cannot_carry_is_unsupported(client: FirstRanges) -> None:
    chunked = (b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n%s\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    answers = [chunked % b"", chunked % b"Content-Length: 5\r\n"]  # chunked wins
    async with Scripted(lambda head, conn, n: answers[conn - 1]) as server:
        for _ in answers:
            with pytest.raises(Unsupported, match="Content-Length"):
                await get(client, server.url())
            assert client.kept() == 0
        for url, headers in (
            (server.url().replace("id=x", "id=a b"), {}),  # needs quoting
            (server.url(), {"X-Bad": "a\r\nInjected: yes"}),
            (server.url(), {"X-Name": "caf\u00e9"}),
            (server.url(), {"range": "bytes=0-"}),  # the range is the client's
            (server.url().replace("http://", "http://user:pw@"), {}),
            ("ftp://127.0.0.1/x", {}),
        ):
            with pytest.raises(Unsupported):
                await client.get(url, headers, 0, 9, connect_timeout=1, read_timeout=1)
        assert len(server.heads) == 2  # nothing it refuses is sent


async def test_a_silent_upstream_times_out_and_the_connection_is_dropped(
    client: FirstRanges,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await get(client, f"http://127.0.0.1:{port}/v", within=0.3)
        assert time.monotonic() - started < 3
        assert client.kept() == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_connection_is_connect_failed(client: FirstRanges) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectFailed, match=str(port)):
        await get(client, f"http://127.0.0.1:{port}/v")


async def test_kept_connections_expire(client: FirstRanges,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "IDLE_TIMEOUT", 0.1)
    async with Scripted(lambda head, conn, n: partial_content(head)) as server:
        (await get(client, server.url())).release()
        assert client.kept() == 1
        await asyncio.sleep(0.35)  # closed within twice IDLE_TIMEOUT
        assert client.kept() == 0
        (await get(client, server.url())).release()
        assert server.connections == 2


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_tls_is_spoken_and_the_certificate_checked(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with Scripted(lambda head, conn, n: partial_content(head), server_side) as server:
        client = FirstRanges(trusting)
        try:
            for _ in range(2):
                response = await get(client, server.url("https"))
                assert await whole(response) == BODY[:FIRST_RANGE]
                response.release()
            assert server.connections == 1
        finally:
            client.close()
        stranger = FirstRanges()  # the system's trust: a self-signed certificate is refused
        try:
            with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await get(stranger, server.url("https"))
        finally:
            stranger.close()


async def test_the_fetcher_asks_aiohttp_for_what_the_lean_client_cannot_carry() -> None:
    """A first range answered chunked is fetched again through aiohttp: the
    stream is whole and exact, and nothing is counted as a failure."""

    def script(head: bytes, conn: int, n: int) -> bytes:
        plain = partial_content(head)
        if conn > 1:  # aiohttp's connections get the ordinary answer
            return plain
        split = plain.index(b"\r\n\r\n") + 4
        lines = [x for x in plain[:split].decode().split("\r\n") if x
                 and not x.startswith("Content-Length")]
        body = plain[split:]
        return ("\r\n".join([*lines, "Transfer-Encoding: chunked"]) + "\r\n\r\n").encode() + (
            f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")

    async with Scripted(script) as server, aiohttp.ClientSession() as session:
        fetcher = UpstreamFetcher(UpstreamConfig(allowed_hosts=("127.0.0.1",),
                                                 chunk_size=16_384), session)
        info = StreamInfo(url=server.url(), expires_at=time.time() + 3600)

        async def no_refresh(*_: object) -> StreamInfo:
            raise AssertionError("the URL is good")

        got = bytearray()
        async with RangeStream(fetcher, info, 0, len(BODY) - 1, refresh=no_refresh) as body:
            while (piece := await body.next_piece()) is not None:
                got += piece
        fetcher.close()
        assert bytes(got) == BODY
        assert body.retry_count == 0
        assert not fetcher.breaker_for("127.0.0.1").failures
