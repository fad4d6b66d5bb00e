"""Opening bounded byte ranges of a stream URL through aiohttp's client.

googlevideo refuses requests with no ``Range`` or an open-ended one, and
throttles ranges much larger than ~1 MB, so every request here names both
ends of a range no longer than ``upstream.chunk_size``.  HEAD is never sent.
Hosts are checked against ``upstream.allowed_hosts`` (redirects too), each has
a circuit breaker (a host is a name and a port: ``host_key``), and proxies come
from the config or the environment.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import ipaddress
import logging
import re
import socket
import urllib.request
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from ytproxy.config import BreakerConfig, UpstreamConfig
from ytproxy.errors import (
    UpstreamFailed,
    UpstreamHostNotAllowed,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from ytproxy.models import StreamInfo, url_param
from ytproxy.private.aiohttp import set_read_limit, set_tls_read_buffer
from ytproxy.resilience import BreakerOpen, CircuitBreaker, parse_retry_after
from ytproxy.upstream.counters import UpstreamCounters, UpstreamStats
from ytproxy.upstream.holds import Holds
from ytproxy.upstream.reads import READ_BUFSIZE, transport_of

__all__ = [
    "FIRST_RANGE",
    "REFRESH_STATUSES",
    "TRANSIENT_STATUSES",
    "FileChanged",
    "OpenRange",
    "UpstreamFetcher",
    "UpstreamRefused",
    "address_family",
    "describe",
    "host_allowed",
    "host_key",
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


# A stream's first range is at most this long: it comes whole with the response
# headers (aiohttp hands its connection back to the pool at once), so a
# listener who leaves at once (MPD seeks by reconnecting) leaves a connection
# that can be reused rather than one that must be closed.
FIRST_RANGE = 32 * 1024
# Seconds a short range left early may take to come whole (UpstreamFetcher.finish).
DRAIN_TIMEOUT = 2.0
# Statuses worth another try: the far side is busy, failing or asking us to wait.
TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# Statuses that mean the signed URL is no longer good for us.
REFRESH_STATUSES = {403, 410}


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


def host_key(url: str) -> str:
    """What a URL's host is called in breakers, /status and messages: its name,
    and its port when that is not the scheme's default (two servers on one
    machine are two hosts; googlevideo's, all on 443, keep their plain names)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refused(exc: BaseException) -> bool:
    """Whether the URL's host refused the connection: its machine answered, and
    nothing listens on the port (a proxy's refusal says nothing of the host)."""
    return (isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
            and not isinstance(exc, aiohttp.ClientProxyConnectionError))


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
    # Its kernel receive buffer was lowered for a slow listener (reads.set_read_size):
    # not a connection to hand to the next stream.
    slowed: bool = False
    # Its socket is not being read until the next read_piece (a slow listener's:
    # reads.hold_reads).
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
            # timed by RangeStream, only while the relay waits for them (read_piece).
            sock_read=None,
        )
        # What upstream has cost: streams add to it (RangeStream), /status reads stats().
        self.counters = UpstreamCounters()
        self.breakers: dict[str, CircuitBreaker] = {}  # by host_key
        # Hosts whose last try was a refused connection (UpstreamUnavailable.refused).
        self._refusing: set[str] = set()
        self._env_proxies: dict[tuple[str, str], tuple[str | None, aiohttp.BasicAuth | None]] = {}
        self._draining: set[asyncio.Task[None]] = set()
        # Requests held while upstream is out of reach, and since when it is.
        self.holds = Holds()
        # URLs bound to an address family (ip=) are fetched over that family only.
        self._family_sessions: dict[socket.AddressFamily, aiohttp.ClientSession] = {}

    def stats(self) -> UpstreamStats:
        """The counters now (requests, bytes, retries by cause, ...)."""
        return self.counters.snapshot()

    def host_breakers(self) -> dict[str, CircuitBreaker]:
        """Each upstream host's breaker, by host (``host_key``), sorted."""
        return dict(sorted(self.breakers.items()))

    def holding(self) -> dict[str, object]:
        """The requests held while upstream is out of reach, as /status shows them."""
        return self.holds.as_dict()

    def hold_reasons(self) -> list[str]:
        """Why requests are held, as /health says it (none: nothing held)."""
        return self.holds.reasons()

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
        transport = transport_of(opened)
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
        """The breaker of ``host``, a ``host_key``."""
        breaker = self.breakers.get(host)
        if breaker is None:
            breaker = CircuitBreaker(f"upstream host {host}", self._breaker_config.failures,
                                     self._breaker_config.reset_after)
            self.breakers[host] = breaker
        return breaker

    def record_failure(self, host: str, error: BaseException, track: str | None = None) -> None:
        """A transient failure talking to ``host`` while fetching ``track`` (a
        body cut short: counted for the host only with other tracks' failures)."""
        self.breaker_for(host).record_failure(describe(error), track)

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
            host = host_key(url)
            breaker = self.breaker_for(host)
            try:
                if gate:
                    breaker.check()
            except BreakerOpen as exc:
                resting = UpstreamUnavailable(
                    f"upstream {host} failed {breaker.failures} times in a row "
                    f"(last: {breaker.last_error}); resting it for {exc.retry_after:.0f} s",
                    retry_after=exc.retry_after, host=host,
                )
                resting.refused = host in self._refusing
                raise resting from None
            self.counters.requested()
            try:
                async with asyncio.timeout(head_timeout):
                    proxy, proxy_auth = self._proxy_for(url)
                    family = address_family(url) if proxy is None else None
                    if family is not None:
                        # googlevideo refuses a URL from another address than the
                        # one it was made for: an IPv4 URL over IPv6 is a 403.
                        _check_family(urlsplit(url).hostname or "", family)
                        session = self._session_for(family)
                    response = await session.get(
                        url, headers={**headers, "Range": f"bytes={start}-{end}"},
                        allow_redirects=False, timeout=self._timeout,
                        proxy=proxy, proxy_auth=proxy_auth, read_bufsize=READ_BUFSIZE,
                    )
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                breaker.record_failure(describe(exc))
                unreachable = UpstreamUnreachable(
                    f"cannot reach upstream {host}: {describe(exc)}", host=host)
                unreachable.refused = _refused(exc)
                if unreachable.refused:
                    # One host's word, not yet the network's: the stream asks
                    # for a fresh URL first, and says offline if it holds.
                    self._refusing.add(host)
                else:
                    self._refusing.discard(host)
                    self.holds.unreachable()
                raise unreachable from exc
            except asyncio.CancelledError:
                breaker.release_trial()
                raise
            self._refusing.discard(host)
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
                if exc.status in TRANSIENT_STATUSES:
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


async def _drain(response: aiohttp.ClientResponse) -> None:
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            while await response.content.readany():
                pass
    except asyncio.CancelledError:
        response.close()
        raise
    except Exception as exc:  # best effort: the connection is only not kept
        log.debug("upstream: not keeping a connection: %s", describe(exc))
        response.close()
        return
    response.release()


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


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
