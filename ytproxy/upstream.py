"""Fetching a stream's bytes from upstream in bounded ranges.

googlevideo refuses requests with no ``Range`` or an open-ended one, and
throttles ranges much larger than ~1 MB, so every request here names both
ends of a range no longer than ``upstream.chunk_size``.  HEAD is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import logging
import re
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from ytproxy.aiohttp_private import (
    close_when_done,
    read_size_settable,
    set_read_limit,
    set_tls_read_buffer,
)
from ytproxy.config import BreakerConfig, RetryConfig, UpstreamConfig
from ytproxy.errors import (
    ResolverUnavailable,
    UpstreamFailed,
    UpstreamGone,
    UpstreamHostNotAllowed,
    UpstreamUnavailable,
    UpstreamUnreachable,
    YtproxyError,
)
from ytproxy.holds import Held, Holds
from ytproxy.models import StreamInfo, url_param
from ytproxy.resilience import (
    BreakerOpen,
    CircuitBreaker,
    RetryGap,
    parse_retry_after,
)

__all__ = [
    "MAX_CLIENTS_PER_GAP",
    "FileChanged",
    "RangeStream",
    "Refresh",
    "UpstreamFetcher",
    "UpstreamRefused",
    "address_family",
    "host_allowed",
    "probe_size",
    "upstream_connector",
]

log = logging.getLogger(__name__)

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_MAX_REDIRECTS = 5
# Stream hosts remembered with the proxy the environment names for them.
_PROXY_CACHE_HOSTS = 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Request headers yt-dlp hands us that would change what upstream sends back.
_DROP_HEADERS = {"range", "accept-encoding", "host", "content-length"}


# Bytes of an upstream body aiohttp buffers per open response before it stops
# reading the socket: twice this, plus what the last read brought in.
READ_BUFSIZE = 4 * 1024
# A slow listener's stream reads as much as the listener's socket has room for
# (RangeStream.room), from PACED_READ up to this, and nothing while that socket
# drains (RangeStream.hold): each piece goes straight into the kernel, so few
# big pieces (less CPU than many small ones) leave nothing waiting here.
ROOM_READ = 128 * 1024
# What one read from an upstream socket may bring in while the stream is paced
# (see RangeStream.pace); asyncio reads up to 256 KiB at a time, which is right
# for a listener that keeps up and a waste of memory for one that takes 20 KB/s.
# Smaller costs CPU (more reads per second of audio), larger costs memory.
PACED_READ = 8 * 1024
# The same before the listener's socket was first full (RangeStream.filled):
# a player's first gulp (MPD: 512 KiB plus socket buffers) in reads this big,
# not in a hundred small ones (a thousand players joining at once kept a core
# busy with those); then the pieces left over here are PACED_READ.
START_READ = 32 * 1024
# A stream's first range is at most this long: it comes whole with the response
# headers (aiohttp hands its connection back to the pool at once), so a
# listener who leaves at once (MPD seeks by reconnecting) leaves a connection
# that can be reused rather than one that must be closed.
FIRST_RANGE = 32 * 1024
# After it, this pause (seconds) lets such a listener go before the next range
# is asked for on its behalf; it is paid once per stream, and covered many
# times over by the first range already sent.
SECOND_RANGE_PAUSE = 0.005
# Seconds a short range left early may take to come whole (UpstreamFetcher.finish).
DRAIN_TIMEOUT = 2.0
# Ask for the next range when the rest of this one would be relayed within this
# many seconds at the pace the listener has taken it so far: in time to hide the
# request's latency, and a slow listener keeps one upstream connection (and one
# buffer) open most of the time, not two.
PREFETCH_LEAD = 4.0
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



# Player clients a gap may go through when URLs keep being refused (the first
# one's, then others'): some clients' URLs serve a prefix and then 403 for good.
MAX_CLIENTS_PER_GAP = 3
# A 403 this soon after a format's available_at is still its not-yet (clocks).
AVAILABLE_GRACE = 2.0


class FileChanged(UpstreamFailed):
    """A URL serves a file of another size than the stream's: another format,
    language or encode.  Resuming from it would splice two files together."""

    def __init__(self, total: int, expected: int, host: str) -> None:
        super().__init__(f"upstream {host} now serves a file of {total} bytes, not the "
                         f"{expected} bytes of this stream")
        self.total = total
        self.expected = expected


def upstream_connector(family: socket.AddressFamily = socket.AF_UNSPEC) -> aiohttp.TCPConnector:
    """The one place the upstream connection pool is tuned: no limit on
    connections (streams are capped by limits.max_streams), idle connections
    kept 15 s for the next range or stream (aiohttp's default; googlevideo
    closes idle ones after about a minute), host names cached 5 minutes."""
    return aiohttp.TCPConnector(limit=0, keepalive_timeout=15.0, ttl_dns_cache=300,
                                family=family)


def address_family(url: str) -> socket.AddressFamily | None:
    """The address family a googlevideo URL must be fetched over: the one of
    the address it was made for (``ip=``), or None when it names none."""
    value = url_param(url, "ip")
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _check_family(host: str, family: socket.AddressFamily) -> None:
    """Refuse (as a connection failure) a host that is an address of the other family."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: resolved for that family only
    if (address.version == 6) != (family == socket.AF_INET6):
        raise ConnectionError(f"{host} cannot be reached over "
                              f"{'IPv6' if family == socket.AF_INET6 else 'IPv4'}, "
                              "the address family the URL was made for (ip=)")


