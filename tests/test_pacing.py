"""The relay paces a slow listener (small upstream reads, nothing held for it here)
and unpaces a fast one, and the bytes are exact either way."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bench.httpclient import fetch
from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy import pacing
from ytproxy.cache import CachedBody
from ytproxy.config import UpstreamConfig
from ytproxy.http import streams
from ytproxy.loops import loop_name
from ytproxy.models import StreamInfo
from ytproxy.pacing import ListenerPace
from ytproxy.upstream import RangeStream, StreamSource, UpstreamFetcher, reads
from ytproxy.upstream import stream as upstream

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


def _record_read_limits(monkeypatch: pytest.MonkeyPatch, *, with_room: bool) -> list[int | None]:
    """The read sizes set on upstream transports, in order; ``with_room=False``
    leaves out those set by RangeStream.room."""
    limits: list[int | None] = []
    original = upstream.set_read_limit
    in_room = False

    def record(transport: asyncio.Transport | None, size: int | None) -> None:
        if with_room or not in_room:
            limits.append(size)
        original(transport, size)

    original_room = RangeStream.room

    def room(self: RangeStream, nbytes: int) -> None:
        nonlocal in_room
        in_room = True
        try:
            original_room(self, nbytes)
        finally:
            in_room = False

    # Both modules that set read sizes: reads (a range's start) and stream (room, filled).
    monkeypatch.setattr(upstream, "set_read_limit", record)
    monkeypatch.setattr(reads, "set_read_limit", record)
    monkeypatch.setattr(RangeStream, "room", room)
    return limits


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


async def _play(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, data: bytes,
                title: str, pace_calls: list[bool], **listen: Any) -> bytes:
    """``data`` as a track, played through a fresh daemon by ``_listen``."""
    googlevideo.add_track(VID, data, title=title)
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    port = proxy.server.port
    assert port is not None
    return await _listen(port, len(data), pace_calls, **listen)


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
    received = await _play(googlevideo, make_proxy, data, "Slow", pace_calls,
                           receive_buffer=32 * 1024)
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
    # A player's bounded buffer: the rest of the track must not fit in the
    # kernel's buffers while the listener pauses (left alone, loopback grows
    # them to megabytes).
    received = await _play(googlevideo, make_proxy, data, "Fast then slow", pace_calls,
                           receive_buffer=256 * 1024, fast_first=True)
    assert pace_calls[:2] == [False, True]
    assert received == data


async def test_the_first_gulp_is_read_in_big_pieces_then_small_ones(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, pace_calls: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = _record_read_limits(monkeypatch, with_room=False)
    data = random_audio(3 * 1024 * 1024 + 5)
    received = await _play(googlevideo, make_proxy, data, "Gulp", pace_calls,
                           receive_buffer=32 * 1024)
    sizes = [size for size in limits if size is not None]
    assert sizes[0] == pacing.START_READ > pacing.PACED_READ
    small = sizes.index(pacing.PACED_READ)
    assert pacing.START_READ not in sizes[small:]  # small from the first full socket on
    assert received == data


async def test_a_slow_listener_gets_pieces_as_big_as_its_socket_has_room_for(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, pace_calls: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once slow, reads follow the room in the listener's socket (more than
    PACED_READ when there is room, never more than ROOM_READ), and upstream is
    not read while that socket drains."""
    limits = _record_read_limits(monkeypatch, with_room=True)
    holds = 0
    original_hold = upstream.hold_reads

    def hold(opened: upstream.OpenRange) -> None:
        nonlocal holds
        holds += 1
        original_hold(opened)

    monkeypatch.setattr(upstream, "hold_reads", hold)
    data = random_audio(3 * 1024 * 1024 + 9)
    received = await _play(googlevideo, make_proxy, data, "Room", pace_calls,
                           receive_buffer=32 * 1024)
    assert received == data
    assert pace_calls[0] is True
    after = [size for size in limits[limits.index(pacing.PACED_READ):] if size is not None]
    assert max(after) > pacing.PACED_READ  # room-sized pieces
    assert all(pacing.PACED_READ <= size <= pacing.ROOM_READ for size in after)
    assert holds >= 1


@contextlib.asynccontextmanager
async def _stream(googlevideo: FakeGooglevideo, data: bytes, title: str,
                  **config: float) -> AsyncIterator[RangeStream]:
    """A RangeStream over the whole of ``data``, straight from the fake upstream."""
    googlevideo.add_track(VID, data, title=title)
    upstream_config = UpstreamConfig(chunk_size=1_048_576, allowed_hosts=("127.0.0.1",),
                                     **config)
    info = StreamInfo(url=googlevideo.sign(VID), expires_at=time.time() + 3600)

    async def no_refresh(*_: object) -> StreamInfo:
        raise AssertionError("the URL is good")

    async with aiohttp.ClientSession() as session:
        fetcher = UpstreamFetcher(upstream_config, session)
        async with RangeStream(StreamSource(fetcher, no_refresh), info, 0, len(data) - 1) as body:
            yield body


