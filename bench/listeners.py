"""Load generator: N listeners, each reading one stream at a steady rate, like MPD playing.

Run as its own process (so the daemon's CPU and memory are its own):

    python -m bench.listeners --port 6602 --path /proxy/ID --count 1000 \
        --rate 20000 --duration 30

Each listener connects (with a fixed 256 KiB socket receive buffer, as a player
holds a bounded buffer), sends MPD's request headers, and then reads the body at
``--rate`` bytes per second: every ``--tick`` seconds it reads what it is owed.
The listeners join evenly over ``--ramp`` seconds and all stop ``--duration``
seconds after the last one joined, so all of them play together that long.
A *stall* is one read that waited more than ``--stall`` seconds for bytes
(the first byte included).  Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field

__all__ = ["ListenerResult", "run"]

MPD_HEADERS = {"User-Agent": "Music Player Daemon 0.23.12", "Icy-Metadata": "1"}
# Each listener's kernel receive buffer (the kernel doubles it).
RECEIVE_BUFFER = 256 * 1024


@dataclass
class ListenerResult:
    first_byte: float | None = None
    bytes: int = 0
    stalls: int = 0
    worst_wait: float = 0.0
    error: str | None = None
    waits: list[float] = field(default_factory=list)


async def _listener(
    host: str, port: int, path: str, rate: float, stop_after: float, tick: float,
    stall: float, start_delay: float, result: ListenerResult,
) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + stop_after
    await asyncio.sleep(start_delay)
    writer: asyncio.StreamWriter | None = None
    try:
        began = loop.time()
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
        sock = writer.get_extra_info("socket")
        if sock is not None and RECEIVE_BUFFER:
            # A player holds a bounded buffer (MPD: 512 KiB); left to autotuning,
            # a loopback socket read in gulps grows to megabytes, and the daemon
            # would be measured pushing ~100 KB/s into each "20 KB/s" listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in MPD_HEADERS.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status not in (200, 206):
            result.error = f"HTTP {status}"
            return
        first = await reader.read(1)
        result.first_byte = loop.time() - began
        if result.first_byte > stall:
            result.stalls += 1
        result.worst_wait = result.first_byte
        if not first:
            result.error = "empty body"
            return
        consumed = 1
        start = loop.time()
        end = until
        next_tick = start + tick
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            if now >= end:
                break
            next_tick += tick
            owed = int(rate * (now - start)) - consumed
            while owed > 0:
                asked = loop.time()
                data = await reader.read(owed)
                waited = loop.time() - asked
                if waited > result.worst_wait:
                    result.worst_wait = waited
                if waited > stall:
                    result.stalls += 1
                if not data:
                    result.error = f"body ended after {consumed} bytes"
                    return
                consumed += len(data)
                owed -= len(data)
        result.bytes = consumed
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = f"{exc.__class__.__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()


async def run(
    host: str, port: int, path: str, *, count: int, rate: float, duration: float,
    tick: float = 0.25, stall: float = 1.0, ramp: float = 0.0,
) -> dict[str, object]:
    results = [ListenerResult() for _ in range(count)]
    started = time.monotonic()
    async with asyncio.timeout(duration + ramp + 60):
        await asyncio.gather(*(
            # All stop together, ``duration`` after the last one joined: all of
            # them play together for ``duration`` seconds.
            _listener(host, port, path, rate, ramp + duration, tick, stall,
                      ramp * i / max(1, count), results[i])
            for i in range(count)
        ))
    firsts = sorted(r.first_byte for r in results if r.first_byte is not None)
    errors = [r.error for r in results if r.error]
    return {
        "listeners": count,
        "rate_bytes_per_s": rate,
        "duration_s": duration,
        "wall_s": time.monotonic() - started,
        "stalls": sum(r.stalls for r in results),
        "listeners_with_stalls": sum(1 for r in results if r.stalls),
        "worst_wait_s": max((r.worst_wait for r in results), default=0.0),
        "errors": len(errors),
        "first_errors": errors[:5],
        "first_byte_p50_s": statistics.median(firsts) if firsts else None,
        "first_byte_max_s": firsts[-1] if firsts else None,
        "bytes_read": sum(r.bytes for r in results),
        "short_listeners": sum(1 for r in results
                               if not r.error and r.bytes < rate * duration * 0.95),
    }


def raise_nofile() -> None:
    """Lift the soft open-files limit to the hard one (a listener is a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--tick", type=float, default=0.25)
    parser.add_argument("--stall", type=float, default=1.0)
    parser.add_argument("--ramp", type=float, default=0.0)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the load generator only talks to loopback")
    raise_nofile()
    report = asyncio.run(run(args.host, args.port, args.path, count=args.count,
                             rate=args.rate, duration=args.duration, tick=args.tick,
                             stall=args.stall, ramp=args.ramp))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
