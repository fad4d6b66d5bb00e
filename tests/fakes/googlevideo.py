"""A fake googlevideo upstream plus a watch page the real yt-dlp can resolve.

Everything runs on a real aiohttp server bound to 127.0.0.1 on an ephemeral
port.  The media endpoint keeps googlevideo's rules (see
docs/FACTS.md, "googlevideo stream URLs"):

* ``GET /videoplayback?id=&expire=&clen=&mime=&gen=&sig=`` — the URL must carry a
  valid HMAC signature, must not be expired or revoked, and the request must ask
  for one bounded byte range (``Range: bytes=a-b`` header or ``range=a-b`` query
  parameter) no longer than ``max_range``.  Success is ``206`` with
  ``Content-Range``; everything else is refused the way googlevideo refuses it.
* ``HEAD`` on ``/videoplayback`` is refused (``403``).
* ``GET /watch?v=<id>`` is an HTML page with
  ``<audio><source src="<fresh signed url>"></audio>``: yt-dlp's generic/html5
  extractor turns it into an info dict whose ``url`` is that signed URL.
* ``GET /redirect?to=<url>[&status=302]`` answers a redirect to ``to`` (any
  URL, any host): for checking that a client follows only the redirects it
  should.  See :meth:`FakeGooglevideo.redirect_url`.

Every request is recorded in :attr:`FakeGooglevideo.requests` and counted by
*kind* in :attr:`FakeGooglevideo.counts`.  Kinds:

``ok``, ``no_range``, ``open_ended``, ``bad_range``, ``too_large``,
``unsatisfiable``, ``bad_signature``, ``unknown_id``, ``revoked``, ``expired``,
``head``, ``method_not_allowed``, ``watch``, ``not_found``, ``fault_status``,
``redirect``.

Fault injection (:class:`Fault`, :meth:`FakeGooglevideo.add_fault`) only ever
touches a media request that passed every rule above.  A ``status`` fault
replaces the answer (recorded as kind ``fault_status``); the body faults
(``reset``, ``truncate``, ``stall``, ``revoke``) leave the request recorded as
``ok`` and additionally bump ``counts["fault_<kind>"]``.  A body cut short by a
fault counts in ``aborted_bodies``, never in ``completed_bodies``.
:meth:`FakeGooglevideo.set_watch_faults` queues error statuses for /watch.

Register with ``pytest_plugins = ["tests.fakes.googlevideo"]`` to get the
:func:`googlevideo` fixture.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import hmac
import html
import math
import re
import secrets
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from aiohttp import web

__all__ = ["FakeGooglevideo", "Fault", "RequestRecord", "Track", "googlevideo"]

HOST = "127.0.0.1"

# Kinds of answer from /videoplayback (plus "watch" and "not_found").
KIND_OK = "ok"
KIND_NO_RANGE = "no_range"
KIND_OPEN_ENDED = "open_ended"
KIND_BAD_RANGE = "bad_range"
KIND_TOO_LARGE = "too_large"
KIND_UNSATISFIABLE = "unsatisfiable"
KIND_BAD_SIGNATURE = "bad_signature"
KIND_UNKNOWN_ID = "unknown_id"
KIND_REVOKED = "revoked"
KIND_EXPIRED = "expired"
KIND_HEAD = "head"
KIND_METHOD_NOT_ALLOWED = "method_not_allowed"
KIND_WATCH = "watch"
KIND_NOT_FOUND = "not_found"
KIND_FAULT_STATUS = "fault_status"
KIND_REDIRECT = "redirect"

FAULT_STATUS = "status"
FAULT_RESET = "reset"
FAULT_STALL = "stall"
FAULT_TRUNCATE = "truncate"
FAULT_REVOKE = "revoke"
FAULT_KINDS = frozenset({FAULT_STATUS, FAULT_RESET, FAULT_STALL, FAULT_TRUNCATE, FAULT_REVOKE})
# Faults that cut the body short at ``at_byte`` (at most one fires per response).
_CUT_KINDS = frozenset({FAULT_RESET, FAULT_STALL, FAULT_TRUNCATE})
# Seconds between checks while waiting for bytes to leave or a client to go away.
_POLL = 0.005
# After the bytes before ``at_byte`` reached the client's kernel, wait this long
# before cutting, so a reading client has consumed them (aiohttp's client drops
# unread buffered bytes once the connection error is set).
_CUT_GRACE = 0.02

_RANGE_SPEC = re.compile(r"^(\d*)-(\d*)$")


@dataclass
class RequestRecord:
    """One request the fake answered (appended once its status is decided)."""

    method: str
    path: str
    query: dict[str, str]
    range_header: str | None
    status: int
    kind: str
    video_id: str | None
    # The client's port: requests with the same one came over one connection.
    client_port: int | None = None
    # The request's Cookie header, if any.
    cookie: str | None = None
    # The peer's address family (socket.AF_INET or socket.AF_INET6).
    family: int | None = None
    # When it was recorded (time.time()).
    at: float = field(default_factory=time.time)


@dataclass
class Track:
    """A piece of media the fake serves."""

    data: bytes
    title: str
    mime: str = "audio/webm"


@dataclass
class Fault:
    """An upstream failure to inject into media requests for one track.

    ``status``: answer ``status`` (plus ``Retry-After`` when set) instead of the
    media, whatever the range.  ``reset``/``truncate``/``stall``: serve the
    bytes before ``at_byte`` (headers promise the whole range), then abort the
    connection with a TCP RST / close it cleanly (body short of
    Content-Length) / stop sending for ``stall_seconds`` and then abort.
    ``revoke``: serve normally, but every URL issued so far stops working
    (403 ``revoked``) — as with :meth:`FakeGooglevideo.revoke`, done as the
    response starts, which cannot affect this already-checked request.

    The body kinds only fire on a response whose served range ``a..b``
    (inclusive) has ``a <= at_byte <= b``; otherwise they are neither fired nor
    consumed.  A fault fires (``times -= 1``, ``fired += 1``, logged) when the
    request is accepted, before its body is sent.
    """

    kind: str
    at_byte: int = 0
    status: int = 503
    retry_after: str | None = None
    stall_seconds: float = 60.0
    times: int = 1
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    @property
    def live(self) -> bool:
        return self.times > 0

    def covers(self, a: int, b: int) -> bool:
        return a <= self.at_byte <= b


@dataclass
class _FaultPlan:
    """What fired for one media request."""

    cut: Fault | None = None
    revokes: list[Fault] = field(default_factory=list)


def _peer_port(request: web.Request) -> int | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return peer[1] if peer else None


def _peer_family(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return int(sock.family) if sock is not None else None


def _unsent_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes in the kernel send queue not yet acknowledged by the peer (Linux
    ``SIOCOUTQ``); 0 where that cannot be asked."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class _RangeRefused(Exception):
    """A range the fake will not serve; carries the answer to give."""

    def __init__(self, status: int, kind: str) -> None:
        super().__init__(kind)
        self.status = status
        self.kind = kind


def _parse_range_spec(spec: str) -> tuple[int, int]:
    """Parse ``a-b`` (no unit) into ``(a, b)``; raise :class:`_RangeRefused`."""
    spec = spec.strip()
    if "," in spec:
        raise _RangeRefused(400, KIND_BAD_RANGE)
    m = _RANGE_SPEC.match(spec)
    if m is None:
        raise _RangeRefused(400, KIND_BAD_RANGE)
    first, last = m.group(1), m.group(2)
    if not first and not last:
        raise _RangeRefused(400, KIND_BAD_RANGE)
    if not first or not last:  # "a-" (open ended) or "-k" (suffix)
        raise _RangeRefused(403, KIND_OPEN_ENDED)
    a, b = int(first), int(last)
    if b < a:
        raise _RangeRefused(400, KIND_BAD_RANGE)
    return a, b


def _requested_range(request: web.Request) -> tuple[int, int]:
    """The byte range asked for, from the header or the ``range`` query parameter."""
    header = request.headers.get("Range")
    if header is not None:
        unit, sep, spec = header.strip().partition("=")
        if not sep or unit.strip().lower() != "bytes":
            raise _RangeRefused(400, KIND_BAD_RANGE)
        return _parse_range_spec(spec)
    query = request.query.get("range")
    if query is not None:
        return _parse_range_spec(query)
    raise _RangeRefused(403, KIND_NO_RANGE)


class FakeGooglevideo:
    """A loopback googlevideo look-alike with a yt-dlp-resolvable watch page."""

    def __init__(
        self,
        *,
        max_range: int = 1_048_576,
        url_ttl: float = 6 * 3600,
        write_size: int = 65536,
    ) -> None:
        self.max_range = max_range
        self.url_ttl = url_ttl
        self.write_size = write_size
        self.host = HOST
        #: Seconds the /watch handler sleeps before answering.
        self.watch_delay: float = 0.0
        #: When set, the watch page's signed URLs name this port of 127.0.0.1,
        #: not the fake's (googlevideo moved the stream to another edge).
        #: :meth:`listen_also` serves there too.
        self.media_port: int | None = None
        #: When set, media bodies are written at about this many bytes per second.
        self.throttle_bytes_per_sec: float | None = None
        #: The fake's notion of "now" for ``expire=`` (replace to time-travel).
        self.clock: Callable[[], float] = time.time
        self.requests: list[RequestRecord] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.watch_hits: collections.Counter[str] = collections.Counter()
        self.open_bodies = 0
        self.aborted_bodies = 0
        self.completed_bodies = 0
        self.tracks: dict[str, Track] = {}
        self._secret = secrets.token_bytes(32)
        self._generation: dict[str, int] = {}
        self._watch_status: dict[str, int] = {}
        self._watch_faults: dict[str, collections.deque[int]] = {}
        self._faults: dict[str, list[Fault]] = {}
        #: ``(video_id, kind, media offset or status)`` for every fault that
        #: fired, in order (``kind`` is the :class:`Fault` kind, or ``"watch"``
        #: for a :meth:`set_watch_faults` status).
        self.fault_log: list[tuple[str, str, int]] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._extra_sites: list[web.TCPSite] = []
        self._handlers: set[asyncio.Task[object]] = set()
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve on 127.0.0.1, on an ephemeral port."""
        if self._runner is not None:
            raise RuntimeError("FakeGooglevideo already started")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # close() cancels in-flight handlers itself; the short shutdown timeout
        # is only a backstop so that teardown never waits aiohttp's default 60 s.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self._port = int(runner.addresses[0][1])
        self._site = site
        self._runner = runner

    async def go_offline(self) -> None:
        """The network goes down: new connections are refused and open ones are
        cut (state, tracks and the port are kept for ``go_online``)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for task in [t for t in self._handlers if not t.done()]:
            task.cancel()
        assert self._runner is not None and self._runner.server is not None
        for handler in list(self._runner.server.connections):
            handler.force_close()
            if handler.transport is not None:
                handler.transport.abort()

    async def go_online(self) -> None:
        """Serve again on the same port."""
        assert self._runner is not None and self._site is None
        site = web.TCPSite(self._runner, HOST, self.port)
        await site.start()
        self._site = site

    async def listen_also(self, port: int) -> None:
        """Serve on ``port`` of 127.0.0.1 too (another edge of the same
        googlevideo: the same tracks, signatures and records); ``go_offline``
        leaves it serving."""
        assert self._runner is not None
        site = web.TCPSite(self._runner, HOST, port)
        await site.start()
        self._extra_sites.append(site)

    async def close(self) -> None:
        """Stop serving; bodies still being written are cut off."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._extra_sites.clear()  # the runner's cleanup stops them
        # Cut off bodies still being written (and /watch answers still
        # sleeping) so that aiohttp's graceful shutdown has nothing to wait for.
        pending = [t for t in self._handlers if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        await runner.cleanup()
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> FakeGooglevideo:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeGooglevideo not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (valid after :meth:`start`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def watch_url_template(self) -> str:
        """Watch page URL with a literal ``{id}`` placeholder left in."""
        return f"{self.base_url}/watch?v={{id}}"

    def watch_url(self, video_id: str) -> str:
        return self.watch_url_template.replace("{id}", video_id)

    def redirect_url(self, target: str, status: int = 302) -> str:
        """A URL on this fake that redirects (``status``) to ``target``."""
        return f"{self.base_url}/redirect?{urlencode({'to': target, 'status': status})}"

    # ------------------------------------------------------------------ content

    def add_track(
        self, video_id: str, data: bytes, *, title: str, mime: str = "audio/webm"
    ) -> None:
        """Serve ``data`` as ``video_id`` (replacing any earlier track of that id)."""
        self.tracks[video_id] = Track(data=data, title=title, mime=mime)
        self._generation.setdefault(video_id, 0)

    def _signature(
        self, video_id: str, expire: int, clen: int, gen: int,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        msg = f"{video_id}\n{expire}\n{clen}\n{gen}"
        if extra:
            msg += "".join(f"\n{k}={extra[k]}" for k in sorted(extra))
        return hmac.new(self._secret, msg.encode(), hashlib.sha256).hexdigest()

    def sign(
        self, video_id: str, *, ttl: float | None = None, extra: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> str:
        """A fresh signed stream URL for ``video_id``, valid for ``ttl`` seconds.

        ``extra`` parameters go into the query and are covered by the signature
        (their names listed in ``sparams=``, as googlevideo does): changing or
        dropping one makes the URL a ``bad_signature``.  ``port``: the URL
        names that port of 127.0.0.1 (the signature does not cover it)."""
        track = self.tracks[video_id]
        ttl = self.url_ttl if ttl is None else ttl
        expire = math.floor(self.clock() + ttl)
        clen = len(track.data)
        gen = self._generation[video_id]
        params = {
            "id": video_id,
            "expire": str(expire),
            "clen": str(clen),
            "mime": track.mime,
            "gen": str(gen),
        }
        if extra:
            clash = (set(params) | {"sig", "sparams", "range"}) & set(extra)
            if clash or any("," in k for k in extra):
                raise ValueError(f"extra parameters may not be named {sorted(clash)}")
            params.update(extra)
            params["sparams"] = ",".join(sorted(extra))
        params["sig"] = self._signature(video_id, expire, clen, gen, extra)
        base = self.base_url if port is None else f"http://{self.host}:{port}"
        return f"{base}/videoplayback?{urlencode(params)}"

    def revoke(self, video_id: str) -> None:
        """Every URL issued so far for ``video_id`` now answers 403 "revoked"."""
        self._generation[video_id] = self._generation.get(video_id, 0) + 1

    def set_watch_status(self, video_id: str, status: int | None) -> None:
        """Make /watch for ``video_id`` answer ``status``; ``None`` restores."""
        if status is None:
            self._watch_status.pop(video_id, None)
        else:
            self._watch_status[video_id] = status

    # ------------------------------------------------------------------ faults

    def add_fault(self, video_id: str, fault: Fault) -> Fault:
        """Inject ``fault`` into media requests for ``video_id``; faults are
        considered in the order added.  Returns ``fault`` (watch its ``fired``)."""
        self._faults.setdefault(video_id, []).append(fault)
        return fault

    def clear_faults(self, video_id: str | None = None) -> None:
        """Drop the media faults and queued /watch faults of ``video_id``
        (of every id when ``None``).  ``fault_log`` is kept."""
        if video_id is None:
            self._faults.clear()
            self._watch_faults.clear()
        else:
            self._faults.pop(video_id, None)
            self._watch_faults.pop(video_id, None)

    def set_watch_faults(self, video_id: str, statuses: list[int]) -> None:
        """The next ``len(statuses)`` /watch hits for ``video_id`` answer these
        statuses in order, then /watch is normal again (replaces any queue not
        yet used up; takes precedence over, and leaves alone, set_watch_status)."""
        if statuses:
            self._watch_faults[video_id] = collections.deque(statuses)
        else:
            self._watch_faults.pop(video_id, None)

    def _fire(self, video_id: str, fault: Fault, value: int) -> None:
        fault.times -= 1
        fault.fired += 1
        self.fault_log.append((video_id, fault.kind, value))

    def _claim_status_fault(self, video_id: str) -> Fault | None:
        for fault in self._faults.get(video_id, ()):
            if fault.live and fault.kind == FAULT_STATUS:
                self._fire(video_id, fault, fault.status)
                return fault
        return None

    def _claim_body_faults(self, video_id: str, a: int, b: int) -> _FaultPlan:
        plan = _FaultPlan()
        for fault in self._faults.get(video_id, ()):
            if not fault.live or not fault.covers(a, b):
                continue
            if fault.kind in _CUT_KINDS and plan.cut is None:
                plan.cut = fault
            elif fault.kind == FAULT_REVOKE:
                plan.revokes.append(fault)
            else:
                continue
            self._fire(video_id, fault, fault.at_byte)
            self.counts[f"fault_{fault.kind}"] += 1
        return plan

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        """Wake waiters whose predicate now holds."""
        still: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        for pred, fut in self._waiters:
            if fut.done():
                continue
            if pred():
                fut.set_result(None)
            else:
                still.append((pred, fut))
        self._waiters = still

    # The ``timeout`` parameters are part of the agreed API (ASYNC109 prefers
    # asyncio.timeout at the call site; a bounded wait is the point here).
    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Wait (event-driven) until ``predicate()`` holds; re-checked whenever a
        request is recorded or a media body opens or closes.  Raises
        ``TimeoutError`` after ``timeout`` seconds."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if not fut.done():
                fut.cancel()

    async def wait_no_open_bodies(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until no media body is being written (``open_bodies == 0``)."""
        await self.wait_for(lambda: self.open_bodies == 0, timeout)

    async def wait_open_bodies(self, n: int, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until at least ``n`` media bodies are being written."""
        await self.wait_for(lambda: self.open_bodies >= n, timeout)

    # ------------------------------------------------------------------ handlers

    def _record(self, request: web.Request, status: int, kind: str, video_id: str | None) -> None:
        self.requests.append(
            RequestRecord(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                range_header=request.headers.get("Range"),
                status=status,
                kind=kind,
                video_id=video_id,
                client_port=_peer_port(request),
                cookie=request.headers.get("Cookie"),
                family=_peer_family(request),
            )
        )
        self.counts[kind] += 1
        self._notify()

    def _refuse(
        self, request: web.Request, status: int, kind: str, video_id: str | None
    ) -> web.Response:
        self._record(request, status, kind, video_id)
        return web.Response(status=status, text=f"{status} {kind}\n")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - aiohttp always runs handlers in a task
            return await self._route(request)
        self._handlers.add(task)
        try:
            return await self._route(request)
        finally:
            self._handlers.discard(task)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/videoplayback":
            return await self._videoplayback(request)
        if request.path == "/watch" and request.method in ("GET", "HEAD"):
            return await self._watch(request)
        if request.path == "/redirect" and "to" in request.query:
            return self._redirect(request)
        return self._refuse(request, 404, KIND_NOT_FOUND, request.query.get("v"))

    def _redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        self._record(request, status, KIND_REDIRECT, None)
        return web.Response(status=status, headers={"Location": request.query["to"]})

    async def _watch(self, request: web.Request) -> web.Response:
        video_id = request.query.get("v")
        queued: int | None = None
        if video_id is not None:
            self.watch_hits[video_id] += 1
            pending = self._watch_faults.get(video_id)
            if pending:
                queued = pending.popleft()
                if not pending:
                    del self._watch_faults[video_id]
                self.fault_log.append((video_id, "watch", queued))
        if self.watch_delay > 0:
            await asyncio.sleep(self.watch_delay)
        forced = self._watch_status.get(video_id) if video_id is not None else None
        if queued is not None:
            forced = queued
        track = self.tracks.get(video_id) if video_id is not None else None
        if forced is not None or track is None or video_id is None:
            status = forced if forced is not None else 404
            self._record(request, status, KIND_WATCH, video_id)
            reason = "Error" if status >= 400 else "Status"
            body = (
                f"<html><head><title>{status} {reason}</title></head>"
                f"<body><h1>{status} {reason}</h1></body></html>"
            )
            return web.Response(status=status, text=body, content_type="text/html")
        src = html.escape(self.sign(video_id, port=self.media_port), quote=True)
        page = (
            f"<html><head><title>{html.escape(track.title)}</title></head>"
            f'<body><audio controls><source src="{src}" '
            f'type="{html.escape(track.mime, quote=True)}"></audio></body></html>'
        )
        self._record(request, 200, KIND_WATCH, video_id)
        return web.Response(status=200, text=page, content_type="text/html")

    def _check_url(self, request: web.Request) -> tuple[int, str] | None:
        """Check id/signature/generation/expiry; the refusal to give, if any."""
        q = request.query
        video_id = q.get("id")
        if video_id is None or video_id not in self.tracks:
            return 403, KIND_UNKNOWN_ID
        try:
            expire = int(q["expire"])
            clen = int(q["clen"])
            gen = int(q["gen"])
            sig = q["sig"]
            sparams = q.get("sparams")
            extra = {k: q[k] for k in sparams.split(",")} if sparams else None
        except (KeyError, ValueError):
            return 403, KIND_BAD_SIGNATURE
        if not hmac.compare_digest(sig, self._signature(video_id, expire, clen, gen, extra)):
            return 403, KIND_BAD_SIGNATURE
        if gen < self._generation[video_id]:
            return 403, KIND_REVOKED
        if self.clock() >= expire:
            return 403, KIND_EXPIRED
        return None

    async def _videoplayback(self, request: web.Request) -> web.StreamResponse:
        video_id = request.query.get("id")
        if request.method == "HEAD":
            return self._refuse(request, 403, KIND_HEAD, video_id)
        if request.method != "GET":
            return self._refuse(request, 405, KIND_METHOD_NOT_ALLOWED, video_id)
        refusal = self._check_url(request)
        if refusal is not None:
            return self._refuse(request, *refusal, video_id)
        assert video_id is not None
        track = self.tracks[video_id]
        total = len(track.data)
        try:
            a, b = _requested_range(request)
        except _RangeRefused as r:
            return self._refuse(request, r.status, r.kind, video_id)
        if b - a + 1 > self.max_range:
            return self._refuse(request, 403, KIND_TOO_LARGE, video_id)
        if a >= total:
            self._record(request, 416, KIND_UNSATISFIABLE, video_id)
            return web.Response(
                status=416,
                text=f"416 {KIND_UNSATISFIABLE}\n",
                headers={"Content-Range": f"bytes */{total}"},
            )
        b = min(b, total - 1)
        fault = self._claim_status_fault(video_id)
        if fault is not None:
            self._record(request, fault.status, KIND_FAULT_STATUS, video_id)
            headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            return web.Response(
                status=fault.status, text=f"{fault.status} {KIND_FAULT_STATUS}\n", headers=headers
            )
        plan = self._claim_body_faults(video_id, a, b)
        for _ in plan.revokes:
            # The request was checked already, so this answer is still served.
            self.revoke(video_id)
        return await self._send_body(request, track, a, b, plan.cut)

    async def _wait_flushed(self, request: web.Request, deadline: float | None = None) -> None:
        """Wait until everything written so far was acknowledged by the client's
        kernel (or ``deadline``, loop time, passes); raise ``ConnectionResetError``
        if the client goes away meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("client went away")
            if transport.get_write_buffer_size() == 0 and _unsent_bytes(transport) == 0:
                return
            if deadline is not None and loop.time() >= deadline:
                return
            await asyncio.sleep(_POLL)

    async def _cut(self, request: web.Request, fault: Fault) -> None:
        """End a body at the fault's ``at_byte`` (everything before it was written)."""
        loop = asyncio.get_running_loop()
        if fault.kind == FAULT_STALL:
            deadline = loop.time() + fault.stall_seconds
            await self._wait_flushed(request, deadline)
            while (remaining := deadline - loop.time()) > 0:
                if _gone(request):
                    raise ConnectionResetError("client went away")
                await asyncio.sleep(min(remaining, 4 * _POLL))
        else:
            await self._wait_flushed(request)
            await asyncio.sleep(_CUT_GRACE)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        if fault.kind == FAULT_TRUNCATE:
            transport.close()  # FIN: a clean end, short of Content-Length
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: closing sends a TCP RST instead of a FIN.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _send_body(
        self, request: web.Request, track: Track, a: int, b: int, cut: Fault | None = None
    ) -> web.StreamResponse:
        total = len(track.data)
        resp = web.StreamResponse(
            status=206,
            headers={
                "Content-Type": track.mime,
                "Content-Range": f"bytes {a}-{b}/{total}",
                "Accept-Ranges": "bytes",
            },
        )
        resp.content_length = b - a + 1
        self._record(request, 206, KIND_OK, request.query.get("id"))
        self.open_bodies += 1
        self._notify()
        try:
            await resp.prepare(request)
            pos = a
            end = b + 1 if cut is None else cut.at_byte
            while pos < end:
                piece = track.data[pos : min(pos + self.write_size, end)]
                await resp.write(piece)  # awaits drain
                pos += len(piece)
                rate = self.throttle_bytes_per_sec
                if rate is not None and rate > 0 and pos < end:
                    await asyncio.sleep(len(piece) / rate)
            if cut is None:
                await resp.write_eof()
                self.completed_bodies += 1
            else:
                await resp.write(b"")  # sends the headers if no body byte went yet
                await self._cut(request, cut)
                # aiohttp's own write_eof() afterwards meets a closed transport:
                # a ConnectionError it handles quietly, as for a vanished client.
                self.aborted_bodies += 1
        except ConnectionError:
            # The client went away (aiohttp's ClientConnectionResetError is a
            # ConnectionResetError).  Returning, not raising, lets aiohttp drop
            # the connection quietly instead of logging an "unhandled" error.
            self.aborted_bodies += 1
        except asyncio.CancelledError:
            # Server shutdown (or handler_cancellation) cut the body off.
            self.aborted_bodies += 1
            raise
        finally:
            self.open_bodies -= 1
            self._notify()
        return resp


@pytest.fixture
async def googlevideo() -> AsyncIterator[FakeGooglevideo]:
    """A started :class:`FakeGooglevideo`, closed after the test."""
    fake = FakeGooglevideo()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
