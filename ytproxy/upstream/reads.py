"""How much an upstream read takes, and when it reads at all.

A listener that keeps up gets big reads and big kernel buffers; one that is
slow (MPD playing: 20 KB/s) gets reads sized to its socket's room, small
kernel buffers, and none while its socket drains, so the bytes it has not
taken wait in the sockets under TCP flow control, not in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from ytproxy.pacing import ROOM_READ
from ytproxy.private.aiohttp import (
    close_when_done,
    read_size_settable,
    set_read_limit,
    set_tls_read_buffer,
)

if TYPE_CHECKING:
    from ytproxy.upstream.fetcher import OpenRange

# The read sizes a paced stream asks for are ytproxy.pacing's, beside its other thresholds.
__all__ = [
    "READ_BUFSIZE",
    "hold_reads",
    "read_piece",
    "set_read_limit",
    "set_read_size",
    "transport_of",
]

# Bytes of an upstream body aiohttp buffers per open response before it stops
# reading the socket: twice this, plus what the last read brought in.  (A
# read(n) of more than this would raise both for the rest of the response:
# aiohttp's StreamReader.read calls set_read_chunk_size(n).)
READ_BUFSIZE = 4 * 1024
# The kernel's receive buffer for a paced upstream connection, set once the
# response has come (set before connecting, it would also cap TCP's window
# scale, and with it every later, unpaced, read).  Linux would grow it to
# megabytes (tcp_rmem) for a connection read fast once, and upstream fills it
# with the rest of the range however slowly the listener takes it: with many
# listeners that is gigabytes of kernel memory, and under TCP memory pressure
# sends stall while epoll still says "writable".  128 KiB (the kernel doubles
# it) holds a whole ROOM_READ piece, and carries ~2 MB/s at 50 ms RTT, a
# hundred times a 160 kbit/s track.
PACED_RECEIVE_BUFFER = 128 * 1024
# The same where a transport's reads cannot be sized (uvloop's, TLS ones): one
# recv() takes whatever the kernel holds, up to 256 KiB, so what the kernel may
# hold is what bounds the bytes a slow listener's stream has in this process.
# 16 KiB (32 KiB in the kernel's count) still carries ~600 KB/s at 50 ms RTT,
# thirty times a 160 kbit/s track.  Only for a listener known to be slow:
# lowered on a connection a fast sender fills (a stream's start), the kernel
# drops what no longer fits and the sender backs off for seconds to minutes
# (measured: a 200 MB relay on uvloop fell from 1,200 to 0-100 MB/s).  What
# a stream takes in before its listener tells slow (one recv() of up to
# 256 KiB on uvloop) stays here until relayed: a thousand listeners on uvloop
# peak at ~460 MB, on asyncio's loop (reads sized) ~110 MB.
UNSIZED_PACED_RECEIVE_BUFFER = 16 * 1024
# Encrypted bytes a paced stream's TLS transport may read ahead of its
# decrypting (set_tls_read_buffer; 256 KiB by default, in every connection).
# More than one TLS record (16 KiB and its overhead): with less, a record
# that never comes whole would stall the stream for good.
TLS_PACED_READ_AHEAD = 64 * 1024
# Otherwise: room for a fast listener (capped by net.core.rmem_max).
RECEIVE_BUFFER = 1 << 20


def transport_of(opened: OpenRange) -> asyncio.Transport | None:
    connection = opened.response.connection
    return connection.transport if connection is not None else None


def set_read_size(opened: OpenRange, read_size: int | None, slow: bool) -> None:
    response = opened.response
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if connection is None or transport is None:
        return  # its whole body came: the connection is the pool's again
    sized = read_size_settable(transport)
    if not slow:
        receive_buffer = RECEIVE_BUFFER
    else:
        receive_buffer = PACED_RECEIVE_BUFFER if sized else UNSIZED_PACED_RECEIVE_BUFFER
    opened.slowed = opened.slowed or slow
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Lowered only for a listener known to be slow (a connection's window
        # does not come back to full speed when raised again, so such a
        # connection is not reused); otherwise set large at once, since Linux's
        # autotuning would start every new connection small.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    if opened.slowed:
        # aiohttp hands a connection back to its pool as soon as the whole body
        # came, before finish() could close it: tell it to close it instead.
        close_when_done(response)
    if slow and sized:
        # Its socket is held while the listener's drains (RangeStream.hold),
        # and reads may be ROOM_READ: aiohttp's own pauses would only add to each.
        # (Where reads cannot be sized, those pauses are what bounds the body
        # waiting here: one recv() past READ_BUFSIZE.)
        response.content.set_read_chunk_size(ROOM_READ)
    set_read_limit(transport, read_size)
    set_tls_read_buffer(transport, TLS_PACED_READ_AHEAD if read_size else None)


async def read_piece(opened: OpenRange, patience: float, size: int | None = None) -> bytes:
    """The next bytes of ``opened``'s body (at most ``size``, when given),
    failing with TimeoutError when none come within ``patience`` seconds of
    asking; a held socket is read again.

    ``size`` keeps a piece within what the listener's socket has room for
    where the socket's reads cannot be sized (uvloop, TLS): the rest waits in
    the response's buffer, not in the listener's transport as well."""
    if opened.held:
        opened.held = False
        transport = transport_of(opened)
        if transport is not None:
            transport.resume_reading()
    content = opened.response.content
    piece = content.read_nowait(size or -1)
    if not piece and not content.is_eof():
        async with asyncio.timeout(patience):
            if not size:
                return await content.readany()  # all there is
            # Wait for the first bytes with a read(n) too small to raise
            # aiohttp's buffer limits (READ_BUFSIZE), then take what else came.
            piece = await content.read(min(size, READ_BUFSIZE))
        if len(piece) < size:
            piece += content.read_nowait(size - len(piece))
    return piece


def hold_reads(opened: OpenRange) -> None:
    """Stop reading ``opened``'s socket until the next ``read_piece``."""
    transport = transport_of(opened)
    # Not once the whole body came: aiohttp has already handed the connection
    # back (response.connection is None), and it must not go on held.
    if not opened.held and transport is not None and transport.is_reading():
        opened.held = True
        transport.pause_reading()

