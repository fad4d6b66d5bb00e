"""The least a relay on an asyncio event loop can do: the loop's own ceiling.

Not a peer a person would run: a reference for the loop comparison.  Each GET
is answered by one request for the same path to the bench's upstream (no
Range, no retries, no parsing beyond the upstream's head), and the body goes
from one transport to the other through ``Protocol.data_received`` with
flow control (the upstream is paused while the listener's transport holds
more than ``HIGH_WATER``).  What is left per byte is the event loop and the
kernel, so its figures on uvloop and on asyncio's own loop tell how much a
relay can gain from the loop on this machine at all.

    python -m bench.barerelay --loop uvloop --port 8000 --upstream-port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import cast

from bench.httpclient import parse_head

__all__ = ["HIGH_WATER", "main"]

HOST = "127.0.0.1"
# The listener's transport buffer above which the upstream is paused (the
# daemon's own relay waits for an empty one; 256 KiB is asyncio's habit).
HIGH_WATER = 256 * 1024
_HEAD_LIMIT = 16 * 1024


class _Upstream(asyncio.Protocol):
    """The upstream's side: its head parsed for Content-Length, its body relayed."""

    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.head = bytearray()
        self.left: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        out = self.listener.transport
        if self.left is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > _HEAD_LIMIT:
                    out.close()
                return
            status, headers = parse_head(bytes(self.head[:end]))
            length = int(headers["content-length"])  # nginx and bench.fileserver send it
            body = bytes(self.head[end + 4:])
            self.head.clear()
            self.left = length
            out.write(f"HTTP/1.1 {status} Relayed\r\nContent-Length: {length}\r\n"
                      f"Connection: close\r\n\r\n".encode("latin-1"))
            data = body
        if data:
            out.write(data)
            self.left -= len(data)
        if self.left <= 0:
            out.close()
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.transport.close()


class _Listener(asyncio.Protocol):
    """The listener's side: one GET, relayed from the upstream."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.request = bytearray()
        self.upstream: asyncio.Transport | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self.started:
            return
        self.request += data
        if b"\r\n\r\n" not in self.request:
            if len(self.request) > _HEAD_LIMIT:
                self.transport.close()
            return
        self.started = True
        path = bytes(self.request).split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
        # Kept: the loop holds only a weak reference to a task.
        self.connecting = asyncio.get_running_loop().create_task(self._connect(path))

    async def _connect(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: _Upstream(self), HOST,
                                                        self.upstream_port)
        except OSError:
            self.transport.close()
            return
        self.upstream = transport
        transport.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.upstream_port}\r\n"
                        f"Connection: close\r\n\r\n".encode("latin-1"))

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Listener(upstream_port), HOST, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.barerelay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(_serve(args.port, args.upstream_port))
        else:
            asyncio.run(_serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
