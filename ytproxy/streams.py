"""The ``/proxy/{id}`` handler: slots, Range, response headers, the relay loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web

from ytproxy.config import Config
from ytproxy.errors import AtCapacity, InvalidTrackId, UpstreamFailed, YtproxyError
from ytproxy.icy import IcyFramer, wants_icy
from ytproxy.models import StreamInfo, Track, is_video_id
from ytproxy.ranges import parse_range
from ytproxy.slots import StreamSlots
from ytproxy.status import StreamRegistry
from ytproxy.tracks import Tracks
from ytproxy.upstream import RangeStream, Refresh, UpstreamFetcher

__all__ = ["StreamHandler"]

log = logging.getLogger(__name__)

_FALLBACK_MIME = "application/octet-stream"


class StreamHandler:
    """Serves ``GET|HEAD /proxy/{id}``; one instance per app."""

    def __init__(
        self,
        config: Config,
        tracks: Tracks,
        fetcher: UpstreamFetcher,
        slots: StreamSlots,
        registry: StreamRegistry,
    ) -> None:
        self._config = config
        self._tracks = tracks
        self._fetcher = fetcher
        self._slots = slots
        self._registry = registry
        self._policy = config.retry
        self._background: set[asyncio.Task[None]] = set()
        # Told the time from request to first byte (the metrics histogram).
        self.on_first_byte: Callable[[float], None] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        track_id = request.match_info["id"]
        if not is_video_id(track_id):
            raise InvalidTrackId(
                f"{track_id!r} is not a track id (11 characters of A-Z a-z 0-9 _ -)"
            )
        if not await self._slots.try_acquire():
            raise AtCapacity(
                f"all {self._slots.capacity} stream slots are busy; "
                "try again shortly or raise limits.max_streams"
            )
        try:
            return await self._serve(request, track_id)
        finally:
            await self._slots.release()

    def _in_background(self, bookkeeping: Coroutine[Any, Any, None]) -> None:
        """Store writes the listener does not wait for (a busy store must not delay bytes)."""
        task = asyncio.create_task(bookkeeping)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Let pending bookkeeping writes finish (called before the store closes)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _refresher(self, track_id: str) -> Refresh:
        async def refresh() -> StreamInfo:
            return await self._tracks.refresh(track_id)

        return refresh

    async def _learn_size(self, track_id: str, info: StreamInfo) -> tuple[int, StreamInfo, str]:
        """Size and type from a one-byte range: googlevideo throttles HEAD, so never HEAD."""
        async with RangeStream(
            self._fetcher, info, 0, 0, refresh=self._refresher(track_id),
            policy=self._policy, label=track_id,
        ) as probe:
            await probe.next_piece()
            if probe.total is None:
                raise YtproxyError("upstream did not say how long the stream is")
            self._in_background(self._tracks.remember_size(track_id, probe.total))
            return probe.total, probe.info, probe.content_type or _FALLBACK_MIME

    async def _serve(self, request: web.Request, track_id: str) -> web.StreamResponse:
        received = time.monotonic()
        track, info = await self._tracks.stream_for(track_id)
        mime = info.mime
        size = info.size
        if size is None:
            size, info, learned_mime = await self._learn_size(track_id, info)
            mime = mime or learned_mime
        mime = mime or _FALLBACK_MIME

        icy_client = wants_icy(request.headers)
        icy = self._config.icy.inline_metadata and icy_client
        # An ICY body interleaves metadata, so byte ranges would not line up:
        # such a stream is served whole (MPD does not seek it anyway).
        byte_range = None if icy else parse_range(request.headers.get("Range"), size)
        start, end = byte_range if byte_range else (0, size - 1)
        headers = {"Content-Type": mime, "icy-name": _header_safe(track.name),
                   "Cache-Control": "no-store"}
        if icy:
            headers["icy-metaint"] = str(self._config.icy.metaint)
        else:
            headers["Accept-Ranges"] = "bytes"
            # MPD 0.23 wraps a seekable stream of known size in a buffer that
            # drops stream tags, losing icy-name.  A whole-body answer to a
            # client that asked for ICY (MPD always does) therefore goes out
            # chunked; seeking still works through Accept-Ranges + Range, and
            # 206 answers keep their exact length.
            if byte_range or not icy_client:
                headers["Content-Length"] = str(end - start + 1 if size else 0)
        if byte_range:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206 if byte_range else 200

        if request.method == "HEAD" or size == 0:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            await response.write_eof()
            return response

        async with RangeStream(
            self._fetcher, info, start, end, refresh=self._refresher(track_id),
            policy=self._policy, label=track_id,
        ) as body:
            # Wait for the first bytes before answering, so a failure to start
            # is a clear JSON error rather than a truncated 200.
            try:
                first = await body.next_piece()
            except UpstreamFailed as exc:
                log.error("stream: %s: giving up before the first byte: %s", track_id, exc)
                raise
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            if self.on_first_byte is not None:
                self.on_first_byte(time.monotonic() - received)
            if start == 0:
                self._in_background(self._tracks.mark_played(track_id))
            framer = IcyFramer(self._config.icy.metaint, track.name) if icy else None
            await self._relay(request, response, body, first, track,
                              framer=framer, first_byte=start)
        return response

    async def _relay(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: RangeStream,
        first: bytes | None,
        track: Track,
        *,
        framer: IcyFramer | None,
        first_byte: int,
    ) -> None:
        client = request.remote or "?"
        entry = self._registry.start(track.id, track.name, client, request.headers.get("Range"))
        ok = False
        piece = first
        try:
            while piece is not None:
                out: Iterable[bytes] = framer.feed(piece) if framer else (piece,)
                for part in out:
                    await response.write(part)
                entry.bytes_sent += len(piece)
                entry.refreshes = body.refreshes
                entry.retries = sum(body.retries.values())
                entry.resumes = body.resumes
                piece = await body.next_piece()
            await response.write_eof()
            ok = True
        except ConnectionError:
            # MPD closes and reopens on every seek, and on stop: not an error.
            ok = True
            log.info("stream: %s: client %s went away after %d bytes", track.id, client,
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


def _header_safe(text: str) -> str:
    """Header values must not carry control characters; keep the rest as UTF-8."""
    return "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text)