async def test_a_held_stream_outlasts_the_read_timeout_without_a_retry(
    googlevideo: FakeGooglevideo,
) -> None:
    """A slow listener's stream holds its upstream socket while the listener's
    drains; a pause longer than read_timeout (MPD paused) is not a stall."""
    data = random_audio(2 * 1024 * 1024 + 1)
    async with _stream(googlevideo, data, "Held", read_timeout=0.3) as body:
        got = bytearray()
        while len(got) < 200_000:
            piece = await body.next_piece()
            assert piece is not None
            got += piece
        body.pace()  # told slow
        body.hold()
        await asyncio.sleep(1.0)  # over three read timeouts
        while (piece := await body.next_piece()) is not None:
            got += piece
    assert bytes(got) == data
    assert body.retry_count == 0 and body.resumes == 0


async def test_waiting_for_a_paced_piece_keeps_aiohttps_buffer_small(
    googlevideo: FakeGooglevideo,
) -> None:
    """aiohttp's StreamReader.read(n) raises the response's buffer limits to
    n and 2n for good: where reads cannot be sized (uvloop), a paced piece is
    waited for with a read that does not, so a slow listener's stream keeps
    aiohttp pausing at READ_BUFSIZE.  (asyncio's sized reads raise them to
    ROOM_READ on purpose: set_read_size.)"""
    async with _stream(googlevideo, random_audio(600_000), "Limits") as body:
        await body.next_piece()  # the short first range, whole
        body.pace()  # told slow: pieces of the listener's room
        body.room(pacing.ROOM_READ)
        got = 0
        while got < 500_000:
            piece = await body.next_piece()
            assert piece
            got += len(piece)
        opened = body._current
        assert opened is not None
        # Plain HTTP: asyncio's own transports are the ones whose reads are sized.
        sized = loop_name(asyncio.get_running_loop()) != "uvloop"
        expected = pacing.ROOM_READ if sized else reads.READ_BUFSIZE
        assert opened.response.content.get_read_buffer_limits() == (expected, 2 * expected)
        # And so aiohttp stopped reading: the rest of the range is not all here.
        assert opened.response.connection is not None


async def test_no_piece_is_kept_by_the_stream_once_handed_over(
    googlevideo: FakeGooglevideo,
) -> None:
    """While the relay waits for its listener, the stream keeps no reference
    to the piece it handed over (a thousand paused listeners would pin a
    thousand pieces)."""
    async with _stream(googlevideo, random_audio(300_000), "Handed") as body:
        await body.next_piece()  # the short first range
        piece = await body.next_piece()
        assert piece
        # Only this name and getrefcount's own argument.
        assert sys.getrefcount(piece) == 2


async def test_the_send_queue_is_read_from_the_kernel() -> None:
    """What the room is reckoned from: bytes a peer has not taken yet."""
    taken = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await taken.wait()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        queued = streams._send_queue(writer.transport)  # type: ignore[arg-type]
        if queued is None:
            pytest.skip("this platform cannot tell a socket's send queue")
        assert queued() == 0
        sock = writer.get_extra_info("socket")
        # Bigger than the peer's receive buffer: some must wait in ours.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        writer.write(bytes(4 * 1024 * 1024))
        await asyncio.sleep(0.1)
        in_kernel = queued()
        assert 0 < in_kernel <= 4 * 1024 * 1024
    finally:
        taken.set()
        writer.close()
        server.close()


# -- judged by the listener's own time (ytproxy.pacing) ----------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hand(pace: ListenerPace, clock: FakeClock, nbytes: int, seconds: float) -> float:
    """A piece of ``nbytes`` the listener took ``seconds`` to take."""
    pace.handing()
    clock.now += seconds
    return pace.handed(nbytes)


def test_time_spent_waiting_for_upstream_is_not_the_listeners() -> None:
    clock = FakeClock()
    pace = ListenerPace(clock)
    for _ in range(32):
        _hand(pace, clock, 64 * 1024, 0.0001)
    clock.now += 15.0  # upstream stalls between two pieces
    assert not pace.slow(_hand(pace, clock, 64 * 1024, 0.001))
    for _ in range(31):
        _hand(pace, clock, 64 * 1024, 0.0001)
    assert pace.taken == pacing.UNPACE_AFTER
    assert pace.fast


def test_a_long_drain_or_a_low_rate_of_its_own_time_is_slow() -> None:
    clock = FakeClock()
    pace = ListenerPace(clock)
    assert pace.slow(_hand(pace, clock, 8 * 1024, pacing.SLOW_DRAIN + 0.01))
    clock = FakeClock()
    pace = ListenerPace(clock)
    # Short drains, but 64 KiB per 0.09 s: 730 KB/s.
    took = [_hand(pace, clock, 64 * 1024, 0.09) for _ in range(10)]
    assert max(took) < pacing.SLOW_DRAIN
    assert pace.slow(took[-1])
    assert not pace.fast


