"""The ``/proxy/{id}`` handler: slots, Range, response headers, ICY, and the
relay loop that writes a body to the listener's socket at its pace.

What the listener gets (cache or relay, held, at which size, counted as a
play) is ``ytproxy.playback``'s to decide; this module is HTTP's side of it."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from ytproxy.config import Config
from ytproxy.errors import AtCapacity, UpstreamFailed, YtproxyError
from ytproxy.http.clients import answer_shape
from ytproxy.http.icy import IcyFramer
from ytproxy.http.ranges import requested_range
from ytproxy.http.registry import StreamRegistry
from ytproxy.http.slots import StreamSlots
from ytproxy.models import Track, TrackId, safe_display_name
from ytproxy.pacing import ListenerPace
from ytproxy.playback import Playback
from ytproxy.private.aiohttp import payload_writer
from ytproxy.upstream import Body

__all__ = ["StreamHandler"]

log = logging.getLogger(__name__)


class StreamHandler:
    """Serves ``GET|HEAD /proxy/{id}``; one instance per app."""

    def __init__(self, config: Config, playback: Playback, slots: StreamSlots,
                 registry: StreamRegistry, *,
                 on_first_byte: Callable[[float], None] | None = None) -> None:
        self._config = config
        self._playback = playback
        self._slots = slots
        self._registry = registry
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

    async def drain(self) -> None:
        """Let pending bookkeeping writes finish (called before the store closes)."""
        await self._playback.drain()

    async def _serve(self, request: web.Request, track_id: TrackId) -> web.StreamResponse:
        received = time.monotonic()
        shape = answer_shape(request.headers)
        icy = self._config.icy.inline_metadata and shape.icy_inline

        # With inline ICY metadata too: its blocks are counted from each answer's
        # own first byte, a 206's included (ytproxy.http.icy), so a client that
        # restarts its count on each answer, as ffmpeg does, seeks exactly.
        async with self._playback.listen(
                track_id, range_for=partial(requested_range, request.headers),
                listening=partial(_listening, request),
                with_body=request.method != "HEAD") as answer:
            track, size, byte_range = answer.track, answer.size, answer.byte_range
            start, end = answer.start, answer.end
            headers = {"Content-Type": answer.mime, "Cache-Control": "no-store"}
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
            response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
            await response.prepare(request)
            if answer.body is None:  # HEAD, or an empty track
                await response.write_eof()
                return response
            if self.on_first_byte is not None:
                self.on_first_byte(time.monotonic() - received)
            self._playback.begun(answer)
            framer = IcyFramer(self._config.icy.metaint, track.name) if icy else None
            await self._relay(request, response, answer.body, track, framer=framer,
                              first_byte=start, length=end - start + 1)
        return response

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
    percent = body.percent
    return body.source, None if percent is None else round(percent, 1)


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