class UpstreamRefused(UpstreamFailed):
    """Upstream answered with an error status; 403/410 usually mean the URL expired."""

    def __init__(self, status: int, host: str, retry_after: float | None = None) -> None:
        super().__init__(f"upstream {host} answered HTTP {status}")
        self.status = status
        self.host = host
        self.retry_after = retry_after


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower()
        if fnmatch.fnmatchcase(host, pattern):
            return True
        # "*.googlevideo.com" also allows the bare domain.
        if pattern.startswith("*.") and host == pattern[2:]:
            return True
    return False


@dataclass
class OpenRange:
    """An upstream response whose body holds bytes ``start..end`` of a ``total``-byte stream."""

    response: aiohttp.ClientResponse
    start: int
    end: int
    total: int | None
    content_type: str | None
    host: str
    # Its kernel receive buffer was lowered for a slow listener (_set_read_size):
    # not a connection to hand to the next stream.
    slowed: bool = False
    # Its socket is not being read until the next _read (a slow listener's).
    held: bool = False

    def close(self) -> None:
        self.response.close()


class UpstreamFetcher:
    """Opens bounded ranges of a stream URL, checking hosts and redirects."""

    def __init__(
        self,
        config: UpstreamConfig,
        session: aiohttp.ClientSession,
        breaker: BreakerConfig | None = None,
    ) -> None:
        self.config = config
        self._session = session
        self._breaker_config = breaker or BreakerConfig()
        self._timeout = aiohttp.ClientTimeout(
            total=None,  # never a whole-stream deadline; a paused listener may idle for hours
            sock_connect=config.connect_timeout,
            # No read timer: aiohttp's runs whenever no bytes come, also while
            # nobody reads (a paused listener, a held socket), and would fail a
            # healthy connection.  The response headers are awaited for
            # connect_timeout + read_timeout (open_range); a body's reads are
            # timed by RangeStream, only while the relay waits for them (_read).
            sock_read=None,
        )
        self.requests = 0
        self.stats: Counter[str] = Counter()
        self.breakers: dict[str, CircuitBreaker] = {}
        self._env_proxies: dict[tuple[str, str], tuple[str | None, aiohttp.BasicAuth | None]] = {}
        self._draining: set[asyncio.Task[None]] = set()
        # Requests held while upstream is out of reach, and since when it is.
        self.holds = Holds()
        # URLs bound to an address family (ip=) are fetched over that family only.
        self._family_sessions: dict[socket.AddressFamily, aiohttp.ClientSession] = {}

    async def aclose(self) -> None:
        """Close the sessions this fetcher made for one address family (the
        main session is the caller's)."""
        sessions, self._family_sessions = self._family_sessions, {}
        for session in sessions.values():
            await session.close()

    def _session_for(self, family: socket.AddressFamily) -> aiohttp.ClientSession:
        session = self._family_sessions.get(family)
        if session is None:
            session = aiohttp.ClientSession(connector=upstream_connector(family),
                                            auto_decompress=False)
            self._family_sessions[family] = session
        return session

    def finish(self, opened: OpenRange) -> None:
        """Done with a range: its connection goes back to the pool when it can
        carry another request (the whole body came, nothing went wrong), so the
        next range or stream to this host skips the TCP and TLS handshakes.

        A short range (a stream's first, FIRST_RANGE) left before all of it
        came is read to its end in the background first: a few KiB that are
        mostly on their way already, for a connection kept.  Otherwise (a
        connection lowered for a slow listener, a long range left midway, a
        server that ignored Range and sends the whole file) it is closed.
        """
        response = opened.response
        if opened.slowed:
            response.close()
            return
        transport = _transport(opened)
        set_read_limit(transport, None)  # the next user starts afresh
        set_tls_read_buffer(transport, None)
        if (response.content.is_eof() or response.closed or response.status != 206
                or opened.end - opened.start >= FIRST_RANGE):
            response.release()  # closes it unless the whole body came
            return
        task = asyncio.ensure_future(_drain(response))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def breaker_for(self, host: str) -> CircuitBreaker:
        breaker = self.breakers.get(host)
        if breaker is None:
            breaker = CircuitBreaker(f"upstream host {host}", self._breaker_config.failures,
                                     self._breaker_config.reset_after)
            self.breakers[host] = breaker
        return breaker

    def record_failure(self, host: str, error: BaseException, track: str | None = None) -> None:
        """A transient failure talking to ``host`` while fetching ``track`` (a
        body cut short: counted for the host only with other tracks' failures)."""
        self.breaker_for(host).record_failure(_describe(error), track)

    def check_allowed(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError for a port that is not one
        except ValueError:
            raise UpstreamHostNotAllowed("refusing to fetch a malformed stream URL") from None
        if parts.scheme not in ("http", "https"):
            raise UpstreamHostNotAllowed(f"refusing to fetch a {parts.scheme or 'relative'} URL")
        if not host_allowed(host, self.config.allowed_hosts):
            raise UpstreamHostNotAllowed(
                f"the stream URL's host {host!r} is not in upstream.allowed_hosts; "
                "add it there if you trust it"
            )

    def _redirect_target(self, url: str, location: str) -> str:
        """Where a redirect from ``url`` leads, if ytproxy may follow it.

        Only to http(s) on a host in upstream.allowed_hosts, and on the port the
        redirect came from or the scheme's default one: googlevideo moves a
        stream between its hosts on 443, and any other hop (another host, a
        port of this machine) is something to refuse, not follow.
        """
        origin = urlsplit(url)
        try:
            target = urljoin(url, location)
            parts = urlsplit(target)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            raise UpstreamHostNotAllowed(
                f"upstream {origin.hostname} redirected to a malformed URL; not following it"
            ) from None
        if parts.scheme not in _DEFAULT_PORTS or not host_allowed(
            parts.hostname or "", self.config.allowed_hosts
        ):
            raise UpstreamHostNotAllowed(
                f"upstream {origin.hostname} redirected to {parts.scheme or 'a relative'} "
                f"URL on host {parts.hostname!r}, which is not in upstream.allowed_hosts; "
                "not following it"
            )
        followed_ports = (origin.port or _DEFAULT_PORTS.get(origin.scheme),
                          _DEFAULT_PORTS[parts.scheme])
        if port not in followed_ports:
            raise UpstreamHostNotAllowed(
                f"upstream {origin.hostname} redirected to port {port} of {parts.hostname}; "
                "only redirects to the same port or the scheme's default one are followed"
            )
        return target

    def _proxy_for(self, url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
        """``upstream.proxy``, else HTTP(S)_PROXY/NO_PROXY, read once per scheme and host.

        (A session with ``trust_env`` reads the environment and ~/.netrc in a
        worker thread on every request: two thread hops before each range.)
        """
        if self.config.proxy:
            return self.config.proxy, None
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        found = self._env_proxies.get(key)
        if found is None:
            found = _env_proxy(parts.scheme, parts.hostname or "")
            if len(self._env_proxies) < _PROXY_CACHE_HOSTS:
                self._env_proxies[key] = found
        return found

    async def open_range(
        self, info: StreamInfo, start: int, end: int, *, gate: bool = True,
        track: str | None = None,
    ) -> OpenRange:
        """GET bytes ``start..end`` (inclusive); ``end - start + 1`` must be <= chunk_size.

        With ``gate``, an open breaker for the host refuses at once (a new stream
        should not wait on a host that keeps failing); a stream already running
        retries under its own budget and passes ``gate=False``.
        """
        session = self._session
        # The response headers: connecting, then read_timeout for the answer.
        head_timeout = min(self.config.range_timeout,
                           self.config.connect_timeout + self.config.read_timeout)
        assert 0 <= start <= end and end - start < self.config.chunk_size
        headers = {k: v for k, v in info.http_headers.items() if k.lower() not in _DROP_HEADERS}
        headers["Accept-Encoding"] = "identity"
        url = info.url
        for _ in range(_MAX_REDIRECTS + 1):
            self.check_allowed(url)
            host = urlsplit(url).hostname or "?"
            breaker = self.breaker_for(host)
            try:
                if gate:
                    breaker.check()
            except BreakerOpen as exc:
                raise UpstreamUnavailable(
                    f"upstream {host} failed {breaker.failures} times in a row "
                    f"(last: {breaker.last_error}); resting it for {exc.retry_after:.0f} s",
                    retry_after=exc.retry_after, host=host,
                ) from None
            self.requests += 1
            try:
                async with asyncio.timeout(head_timeout):
                    proxy, proxy_auth = self._proxy_for(url)
                    family = address_family(url) if proxy is None else None
                    if family is not None:
                        # googlevideo refuses a URL from another address than the
                        # one it was made for: an IPv4 URL over IPv6 is a 403.
                        _check_family(host, family)
                        session = self._session_for(family)
                    response = await session.get(
                        url, headers={**headers, "Range": f"bytes={start}-{end}"},
                        allow_redirects=False, timeout=self._timeout,
                        proxy=proxy, proxy_auth=proxy_auth, read_bufsize=READ_BUFSIZE,
                    )
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                breaker.record_failure(_describe(exc))
                self.holds.unreachable()
                raise UpstreamUnreachable(
                    f"cannot reach upstream {host}: {_describe(exc)}", host=host) from exc
            except asyncio.CancelledError:
                breaker.release_trial()
                raise
            self.holds.reached()
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                breaker.record_success()
                url = self._redirect_target(url, location)
                continue
            try:
                opened = self._accept(response, host, start, end)
            except UpstreamRefused as exc:
                if exc.status in _TRANSIENT_STATUSES:
                    # An answer about this URL: the host's problem only when
                    # other tracks get such answers too.
                    breaker.record_failure(str(exc), track or url)
                else:
                    breaker.record_success()  # the host answered; the URL is the problem
                raise
            except UpstreamFailed as exc:
                breaker.record_failure(str(exc), track or url)
                raise
            breaker.record_success()
            return opened
        raise UpstreamFailed(f"upstream redirected more than {_MAX_REDIRECTS} times")

    def _accept(
        self, response: aiohttp.ClientResponse, host: str, start: int, end: int
    ) -> OpenRange:
        content_type = response.headers.get("Content-Type")
        if response.status == 206:
            match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != start:
                response.close()
                raise UpstreamFailed(f"upstream {host} answered a different range than asked")
            total = None if match.group(3) == "*" else int(match.group(3))
            return OpenRange(response, start, int(match.group(2)), total, content_type, host)
        if response.status == 200 and start == 0:
            # A server that ignores Range sends everything: read only what we asked for.
            total = response.content_length
            last = end if total is None else min(end, total - 1)
            return OpenRange(response, 0, last, total, content_type, host)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        response.close()
        raise UpstreamRefused(response.status, host, retry_after)


# A fresh URL for the stream: (the URL in use, player clients to avoid) → the
# same format (format_id) from clients other than those (c= names).
Refresh = Callable[[StreamInfo, tuple[str, ...]], Awaitable[StreamInfo]]

# Statuses worth another try: the far side is busy, failing or asking us to wait.
_TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# Statuses that mean the signed URL is no longer good for us.
_REFRESH_STATUSES = {403, 410}


class _Broken(Exception):
    """A range that broke off at ``pos`` (the first byte not received)."""

    def __init__(self, pos: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.pos = pos
        self.cause = cause


class RangeStream:
    """Bytes ``start..end`` of a stream, fetched range by range, one range ahead.

    The relay pulls: ``next_piece`` reads straight from the open upstream
    response, with no task or queue in between, so a slow listener leaves the
    bytes it has not taken in the sockets (flow control) rather than in this
    process, and a fast one costs one await per piece.  The request for the
    next range is sent while the current one is still being relayed, so there
    is no gap at range boundaries.  A range that fails is retried from the
    first missing byte on a fresh connection; a refused URL (403/410) is
    refreshed once per success.
    """

    def __init__(
        self,
        fetcher: UpstreamFetcher,
        info: StreamInfo,
        start: int,
        end: int,
        *,
        refresh: Refresh,
        policy: RetryConfig | None = None,
        label: str = "stream",
        listening: Callable[[], bool] | None = None,
        expected_total: int | None = None,
        max_available_wait: float = 30.0,
    ) -> None:
        self._fetcher = fetcher
        # The size of the file the listener was promised: a URL serving another
        # size is another file, never resumed from (FileChanged).
        self._expected_total = expected_total
        self._max_available_wait = max_available_wait
        self._waited_for: str | None = None  # the URL whose available_at was awaited
        self._gap_clients: list[str] = []  # player clients refused in this gap
        self._held: Held | None = None  # counted in the fetcher's Holds while held
        self._listening = listening
        self._info = info
        self._start = start
        self._end = end
        self._refresh = refresh
        self._policy = policy or RetryConfig()
        self._label = label
        self._pieces: AsyncGenerator[bytes, None] | None = None
        self._head: bytes | None = None
        self._current: OpenRange | None = None
        self._paced = True
        self._slow = False
        self._filled = False
        self._room = PACED_READ
        self._refreshed_since_success = False
        self._gate = True
        self.total: int | None = None
        self.content_type: str | None = None
        self.refreshes = 0
        self.retries: Counter[str] = Counter()
        self.resumes = 0
        self.bytes_fetched = 0

    @property
    def info(self) -> StreamInfo:
        return self._info

    async def _open(self, start: int, end: int) -> OpenRange:
        await self._until_available()
        # A stream asks the host's breaker until its first range opens: a new
        # stream waits for a resting host (held), a running one tries on.
        opened = await self._fetcher.open_range(self._info, start, end, gate=self._gate,
                                                track=self._label)
        self._gate = False
        self._unhold()
        return opened

    async def _until_available(self) -> None:
        """Before a URL's first request, wait for its format's ``available_at``
        (YouTube asks the player to wait, e.g. for an ad; a request before then
        is refused): the listener hears a later first byte, not an error."""
        info = self._info
        if info.available_at is None or self._waited_for == info.url:
            return
        self._waited_for = info.url
        delay = info.available_at - time.time()
        if delay <= 0:
            return
        wait = min(delay + 0.05, self._max_available_wait)
        log.info("upstream: %s: the format is available in %.1f s; waiting %.1f s before "
                 "the first request", self._label, delay, wait)
        self.retries["available_at"] += 1
        await asyncio.sleep(wait)

    def _spawn_open(self, start: int, end: int) -> asyncio.Task[OpenRange]:
        """A range asked for ahead, while the current one is relayed."""
        task = asyncio.ensure_future(self._open(start, end))
        # A prefetch that is never awaited must not warn about its exception.
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return task

    def _ranges(self) -> Iterator[tuple[int, int]]:
        """The ranges to ask for, lazily (a 1 GB track is a thousand of them):
        a short first one (FIRST_RANGE), then ``chunk_size`` each."""
        start, size = self._start, min(self._fetcher.config.chunk_size, FIRST_RANGE)
        while start <= self._end:
            end = min(start + size - 1, self._end)
            yield start, end
            start, size = end + 1, self._fetcher.config.chunk_size

    async def _produce(self) -> AsyncGenerator[bytes, None]:
        ranges = self._ranges()
        following: tuple[int, int] | None = next(ranges)
        assert following is not None
        pending: asyncio.Task[OpenRange] | None = None
        try:
            while following is not None:
                start, end = following
                opening = start == self._start  # the stream's first range
                following = next(ranges, None)
                size = end - start + 1
                opener, pending = pending, None
                pos = start
                gap = RetryGap(self._policy)
                while pos <= end:
                    try:
                        # Awaited here, not in a task of its own, when nothing
                        # was asked for ahead (a stream's start, a retry): the
                        # listener waits for it, and a task costs two turns of
                        # the event loop.
                        current = await (self._open(pos, end) if opener is None else opener)
                    except (UpstreamFailed, aiohttp.ClientError, TimeoutError) as exc:
                        await self._recover(exc, gap, pos)
                        continue
                    finally:
                        opener = None
                    try:
                        expected = self._expected_total
                        if (current.total is not None and expected is not None
                                and current.total != expected):
                            current.close()
                            changed = FileChanged(current.total, expected, current.host)
                            if self.bytes_fetched == 0 and pos == self._start:
                                raise changed  # nothing relayed yet: the caller may start over
                            raise _Broken(pos, changed)
                        if current.total is not None:
                            end = min(end, current.total - 1)
                            if self.total is None:
                                self.total = current.total
                                self.content_type = current.content_type
                        # Unpaced, the next range is asked for during this one
                        # (PREFETCH_LEAD), never before a quarter of it is read.
                        # Paced, it is asked for when needed: the listener has
                        # seconds of audio in its buffers, and holds one upstream
                        # connection, not two.
                        stop = min(end, current.end)
                        self._current = current
                        _set_read_size(current, self._read_size, self._slow)
                        # Time spent waiting on upstream for this range; time the
                        # listener spends paused (nobody pulls) does not count.
                        waited = 0.0
                        limit = self._fetcher.config.range_timeout
                        read_timeout = self._fetcher.config.read_timeout
                        clock = time.monotonic
                        began, first = clock(), pos
                        try:
                            while pos <= stop:
                                before = clock()
                                piece = await _read(current, read_timeout, self._read_size)
                                waited += clock() - before
                                if not piece:
                                    raise UpstreamFailed(
                                        f"upstream ended early at byte {pos} of {stop + 1}")
                                if waited > limit:
                                    raise TimeoutError(
                                        f"range took over {limit:g} s of upstream time")
                                if len(piece) > stop - pos + 1:
                                    piece = piece[: stop - pos + 1]
                                pos += len(piece)
                                self.bytes_fetched += len(piece)
                                if gap.attempts:
                                    self.resumes += 1
                                    self._fetcher.stats["resumes"] += 1
                                    gap.progress()
                                if self._refreshed_since_success or self._gap_clients:
                                    self._refreshed_since_success = False
                                    self._gap_clients.clear()
                                if (pending is None and following is not None
                                        and not self._paced
                                        and (taken := pos - first) >= size // 4
                                        and (stop - pos) * (clock() - began)
                                        <= PREFETCH_LEAD * taken):
                                    pending = self._spawn_open(*following)
                                # Handed over, not kept: this frame waits here
                                # while the relay waits for its listener, and a
                                # piece pinned by it would stay in memory as long.
                                handed = [piece]
                                del piece
                                yield handed.pop()
                        except (aiohttp.ClientError, TimeoutError, UpstreamFailed) as exc:
                            self._fetcher.record_failure(current.host, exc, self._label)
                            current.close()  # never reuse a connection that broke
                            raise _Broken(pos, exc) from exc
                    except _Broken as broken:
                        pos = broken.pos
                        await self._recover(broken.cause, gap, pos)
                    finally:
                        self._fetcher.finish(current)
                if (opening and pending is None and following is not None
                        and size < self._fetcher.config.chunk_size):
                    # The short first range is relayed: a listener who left at
                    # once (MPD seeks by reconnecting) needs no second one.
                    await asyncio.sleep(SECOND_RANGE_PAUSE)
                    if self._listening is not None and not self._listening():
                        raise ConnectionResetError("the listener went away")
        finally:
            self._unhold()
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    (await pending).close()

    async def _recover(self, exc: BaseException, gap: RetryGap, pos: int) -> None:
        """Wait and return to try again from ``pos``, refresh the URL, or give up by raising."""
        if isinstance(exc, UpstreamHostNotAllowed):
            raise exc
        retry_after: float | None = None
        hold = False
        if isinstance(exc, UpstreamUnavailable):
            # A new stream meets a resting host: held until the breaker's trial
            # (MPD waits for headers with no timeout of its own).
            retry_after, hold, cause = exc.retry_after, True, "breaker_open"
        elif isinstance(exc, UpstreamUnreachable):
            hold, cause = True, "unreachable"
        elif isinstance(exc, UpstreamRefused) and self._not_yet_available(exc.status):
            # Refused before the format's available_at: not a revoked URL, a wait.
            assert self._info.available_at is not None
            retry_after = max(0.0, self._info.available_at - time.time()) + 0.05
            cause = "not_yet_available"
        elif ((isinstance(exc, UpstreamRefused) and exc.status in _REFRESH_STATUSES)
              or isinstance(exc, FileChanged)):
            try:
                await self._new_url(exc, pos)
                return
            except ResolverUnavailable as refresh_error:
                # The resolver may recover within this gap's budget: wait and
                # try again (the old URL's refusal will bring us back here).
                exc = refresh_error
                cause = "resolver"
                hold = refresh_error.offline
        elif isinstance(exc, UpstreamRefused) and exc.status not in _TRANSIENT_STATUSES:
            raise exc  # 404 and other 4xx: another try will not help
        elif isinstance(exc, UpstreamRefused):
            retry_after = exc.retry_after
            cause = f"http_{exc.status}"
        else:
            cause = _cause_name(exc)
        delay = gap.next_delay(retry_after, hold=hold)
        if delay is None:
            # The one ERROR line is the handler's, which knows the listener's view.
            if gap.held:
                raise UpstreamUnavailable(
                    f"upstream was out of reach for {gap.elapsed:.0f} s "
                    f"(retry.hold_budget; last: {_describe(exc)})",
                    retry_after=self._policy.base_delay + 30.0) from exc
            raise UpstreamFailed(
                f"upstream kept failing for {gap.elapsed:.1f} s over {gap.attempts - 1} "
                f"retries ({_describe(exc)})"
            ) from exc
        self.retries[cause] += 1
        self._fetcher.stats[f"retry_{cause}"] += 1
        # Nobody to fetch for: stop, and free the listener's slot.
        self._still_listening()
        if not hold:
            log.warning("upstream: %s: attempt %d at byte %d failed (%s); retrying in %.2f s",
                        self._label, gap.attempts, pos, _describe(exc), delay)
            await asyncio.sleep(delay)
            self._still_listening()
            return
        # Held: said once for all held requests (Holds), not per attempt.
        log.debug("upstream: %s: holding at byte %d (%s); next try in %.2f s",
                  self._label, pos, _describe(exc), delay)
        reason = _hold_reason(exc)
        if self._held is None or self._held.reason != reason:
            self._unhold()
            self._held = self._fetcher.holds.hold(reason)
        await asyncio.sleep(delay)
        self._still_listening()

    def _unhold(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def _still_listening(self) -> None:
        """Raise ConnectionResetError when the listener has gone: nobody to
        fetch for, and its slot is for the next request."""
        if self._listening is not None and not self._listening():
            raise ConnectionResetError("the listener went away")

    def _not_yet_available(self, status: int) -> bool:
        available_at = self._info.available_at
        return (status == 403 and available_at is not None
                and time.time() < available_at + AVAILABLE_GRACE)

    async def _new_url(self, exc: UpstreamFailed, pos: int) -> None:
        """A URL was refused (403/410) or serves another file: get a new one.

        First the same player client, fresh (the URL may have expired or been
        revoked).  When the fresh URL fails the same way before any byte came,
        the client is the problem (some clients' URLs serve a prefix, then 403
        for good): yt-dlp is asked for the same format from other clients, up
        to MAX_CLIENTS_PER_GAP clients in this gap.  Replaces ``self._info``,
        or raises UpstreamGone (or the resolver's error).
        """
        info = self._info
        client = info.client
        what = (f"refused (HTTP {exc.status})" if isinstance(exc, UpstreamRefused)
                else f"changed file ({exc})")
        if not self._refreshed_since_success:
            log.warning("upstream: %s: the stream URL %s at byte %d; refreshing it",
                        self._label, what, pos)
            self.retries["refresh"] += 1
            fresh = await self._refresh(info, info.avoid_clients)
        else:
            if client is not None and client not in self._gap_clients:
                self._gap_clients.append(client)
            if client is None or len(self._gap_clients) >= MAX_CLIENTS_PER_GAP:
                tried = (f" from {len(self._gap_clients)} player clients "
                         f"({', '.join(self._gap_clients)})" if self._gap_clients else "")
                raise UpstreamGone(
                    f"upstream refused the stream even with a fresh URL{tried} "
                    f"({what}); the track may be gone or blocked here"
                ) from exc
            avoid = tuple(dict.fromkeys((*info.avoid_clients, *self._gap_clients)))
            log.warning("upstream: %s: a fresh URL from player client %s %s at byte %d; "
                        "asking yt-dlp for another client (not %s)", self._label, client,
                        what, pos, ", ".join(avoid))
            self.retries["failover"] += 1
            self._fetcher.stats["failovers"] += 1
            fresh = await self._refresh(info, avoid)
            if fresh.client is not None and fresh.client in avoid:
                raise UpstreamGone(
                    f"yt-dlp offered no player client but {', '.join(avoid)} for this "
                    f"track, whose URLs are refused ({what})") from exc
            log.info("upstream: %s: resuming at byte %d with player client %s", self._label,
                     pos, fresh.client or "?")
        self._info = fresh
        self._refreshed_since_success = True
        self.refreshes += 1
        self._fetcher.stats["refreshes"] += 1

    async def __aenter__(self) -> RangeStream:
        self._pieces = self._produce()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: close the open upstream responses and the pending prefetch."""
        if self._pieces is not None:
            await self._pieces.aclose()

    async def ready(self) -> None:
        """Wait for the first bytes (raising as ``next_piece`` would); ``next_piece`` gives them."""
        self._head = await self.next_piece()

    async def next_piece(self) -> bytes | None:
        """The next bytes, or None at the end; raises the upstream failure if there was one."""
        if self._head is not None:
            head, self._head = self._head, None
            return head
        assert self._pieces is not None, "use RangeStream as an async context manager"
        try:
            return await anext(self._pieces)
        except StopAsyncIteration:
            return None

    @property
    def paced(self) -> bool:
        return self._paced

    @property
    def slow(self) -> bool:
        return self._slow

    def pace(self, paced: bool = True) -> None:
        """The relay's word on its listener: slow (paced), or fast (not paced).

        A stream starts paced, reading upstream in small bites; a listener
        that proves fast is unpaced, and each read then takes up to 256 KiB,
        which it wants, where one that takes 20 KB/s would leave it all in this
        process's memory.  A listener told slow also gets a small kernel
        receive buffer upstream.  Bytes not read wait in the kernel, under TCP
        flow control.
        """
        slow = paced  # told, not assumed as at the start
        if paced != self._paced or slow != self._slow:
            self._paced, self._slow = paced, slow
            if self._current is not None:
                _set_read_size(self._current, self._read_size, slow)

    def hold(self) -> None:
        """The relay's word that it waits for its listener's socket to drain:
        a slow listener's stream reads nothing from upstream meanwhile, so no
        bytes wait here, only in the sockets (next_piece reads again)."""
        if self._slow and self._current is not None:
            _hold(self._current)

    def room(self, nbytes: int) -> None:
        """The relay's word that its listener's socket has room for about
        ``nbytes``: a slow listener's next read takes that much (PACED_READ to
        ROOM_READ), which goes straight into the socket."""
        size = max(PACED_READ, min(nbytes, ROOM_READ))
        if size != self._room:
            self._room = size
            if self._slow and self._current is not None:
                set_read_limit(_transport(self._current), size)

    def filled(self) -> None:
        """The relay's word that its listener's socket is full: the first gulp
        is over, and paced reads are PACED_READ from now on, not START_READ."""
        if not self._filled:
            self._filled = True
            if self._current is not None:
                set_read_limit(_transport(self._current), self._read_size)

    @property
    def _read_size(self) -> int | None:
        if not self._paced:
            return None
        if self._slow:
            return self._room
        return PACED_READ if self._filled else START_READ

    @property
    def retry_count(self) -> int:
        return sum(self.retries.values())


async def probe_size(fetcher: UpstreamFetcher, info: StreamInfo, *, refresh: Refresh,
                     policy: RetryConfig, label: str, max_available_wait: float
                     ) -> tuple[int, StreamInfo, str | None]:
    """Size, URL and type of a stream from a one-byte range: googlevideo
    throttles HEAD, so never HEAD."""
    async with RangeStream(fetcher, info, 0, 0, refresh=refresh, policy=policy, label=label,
                           max_available_wait=max_available_wait) as probe:
        await probe.next_piece()
        if probe.total is None:
            raise YtproxyError("upstream did not say how long the stream is")
        return probe.total, probe.info, probe.content_type


async def _drain(response: aiohttp.ClientResponse) -> None:
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            while await response.content.readany():
                pass
    except asyncio.CancelledError:
        response.close()
        raise
    except Exception as exc:  # best effort: the connection is only not kept
        log.debug("upstream: not keeping a connection: %s", _describe(exc))
        response.close()
        return
    response.release()


def _transport(opened: OpenRange) -> asyncio.Transport | None:
    connection = opened.response.connection
    return connection.transport if connection is not None else None


def _set_read_size(opened: OpenRange, read_size: int | None, slow: bool) -> None:
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


async def _read(opened: OpenRange, patience: float, size: int | None = None) -> bytes:
    """The next bytes of ``opened``'s body (at most ``size``, when given),
    failing with TimeoutError when none come within ``patience`` seconds of
    asking; a held socket is read again.

    ``size`` keeps a piece within what the listener's socket has room for
    where the socket's reads cannot be sized (uvloop, TLS): the rest waits in
    the response's buffer, not in the listener's transport as well."""
    if opened.held:
        opened.held = False
        transport = _transport(opened)
        if transport is not None:
            transport.resume_reading()
    content = opened.response.content
    piece = content.read_nowait(size or -1)
    if not piece and not content.is_eof():
        async with asyncio.timeout(patience):
            # read(n) waits for the first byte and takes up to n; readany, all there is.
            piece = await (content.read(size) if size else content.readany())
    return piece


def _hold(opened: OpenRange) -> None:
    """Stop reading ``opened``'s socket until the next ``_read``."""
    transport = _transport(opened)
    # Not once the whole body came: aiohttp has already handed the connection
    # back (response.connection is None), and it must not go on held.
    if not opened.held and transport is not None and transport.is_reading():
        opened.held = True
        transport.pause_reading()


def _hold_reason(exc: BaseException) -> str:
    """What a held request waits for, as /status and the log say it."""
    if isinstance(exc, ResolverUnavailable):
        return "the resolver (yt-dlp)"
    host = exc.host if isinstance(exc, UpstreamFailed) else None
    return f"host {host}" if host else "upstream"


def _cause_name(exc: BaseException) -> str:
    root = exc.__cause__ if isinstance(exc, UpstreamFailed) and exc.__cause__ else exc
    if isinstance(root, TimeoutError):
        return "timeout"
    if isinstance(root, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "reset"
    if isinstance(root, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, UpstreamFailed) and "ended early" in str(exc):
        return "truncated"
    return "error"


def _env_proxy(scheme: str, host: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy HTTP(S)_PROXY names for ``scheme``, unless NO_PROXY exempts
    ``host``; credentials in its URL become the proxy's authorization."""
    if host and urllib.request.proxy_bypass(host):
        return None, None
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy:
        return None, None
    url = URL(proxy)
    auth = aiohttp.BasicAuth.from_url(url)
    return str(url.with_user(None)) if auth is not None else proxy, auth


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