def test_a_player_is_never_fast_and_a_fast_reader_only_after_its_first_megabytes() -> None:
    clock = FakeClock()
    mpd = ListenerPace(clock)
    _hand(mpd, clock, 512 * 1024, 0.0001)  # its first gulp, at once
    for _ in range(2000):  # then 16 KiB every 0.8 s, waited for
        _hand(mpd, clock, 16 * 1024, 0.8)
        assert not mpd.fast
    reader = ListenerPace(clock)
    while reader.taken + 256 * 1024 < pacing.UNPACE_AFTER:
        _hand(reader, clock, 256 * 1024, 0.0001)
        assert not reader.fast  # not yet: MPD's first gulp looks the same
    _hand(reader, clock, 256 * 1024, 0.0001)
    assert reader.fast


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, int]]:
    """Every pace() the relay tells a body: (body kind, paced, bytes the body
    had given by then)."""
    calls: list[tuple[str, bool, int]] = []
    relay, cached = RangeStream.pace, CachedBody.pace

    def relay_pace(self: RangeStream, paced: bool = True) -> None:
        calls.append(("relay", paced, self.bytes_fetched))
        relay(self, paced)

    def cached_pace(self: CachedBody, paced: bool = True) -> None:
        calls.append(("cache", paced, self._pos))
        cached(self, paced)

    monkeypatch.setattr(RangeStream, "pace", relay_pace)
    monkeypatch.setattr(CachedBody, "pace", cached_pace)
    return calls


# Longer than 4 MB/s of wall time can make up for in the track below: judged
# by wall time, its reader stayed paced to the end.
STALL = 3.0
STALLED_TRACK = 8 * 1024 * 1024 + 13


async def _read_after(proxy: RunningProxy, googlevideo: FakeGooglevideo, fault: Fault,
                      data: bytes) -> None:
    """Resolve the track, inject ``fault``, then read it whole, as fast as can be."""
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    googlevideo.add_fault(VID, fault)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert fault.fired == 1
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def _unpaced_in_time(told: list[tuple[str, bool, int]], kind: str) -> None:
    """The listener's body (``kind``) was unpaced once, never told slow, and as
    soon as it had taken UNPACE_AFTER bytes (its pieces while paced are at most
    START_READ), as with no fault.  (A download's own stream is told it too.)"""
    calls = [(paced, given) for body, paced, given in told if body == kind]
    assert [paced for paced, _ in calls] == [False]
    assert calls[0][1] <= pacing.UNPACE_AFTER + 2 * pacing.START_READ


async def test_a_fast_reader_is_unpaced_after_an_upstream_stall(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, told: list[tuple[str, bool, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Relay only: seconds of upstream's silence early in the stream are not
    the listener's, which is unpaced as if they had not been, and reads
    upstream in full-size reads from then on."""
    limits = _record_read_limits(monkeypatch, with_room=True)
    data = random_audio(STALLED_TRACK, seed=26)
    googlevideo.add_track(VID, data, title="Stalled")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    fault = Fault("stall", at_byte=1_500_000, stall_seconds=STALL)
    await _read_after(proxy, googlevideo, fault, data)
    _unpaced_in_time(told, "relay")
    assert limits[-1] is None  # the last range read unsized, as a fast reader's are


async def test_a_fast_reader_is_unpaced_after_a_refused_url_is_refreshed(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, told: list[tuple[str, bool, int]],
) -> None:
    """Relay only: the seconds yt-dlp takes for a fresh URL after a 403 are
    not the listener's either."""
    data = random_audio(STALLED_TRACK, seed=27)
    googlevideo.add_track(VID, data, title="Refreshed")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200  # resolved: the GET starts with this URL
    googlevideo.watch_delay = STALL  # a slow resolve for the refresh
    watched = googlevideo.watch_hits[VID]
    # The URLs are revoked as the second range starts: the third is refused.
    await _read_after(proxy, googlevideo, Fault("revoke", at_byte=1_500_000), data)
    assert googlevideo.watch_hits[VID] == watched + 1  # refreshed once
    assert googlevideo.counts["revoked"] >= 1
    _unpaced_in_time(told, "relay")


async def test_a_fast_reader_of_a_download_that_stalls_is_unpaced(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, told: list[tuple[str, bool, int]],
) -> None:
    """The cache's body waits for a download that stalls: that wait is not
    the listener's, which gets the file in full-size pieces again after."""
    data = random_audio(STALLED_TRACK, seed=28)
    googlevideo.add_track(VID, data, title="Downloading")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576},
                             cache={"max_size": 64 * 1024 * 1024})
    fault = Fault("stall", at_byte=1_500_000, stall_seconds=STALL)
    await _read_after(proxy, googlevideo, fault, data)
    _unpaced_in_time(told, "cache")
