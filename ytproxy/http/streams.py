"""The ``/proxy/{id}`` handler: slots, Range, response headers, the relay loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import sys
import termios
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

from aiohttp import web

from ytproxy.cache import CachedBody, CacheFile, TrackCache, refresher
from ytproxy.config import Config
from ytproxy.errors import (
    AtCapacity,
    ResolverUnavailable,
    UpstreamFailed,
    YoutubeRefused,
    YtproxyError,
)
from ytproxy.http.clients import answer_shape
from ytproxy.http.icy import IcyFramer
from ytproxy.http.pacing import ListenerPace
from ytproxy.http.ranges import requested_range
from ytproxy.http.registry import StreamRegistry
from ytproxy.http.slots import StreamSlots
from ytproxy.library.tracks import Tracks
from ytproxy.models import StreamInfo, Track, TrackId, safe_display_name
from ytproxy.private.aiohttp import payload_writer
from ytproxy.resilience import RetryGap
from ytproxy.upstream import FileChanged, RangeStream, UpstreamFetcher, probe_size
from ytproxy.upstream.holds import Held

# What a stream's bytes come from: upstream directly, or a cache file.
Body = RangeStream | CachedBody

__all__ = ["StreamHandler"]

log = logging.getLogger(__name__)

_FALLBACK_MIME = "application/octet-stream"
# Seconds a play waits to be counted, with the others that come meanwhile.
_PLAYS_FLUSH_DELAY = 1.0


class StreamHandler:
    """Serves ``GET|HEAD /proxy/{id}``; one instance per app."""

    def __init__(
        self,
        config: Config,
        tracks: Tracks,
        fetcher: UpstreamFetcher,
        slots: StreamSlots,
        registry: StreamRegistry,
        cache: TrackCache | None = None,
        *,
        on_first_byte: Callable[[float], None] | None = None,
    ) -> None:
        self._config = config
        self._cache = cache
        self._tracks = tracks
        self._fetcher = fetcher
        self._slots = slots
        self._registry = registry
        self._policy = config.retry
        self._background: set[asyncio.Task[None]] = set()
        self._plays: Counter[str] = Counter()
        self._plays_flush: asyncio.TimerHandle | None = None
        # Told the time from request to first byte (the metrics histogram).
        self.on_first_byte = on_first_byte

    async def handle(self, request: web.Request) -> web.StreamResponse:
        track_id = TrackId(request.match_info["id"])
        if not self._slots.try_acquire():
            raise AtCapacity(
                f"all {self._slots.capacity} stream slots are busy; "
                "try again shortly or raise limits.max_streams"
            )
        try:
            return await self._serve(request, track_id)
        except ConnectionResetError:
            # The listener left while its request was held: nobody to answer.
            log.debug("stream: %s: the listener left before the first byte", track_id)
            return web.Response(status=503)
        finally:
            self._slots.release()

    def _in_background(self, bookkeeping: Coroutine[Any, Any, None]) -> None:
        """Store writes the listener does not wait for (a busy store must not delay bytes)."""
        task = asyncio.create_task(bookkeeping)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _count_play(self, track_id: str) -> None:
        """Count a play, written with the others of the next second in one go: a
        store write per play would sit in the way of the next play's lookup
        (MPD reconnects on every seek, and the store has one thread)."""
        self._plays[track_id] += 1
        if self._plays_flush is None:
            self._plays_flush = asyncio.get_running_loop().call_later(
                _PLAYS_FLUSH_DELAY, self._flush_plays)

    def _flush_plays(self) -> None:
        self._plays_flush = None
        plays, self._plays = self._plays, Counter()
        for track_id, times in plays.items():
            self._in_background(self._tracks.mark_played(track_id, times))

    async def drain(self) -> None:
        """Let pending bookkeeping writes finish (called before the store closes)."""
        if self._plays_flush is not None:
            self._plays_flush.cancel()
            self._flush_plays()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _learn_size(self, track_id: str, info: StreamInfo) -> tuple[int, StreamInfo, str]:
        size, info, mime = await probe_size(
            self._fetcher, info, refresh=refresher(self._tracks, track_id), policy=self._policy,
            label=track_id, max_available_wait=self._config.resolver.max_available_wait)
        self._in_background(self._tracks.remember_size(track_id, size))
        return size, info, mime or _FALLBACK_MIME

    async def _serve(self, request: web.Request, track_id: TrackId) -> web.StreamResponse:
        received = time.monotonic()
        cached = self._cache.hit(track_id) if self._cache is not None else None
        if cached is not None:
            # On disk whole: no yt-dlp call, no upstream byte (also offline).
            # Held open from here on: an eviction, a clear or a deletion
            # meanwhile cannot take the bytes from under this listener.
            assert self._cache is not None
            try:
                track = await self._tracks.get(track_id)
                if track is not None:
                    return await self._answer(
                        request, track, None, cached.size,
                        cached.mime or track.stream_mime or _FALLBACK_MIME, received,
                        cached=cached)
            finally:
                self._cache.release(cached)
        track, info = await self._stream_for(request, track_id)
        mime = info.mime
        size = info.size
        if size is None:
            size, info, learned_mime = await self._learn_size(track_id, info)
            mime = mime or learned_mime
        try:
            return await self._answer(request, track, info, size, mime or _FALLBACK_MIME,
                                      received)
        except FileChanged as exc:
            # Nothing was sent yet: the stored size was another file's (or the
            # URL was refreshed to another): answer with the one upstream has.
            log.warning("stream: %s: the stored size (%d bytes) is not upstream's (%d); "
                        "answering with upstream's", track_id, exc.expected, exc.total)
            self._in_background(self._tracks.remember_size(track_id, exc.total))
            return await self._answer(request, track, info, exc.total,
                                      mime or _FALLBACK_MIME, received)

    async def _stream_for(self, request: web.Request,
                          track_id: TrackId) -> tuple[Track, StreamInfo]:
        """``Tracks.stream_for``, held while the resolver is out of reach for every
        track (offline, breaker open, YouTube refusing this address) for up to
        ``retry.hold_budget``: MPD waits for headers, and an error would make
        it skip the song.  While YouTube refuses, a request gets one yt-dlp
        try; held, it asks again without calling yt-dlp until the pause ends."""
        gap = RetryGap(self._policy)
        held: Held | None = None
        try_while_paused = True
        try:
            while True:
                try:
                    return await self._tracks.stream_for(track_id,
                                                         try_while_paused=try_while_paused)
                except ResolverUnavailable as exc:
                    if not exc.offline:
                        raise
                    refused = isinstance(exc, YoutubeRefused)
                    if refused:
                        try_while_paused = False  # its one try is spent
                    # Probe at the resolver breaker's pace at most (a network
                    # failure's own retry_after is a generic 30 s).
                    pace = min(exc.retry_after or 0.0, self._config.breaker.reset_after)
                    delay = gap.next_delay(pace, hold=True)
                    if delay is None:
                        raise
                    if not _listening(request):
                        raise ConnectionResetError("the listener went away") from None
                    log.debug("stream: %s: holding for the resolver (%s); next look in "
                              "%.1f s", track_id, exc, delay)
                    if held is None:
                        held = self._fetcher.holds.hold(
                            f"YouTube ({exc.state})" if isinstance(exc, YoutubeRefused)
                            else "the resolver (yt-dlp)")
                    await asyncio.sleep(delay)
        finally:
            if held is not None:
                held.release()

    async def _answer(self, request: web.Request, track: Track, info: StreamInfo | None,
                      size: int, mime: str, received: float, *,
                      cached: CacheFile | None = None) -> web.StreamResponse:
        track_id = track.id
        shape = answer_shape(request.headers)
        icy = self._config.icy.inline_metadata and shape.icy_inline
        # An ICY body's metadata blocks are counted from its own first byte, a
        # 206's too (ytproxy.http.icy): a client that restarts its count on
        # each answer, as ffmpeg does, seeks exactly.
        byte_range = requested_range(request.headers, size)
        start, end = byte_range if byte_range else (0, size - 1)
        headers = {"Content-Type": mime, "Cache-Control": "no-store"}
        if shape.icy_name:
            headers["icy-name"] = safe_display_name(track.name)
        if icy:
            headers["icy-metaint"] = str(self._config.icy.metaint)
        else:
            headers["Accept-Ranges"] = "bytes"
            # Whole bodies to MPD go out chunked (see ytproxy.http.clients);
            # 206 answers keep their exact length.
            if byte_range or shape.whole_length:
                headers["Content-Length"] = str(end - start + 1 if size else 0)
        if byte_range:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206 if byte_range else 200

        if request.method == "HEAD" or size == 0:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            await response.write_eof()
            return response

        async with self._body(request, track_id, info, start, end, size, mime, cached) as body:
            # Wait for the first bytes before answering, so a failure to start
            # is a clear JSON error rather than a truncated 200.
            try:
                await body.ready()
            except FileChanged:
                raise
            except UpstreamFailed as exc:
                log.error("stream: %s: giving up before the first byte: %s", track_id, exc)
                raise
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            if self.on_first_byte is not None:
                self.on_first_byte(time.monotonic() - received)
            if start == 0:
                self._count_play(track_id)
            framer = IcyFramer(self._config.icy.metaint, track.name) if icy else None
            await self._relay(request, response, body, track, framer=framer,
                              first_byte=start, length=end - start + 1)
        return response

    def _body(self, request: web.Request, track_id: str, info: StreamInfo | None, start: int,
              end: int, size: int, mime: str, cached: CacheFile | None) -> Body:
        """The listener's bytes: from the cache file (downloading it whole if it is
        not), or relayed from upstream when there is no cache or no room in it."""
        cache = self._cache
        if cache is not None:
            entry = cached
            if entry is None:
                assert info is not None
                cache.record_miss()
                entry = cache.start(track_id, info, size, mime, focus=start)
                if entry is not None:
                    try:
                        return cache.body(entry, start, end, relay=partial(
                            self._late_relay, request, track_id, info, size))
                    finally:
                        cache.release(entry)  # the body holds it now
            else:
                cache.record_hit()  # held by _serve until the answer ends
                return cache.body(entry, start, end,
                                  relay=partial(self._late_relay, request, track_id, info, size))
        assert info is not None
        return self._range_stream(request, track_id, info, start, end, size)

    def _range_stream(self, request: web.Request, track_id: str, info: StreamInfo, start: int,
                      end: int, size: int) -> RangeStream:
        return RangeStream(
            self._fetcher, info, start, end, refresh=refresher(self._tracks, track_id),
            policy=self._policy, label=track_id, listening=partial(_listening, request),
            expected_total=size, max_available_wait=self._config.resolver.max_available_wait)

    async def _late_relay(self, request: web.Request, track_id: str, info: StreamInfo | None,
                          size: int, start: int, end: int) -> RangeStream:
        """A relay for the rest of a stream whose cache file cannot be filled."""
        if info is None:
            # The stored track's id (checked when it was stored).
            _, info = await self._tracks.stream_for(TrackId(track_id))
        return self._range_stream(request, track_id, info, start, end, size)

    async def _relay(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: Body,
        track: Track,
        *,
        framer: IcyFramer | None,
        first_byte: int,
        length: int,
    ) -> None:
        client = request.remote or "?"
        entry = self._registry.start(track.id, track.name, client, request.headers.get("Range"))
        entry.source = partial(_source_of, body)
        transport = request.transport
        _limit_send_buffer(transport)
        write, drain = _writer(response)
        queued = _send_queue(transport)
        capacity = 0  # bytes the listener's socket held when last full
        # Judged by the time spent waiting for it, never for upstream (pacing).
        pace = ListenerPace()
        ok = False
        try:
            # The hot path: one upstream read and one write per piece, and no
            # reference kept to a piece once it is written (a paused listener
            # must not pin it).
            while (piece := await body.next_piece()) is not None:
                pace.handing()
                await write(piece if framer is None else framer.frame(piece))
                nbytes = len(piece)
                entry.bytes_sent += nbytes
                del piece
                if transport is not None and transport.get_write_buffer_size():
                    # The listener's socket is full: wait until it has taken
                    # everything before reading more from upstream, so what it
                    # has not taken waits in upstream's socket, not here (a
                    # slow one's stream holds its upstream socket meanwhile).
                    # One that takes long to, or takes little on average, is slow.
                    body.filled()
                    if queued is not None:
                        capacity = queued()  # what its kernel buffer holds, full
                    body.hold()
                    await drain()
                    if pace.slow(pace.handed(nbytes)) and not body.slow:
                        body.pace()  # a slow listener, now known to be one
                else:
                    pace.handed(nbytes)
                if body.paced and pace.fast:
                    body.pace(False)  # a listener that keeps up: big reads
                elif body.slow and capacity and queued is not None:
                    # The next piece as big as the socket can take whole: few
                    # reads per second of audio, and none left over here.
                    body.room(capacity - queued())
                entry.refreshes = body.refreshes
                entry.retries = body.retry_count
                entry.resumes = body.resumes
            if entry.bytes_sent < length:
                # Never a clean end short of what was promised: the listener
                # must see the body is incomplete (a closed connection).
                raise UpstreamFailed(f"upstream ended after {entry.bytes_sent} of the "
                                     f"{length} bytes promised")
            await response.write_eof()
            ok = True
        except ConnectionError:
            # MPD closes and reopens on every seek, and on stop: not an error,
            # nor news (a line per seek at INFO cost ~0.15 ms of CPU each).
            ok = True
            log.debug("stream: %s: client %s went away after %d bytes", track.id, client,
                      entry.bytes_sent)
        except YtproxyError as exc:
            log.error("stream: %s: giving up at byte %d: %s", track.id,
                      first_byte + entry.bytes_sent, exc)
            # The status line is gone; cutting the connection is the only way
            # left to tell the client the body is incomplete.
            if request.transport is not None:
                request.transport.close()
        finally:
            self._registry.finish(entry, ok=ok)


# The kernel's send buffer for a listener's connection.  Linux otherwise grows
# it to megabytes for a reader on loopback, and a listener that reads 20 KB/s
# would have us fetch and push megabytes ahead: work and memory for nothing,
# MPD buffers 512 KiB itself.  256 KiB (the kernel doubles it) still carries
# ~100 MB/s at 5 ms RTT.
LISTENER_SEND_BUFFER = 256 * 1024


def _source_of(body: Body) -> tuple[str, float | None]:
    if isinstance(body, CachedBody):
        return body.source, round(body.percent, 1)
    return "relay", None


def _listening(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def _limit_send_buffer(transport: asyncio.Transport | None) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LISTENER_SEND_BUFFER)
    # Paused whenever anything is left over in this process, resumed when it
    # has all gone to the kernel: the relay's drain waits for exactly that.
    assert transport is not None
    transport.set_write_buffer_limits(high=0)


def _send_queue(transport: asyncio.Transport | None) -> Callable[[], int] | None:
    """A function telling the bytes in the listener's kernel send queue (Linux's
    SIOCOUTQ), or None where that cannot be asked."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return None
    fd = sock.fileno()
    if fd < 0:
        return None
    request = termios.TIOCOUTQ
    empty = bytes(4)

    def queued() -> int:
        try:
            return int.from_bytes(fcntl.ioctl(fd, request, empty), sys.byteorder, signed=True)
        except OSError:
            return 1 << 30  # no room known: the smallest reads
    return queued


def _writer(
    response: web.StreamResponse,
) -> tuple[Callable[[bytes], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """The response's write, which leaves all waiting to the relay, and its
    wait-for-the-transport (ytproxy.private.aiohttp.payload_writer); without
    such a writer, the public write, which waits itself, and no wait."""
    return payload_writer(response) or (response.write, _nothing)


async def _nothing() -> None:
    return None
