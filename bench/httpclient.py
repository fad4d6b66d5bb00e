"""A minimal blocking HTTP/1.1 client for the benchmarks.

aiohttp's client would be the slowest party in a throughput run: this one reads
straight from the socket into one reused buffer, so the figures measure the
server, not the client.  One request per connection, as MPD does.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

__all__ = ["Fetched", "fetch", "parse_head"]

_BUF = 1 << 20


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body_bytes: int
    ttfb: float  # seconds from connect() to the first body byte (or the end of headers)
    elapsed: float  # seconds from connect() to the last byte read
    digest: bytes | None = None


def fetch(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    max_body: int | None = None,
    first_byte_only: bool = False,
    hasher: object | None = None,
    timeout: float = 60.0,
) -> Fetched:
    """GET ``path``; read the body (all of it, ``max_body`` bytes, or only the first bytes).

    ``hasher`` (e.g. ``hashlib.sha256()``) is fed every body byte when given.
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    buf = bytearray(_BUF)
    view = memoryview(buf)
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        head = bytearray()
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(buf)
            if n == 0:
                raise ConnectionError(f"{host}:{port}{path}: closed before the headers")
            head += view[:n]
        split = head.index(b"\r\n\r\n") + 4
        rest = bytes(head[split:])
        status, parsed = parse_head(bytes(head[:split]))
        length = int(parsed["content-length"]) if "content-length" in parsed else None
        chunked = parsed.get("transfer-encoding", "").lower() == "chunked"
        want = length if length is not None else (max_body if max_body is not None else -1)
        if max_body is not None and want > max_body:
            want = max_body
        got = len(rest)
        ttfb = time.perf_counter() - started
        if got == 0 and want != 0 and not chunked:
            n = sock.recv_into(buf)
            ttfb = time.perf_counter() - started
            if hasher is not None:
                hasher.update(view[:n])  # type: ignore[attr-defined]
            got = n
            if n == 0:
                want = 0
        elif hasher is not None and rest:
            hasher.update(rest[: want if want >= 0 else None])  # type: ignore[attr-defined]
        if first_byte_only or chunked:
            # Chunked bodies are only ever measured to the first byte here.
            return Fetched(status, parsed, got, ttfb, time.perf_counter() - started)
        while want < 0 or got < want:
            n = sock.recv_into(buf)
            if n == 0:
                break
            if hasher is not None:
                take = n if want < 0 else min(n, want - got)
                hasher.update(view[:take])  # type: ignore[attr-defined]
            got += n
        elapsed = time.perf_counter() - started
    if want >= 0:
        got = min(got, want)
    digest = hasher.digest() if hasher is not None else None  # type: ignore[attr-defined]
    return Fetched(status, parsed, got, ttfb, elapsed, digest)


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """The status and the (lower-cased) headers of a response head, without its blank line."""
    text = raw.decode("latin-1")
    first, *rest = text.split("\r\n")
    status = int(first.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in rest:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return status, headers
