"""A lean HTTP/1.1 client for a stream's first range: one short GET over a
kept connection.

A stream's first range (upstream.FIRST_RANGE, 32 KiB) is the one a listener
waits for: MPD starts a track or seeks, and nothing plays until it comes.
aiohttp's client spends ~0.2 ms of CPU per request (request and response
objects, connector, timers) where this one writes a request line and a few
headers and reads a head and a known number of bytes: about half the time to
the first byte on a fast upstream.  The rest of a stream, read as the
listener takes it, stays with aiohttp.

It does only what a first range needs: plain HTTP or TLS, no proxy (those go
through aiohttp), a body delimited by Content-Length (anything else is
``Unsupported``, and the caller asks aiohttp instead), read as it comes.
Redirects are the caller's.  Connections are kept per scheme, host and port
for ``IDLE_TIMEOUT`` seconds or so, at most ``IDLE_PER_HOST`` each.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "ConnectFailed",
    "Disconnected",
    "FirstRanges",
    "ShortResponse",
    "Unsupported",
]

# Seconds a kept connection waits for its next request (aiohttp keeps its own
# for 15 s; here it is closed after one to two times this), and how many wait
# per host: enough for players starting together on one host to find one
# each next time, few enough that idle sockets stay a handful.
IDLE_TIMEOUT = 15.0
IDLE_PER_HOST = 32
# Bytes of a response head before it is refused as not HTTP.
_MAX_HEAD = 64 * 1024
# Bytes buffered from one connection before it is no longer read.
_MAX_BUFFER = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A request target, host or header name: visible ASCII only; a header value
# may also hold spaces and tabs.
_NOT_VISIBLE = re.compile(r"[^\x21-\x7e]")
_NOT_TEXT = re.compile(r"[^\t\x20-\x7e]")

_Key = tuple[str, str, int]
# Request heads kept made (one per stream URL and its headers).
_REQUESTS_KEPT = 256


class Unsupported(Exception):
    """A request or response this client does not handle; aiohttp will."""


class ConnectFailed(ConnectionError):
    """No connection to upstream could be made."""


class Disconnected(ConnectionError):
    """Upstream closed or broke the connection before the response was whole."""


class _Body:
    """A response's body as it comes, read the way aiohttp's stream is read."""

    def __init__(self, conn: _Connection, length: int) -> None:
        self._conn = conn
        self.remaining = length

    def read_nowait(self) -> bytes:
        """What has come of the body so far and not been read (b"" if nothing)."""
        buffer = self._conn.buffer
        size = min(len(buffer), self.remaining)
        if not size:
            return b""
        data = bytes(buffer[:size])
        del buffer[:size]
        self.remaining -= size
        return data

    async def readany(self) -> bytes:
        """The next bytes of the body, waiting for them; b"" at its end.
        Raises ``Disconnected`` if upstream stops sending before the end (the
        caller times the wait)."""
        if self.remaining and not self._conn.buffer:
            await self._conn.fill(1, None)
        return self.read_nowait()

    def is_eof(self) -> bool:
        return not self.remaining


class ShortResponse:
    """A response to a short range: its head, and its body as it comes (at
    most what was asked for).

    It has the parts of ``aiohttp.ClientResponse`` a range needs: ``status``,
    ``headers``, ``content_length``, ``content`` (read_nowait/readany/is_eof),
    ``connection`` (None: no socket to tune), ``closed``, ``release()`` (the
    connection is kept if the whole body came) and ``close()``.
    """

    connection = None

    def __init__(self, status: int, headers: CIMultiDictProxy[str], length: int,
                 owner: FirstRanges, key: _Key, conn: _Connection) -> None:
        self.status = status
        self.headers = headers
        self.content = _Body(conn, length)
        self._owner = owner
        self._key = key
        self._conn: _Connection | None = conn

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def release(self) -> None:
        """Done: the connection is kept for the next request if all of the
        body has come (what was not read is dropped), else closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        body = self.content
        if body.remaining and len(conn.buffer) >= body.remaining:
            del conn.buffer[:body.remaining]
            body.remaining = 0
        if body.remaining:
            conn.close()
        else:
            self._owner._keep(self._key, conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Connection(asyncio.Protocol):
    """One upstream connection: bytes in a buffer, a waiter told when enough came."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.lost: BaseException | None = None
        self.keepable = True
        self.idle_since = 0.0  # loop time it was last kept
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0  # buffered bytes that wake the waiter; 0: a whole head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self._waiter is not None and self._enough():
            self._wake(None)
        if len(self.buffer) > _MAX_BUFFER and self.transport is not None:
            # More than a short range and its head: a server that ignored the
            # Range (or sends what nobody asked for); never kept, and what it
            # sends meanwhile waits in the kernel, not here.
            self.keepable = False
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._lose(Disconnected("upstream closed the connection"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(Disconnected(f"upstream connection lost: {exc}") if exc else
                   Disconnected("upstream closed the connection"))

    def _lose(self, exc: BaseException) -> None:
        self.keepable = False
        if self.lost is None:
            self.lost = exc
        self._wake(exc)

    def _enough(self) -> bool:
        if self._want:
            return len(self.buffer) >= self._want
        return b"\r\n\r\n" in self.buffer or len(self.buffer) > _MAX_HEAD

    def _wake(self, exc: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def fill(self, want: int, deadline: float | None) -> None:
        """Wait until ``want`` bytes are buffered (0: until a whole head is),
        failing with TimeoutError at ``deadline`` (loop time; None: the
        caller times the wait)."""
        self._want = want
        if self._enough():
            return
        if self.lost is not None:
            raise self.lost
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if deadline is None else loop.call_at(
            deadline, self._wake, TimeoutError("upstream sent nothing more in time"))
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.keepable = False
        if self.transport is not None:
            self.transport.close()


class FirstRanges:
    """Short GETs over kept HTTP/1.1 connections (see the module's docstring)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._idle: dict[_Key, list[_Connection]] = {}
        self._requests: dict[tuple[object, ...], tuple[_Key, bytes]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def close(self) -> None:
        """Close every kept connection."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def kept(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    async def get(self, url: str, headers: Mapping[str, str], first: int, last: int, *,
                  connect_timeout: float, read_timeout: float) -> ShortResponse:
        """GET bytes ``first..last`` of ``url``: the response once its head has
        come; its body (at most that many bytes) is read from it as it comes.

        Raises ``Unsupported`` (nothing was sent, or what came is not for this
        client: ask aiohttp), ``ConnectFailed``, ``Disconnected`` or TimeoutError.
        """
        key, head = self._request(url, headers)
        request = head + b"Range: bytes=%d-%d\r\n\r\n" % (first, last)
        max_body = last - first + 1
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.lost is not None or conn.buffer:
                conn.close()  # closed upstream, or it sent what nobody asked for
                continue
            try:
                return await self._exchange(key, conn, request, max_body, read_timeout)
            except Disconnected:
                # A kept connection upstream had closed meanwhile: a new one.
                if conn.buffer:
                    raise
        conn = await self._connect(key, connect_timeout)
        return await self._exchange(key, conn, request, max_body, read_timeout)

    def _request(self, url: str, headers: Mapping[str, str]) -> tuple[_Key, bytes]:
        """Where to send a request for ``url`` and its head up to the Range line:
        the same few for every first range of a track, so made once each."""
        cache_key = (url, *headers.items())
        made = self._requests.get(cache_key)
        if made is None:
            made = _request(url, headers)
            if len(self._requests) >= _REQUESTS_KEPT:
                self._requests.clear()
            self._requests[cache_key] = made
        return made

    async def _connect(self, key: _Key, within: float) -> _Connection:
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(within):
                _, conn = await asyncio.get_running_loop().create_connection(
                    _Connection, host, port, ssl=context)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    async def _exchange(self, key: _Key, conn: _Connection, request: bytes, max_body: int,
                        within: float) -> ShortResponse:
        assert conn.transport is not None
        done = False
        try:
            conn.transport.write(request)
            await conn.fill(0, asyncio.get_running_loop().time() + within)
            status, fields, split = _head(conn.buffer)
            del conn.buffer[:split]
            length = _body_length(status, fields)
            take = min(length, max_body)
            if take < length or _closes(fields):
                conn.keepable = False
            done = True
            # The body as it comes: a busy upstream sends 32 KiB in pieces,
            # and the listener can have the first while the rest is on its way.
            return ShortResponse(status, fields, take, self, key, conn)
        finally:
            if not done:
                conn.close()

    def _keep(self, key: _Key, conn: _Connection) -> None:
        conns = self._idle.get(key, ())
        if not conn.keepable or conn.lost is not None or len(conns) >= IDLE_PER_HOST:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(key, []).append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(IDLE_TIMEOUT, self._expire)

    def _expire(self) -> None:
        """Close the connections kept for IDLE_TIMEOUT or more (one timer for
        all of them, not one per request: each is closed within twice that)."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, conns in list(self._idle.items()):
            for conn in [c for c in conns if now - c.idle_since >= IDLE_TIMEOUT]:
                conns.remove(conn)
                conn.close()
            if not conns:
                del self._idle[key]
        if self._idle:
            self._sweep = loop.call_later(IDLE_TIMEOUT, self._expire)


def _request(url: str, headers: Mapping[str, str]) -> tuple[_Key, bytes]:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        raise Unsupported(f"not a URL this client fetches: {scheme}://{host}")
    port = parts.port or _DEFAULT_PORTS[scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = (f"[{host}]" if ":" in host else host) + (
        f":{parts.port}" if parts.port else "")
    # What aiohttp would quote or refuse (spaces, controls, non-ASCII) is left to it.
    if _NOT_VISIBLE.search(target) or _NOT_VISIBLE.search(authority) or any(
            _NOT_VISIBLE.search(name) or ":" in name or _NOT_TEXT.search(value)
            for name, value in headers.items()):
        raise Unsupported("the request needs quoting")
    if any(name.lower() == "range" for name in headers):
        raise Unsupported("the range is the client's to write")
    lines = [f"GET {target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return (scheme, host, port), ("\r\n".join(lines) + "\r\n").encode("ascii")


def _head(buffer: bytearray) -> tuple[int, CIMultiDictProxy[str], int]:
    """The status, headers and length of the response head at the start of ``buffer``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        raise Unsupported("upstream's response head is too long")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise Unsupported(f"not an HTTP/1 response: {lines[0][:40]!r}")
    fields: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise Unsupported(f"a malformed response header: {line[:40]!r}")
        fields.add(name, value.strip(" \t"))
    if version == "HTTP/1.0" and "keep-alive" not in fields.get("Connection", "").lower():
        fields.add("Connection", "close")
    return int(code), CIMultiDictProxy(fields), end + 4


def _body_length(status: int, fields: CIMultiDictProxy[str]) -> int:
    if status < 200 or status in (204, 304):
        if status < 200:
            raise Unsupported(f"an interim response ({status})")
        return 0
    if "Transfer-Encoding" in fields:
        raise Unsupported("a body without a Content-Length")
    lengths = set(fields.getall("Content-Length", []))
    if len(lengths) != 1 or not (length := lengths.pop()).isdigit():
        raise Unsupported("a body without one Content-Length")
    return int(length)


def _closes(fields: CIMultiDictProxy[str]) -> bool:
    return "close" in fields.get("Connection", "").lower()
