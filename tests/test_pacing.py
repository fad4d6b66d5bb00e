"""The relay paces a slow listener (small upstream reads, nothing held for it here)
and unpaces a fast one, and the bytes are exact either way."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from bench.httpclient import fetch
from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, random_audio
from ytproxy import upstream
from ytproxy.upstream import RangeStream

VID = "PaCeD_tRaCk"


@pytest.fixture
def pace_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    calls: list[bool] = []
    original = RangeStream.pace

    def record(self: RangeStream, paced: bool = True) -> None:
        calls.append(paced)
        original(self, paced)

    monkeypatch.setattr(RangeStream, "pace", record)
    return calls


async def _listen(port: int, length: int, pace_calls: list[bool], *, receive_buffer: int,
                  fast_first: bool = False) -> bytes:
    """GET the track on a raw socket whose receive buffer is bounded like a player's.

    Until the relay first calls ``pace``: a player's pace (16 KiB every 50 ms),
    or with ``fast_first`` as fast as loopback goes and then no bytes taken for
    0.5 s.  Then the rest as it comes (bounded: 20 s in all).
    """
    # A slow reader buffers little in this process too, or its socket fills late.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, limit=1 << 20 if fast_first else 1 << 16)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                               receive_buffer)
    writer.write(f"GET /proxy/{VID} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Connection: close\r\n\r\n".encode())
    received = bytearray()
    try:
        async with asyncio.timeout(20):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            while not pace_calls:
                if fast_first:
                    chunk = await reader.read(1 << 20)
                    assert chunk, "the body ended before the relay paced or unpaced"
                    received += chunk
                else:
                    received += await reader.read(16 * 1024)
                    await asyncio.sleep(0.05)
            if fast_first:
                await asyncio.sleep(0.5)  # a player that stops taking bytes for a while
            while len(received) < length:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                received += chunk
    finally:
        writer.close()
    return bytes(received)


async def test_a_fast_listener_is_unpaced_and_gets_every_byte(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, pace_calls: list[bool]
) -> None:
    data = random_audio(6 * 1024 * 1024 + 7)
    googlevideo.add_track(VID, data, title="Fast")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert pace_calls == [False]  # started paced, unpaced once it kept up


async def test_a_slow_listener_is_paced_and_gets_every_byte(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, pace_calls: list[bool]
) -> None:
    data = random_audio(3 * 1024 * 1024 + 11)
    googlevideo.add_track(VID, data, title="Slow")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    port = proxy.server.port
    assert port is not None
    received = await _listen(port, len(data), pace_calls, receive_buffer=32 * 1024)
    assert pace_calls[0] is True and False not in pace_calls
    assert received == data


async def test_the_benchmark_client_reads_a_whole_body(
    googlevideo: FakeGooglevideo,
) -> None:
    """bench.httpclient, which the throughput figures rest on, reads exact bodies."""
    data = random_audio(300_000)
    googlevideo.add_track(VID, data, title="Bench client")
    url = googlevideo.sign(VID)
    path = url.split(str(googlevideo.port), 1)[1]
    digest = hashlib.sha256()
    got = await asyncio.to_thread(fetch, "127.0.0.1", googlevideo.port, path,
                                  headers={"Range": "bytes=0-299999"}, hasher=digest)
    assert got.status == 206 and got.body_bytes == len(data)
    assert got.digest == hashlib.sha256(data).digest()


async def test_a_fast_listener_that_stops_taking_bytes_is_paced_again(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, pace_calls: list[bool]
) -> None:
    """Unpaced pieces are up to 256 KiB; the relay still sees the socket full
    (aiohttp's own write would wait inside past 64 KiB, and hide it)."""
    data = random_audio(12 * 1024 * 1024 + 3)
    googlevideo.add_track(VID, data, title="Fast then slow")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    port = proxy.server.port
    assert port is not None
    # A player's bounded buffer: the rest of the track must not fit in the
    # kernel's buffers while the listener pauses (left alone, loopback grows
    # them to megabytes).
    received = await _listen(port, len(data), pace_calls, receive_buffer=256 * 1024,
                             fast_first=True)
    assert pace_calls[:2] == [False, True]
    assert received == data


async def test_the_first_gulp_is_read_in_big_pieces_then_small_ones(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, pace_calls: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits: list[int | None] = []
    original = upstream._set_read_limit

    def record(transport: asyncio.Transport | None, size: int | None) -> None:
        limits.append(size)
        original(transport, size)

    monkeypatch.setattr(upstream, "_set_read_limit", record)
    data = random_audio(3 * 1024 * 1024 + 5)
    googlevideo.add_track(VID, data, title="Gulp")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    port = proxy.server.port
    assert port is not None
    received = await _listen(port, len(data), pace_calls, receive_buffer=32 * 1024)
    sizes = [size for size in limits if size is not None]
    assert sizes[0] == upstream.START_READ > upstream.PACED_READ
    small = sizes.index(upstream.PACED_READ)
    assert upstream.START_READ not in sizes[small:]  # small from the first full socket on
    assert received == data
