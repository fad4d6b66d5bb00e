"""Fetching a stream's bytes from upstream in bounded ranges.

googlevideo refuses requests with no ``Range`` or an open-ended one, and
throttles ranges much larger than ~1 MB, so every request here names both
ends of a range no longer than ``upstream.chunk_size``.  HEAD is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from ytproxy.config import BreakerConfig, RetryConfig, UpstreamConfig
from ytproxy.errors import (
    ResolverUnavailable,
    UpstreamFailed,
    UpstreamGone,
    UpstreamHostNotAllowed,
    UpstreamUnavailable,
)
from ytproxy.models import StreamInfo
from ytproxy.resilience import (
    BreakerOpen,
    CircuitBreaker,
    RetryGap,
    parse_retry_after,
)

__all__ = [
    "RangeStream",
    "Refresh",
    "UpstreamFetcher",
    "UpstreamRefused",
    "host_allowed",
]

log = logging.getLogger(__name__)

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_MAX_REDIRECTS = 5
# Request headers yt-dlp hands us that would change what upstream sends back.
_DROP_HEADERS = {"range", "accept-encoding", "host", "content-length"}


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
            sock_read=config.read_timeout,
        )
        self.requests = 0
        self.stats: Counter[str] = Counter()
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker_for(self, host: str) -> CircuitBreaker:
        breaker = self.breakers.get(host)
        if breaker is None:
            breaker = CircuitBreaker(f"upstream host {host}", self._breaker_config.failures,
                                     self._breaker_config.reset_after)
            self.breakers[host] = breaker
        return breaker

    def record_failure(self, host: str, error: BaseException) -> None:
        """A transient failure talking to ``host`` (counted toward its breaker)."""
        self.breaker_for(host).record_failure(_describe(error))

    def check_allowed(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https"):
            raise UpstreamHostNotAllowed(f"refusing to fetch a {parts.scheme or 'relative'} URL")
        if not host_allowed(host, self.config.allowed_hosts):
            raise UpstreamHostNotAllowed(
                f"the stream URL's host {host!r} is not in upstream.allowed_hosts; "
                "add it there if you trust it"
            )

    async def open_range(
        self, info: StreamInfo, start: int, end: int, *, gate: bool = True
    ) -> OpenRange:
        """GET bytes ``start..end`` (inclusive); ``end - start + 1`` must be <= chunk_size.

        With ``gate``, an open breaker for the host refuses at once (a new stream
        should not wait on a host that keeps failing); a stream already running
        retries under its own budget and passes ``gate=False``.
        """
        assert 0 <= start <= end and end - start < self.config.chunk_size
        headers = {k: v for k, v in info.http_headers.items() if k.lower() not in _DROP_HEADERS}
        headers["Range"] = f"bytes={start}-{end}"
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
                    retry_after=exc.retry_after,
                ) from None
            self.requests += 1
            try:
                async with asyncio.timeout(self.config.range_timeout):
                    # An explicit upstream.proxy wins over HTTP(S)_PROXY, which the
                    # session (trust_env) reads when this is None.
                    response = await self._session.get(
                        url, headers=headers, allow_redirects=False, timeout=self._timeout,
                        proxy=self.config.proxy or None,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                breaker.record_failure(_describe(exc))
                raise UpstreamFailed(f"cannot reach upstream {host}: {_describe(exc)}") from exc
            except asyncio.CancelledError:
                breaker.release_trial()
                raise
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                url = urljoin(url, response.headers["Location"])
                response.release()
                breaker.record_success()
                continue
            try:
                opened = self._accept(response, host, start, end)
            except UpstreamRefused as exc:
                if exc.status in _TRANSIENT_STATUSES:
                    breaker.record_failure(str(exc))
                else:
                    breaker.record_success()  # the host answered; the URL is the problem
                raise
            except UpstreamFailed as exc:
                breaker.record_failure(str(exc))
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


Refresh = Callable[[], Awaitable[StreamInfo]]

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

    A producer task reads upstream into a small queue (so memory stays bounded
    when the listener is slow); the request for the next range is sent while the
    current one is still being relayed, so there is no gap at range boundaries.
    A range that fails is retried from the first missing byte on a fresh
    connection; a refused URL (403/410) is refreshed once per success.
    """

    _QUEUE_PIECES = 4

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
    ) -> None:
        self._fetcher = fetcher
        self._info = info
        self._start = start
        self._end = end
        self._refresh = refresh
        self._policy = policy or RetryConfig()
        self._label = label
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(
            self._QUEUE_PIECES
        )
        self._task: asyncio.Task[None] | None = None
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

    def _ranges(self) -> list[tuple[int, int]]:
        size = self._fetcher.config.chunk_size
        return [(a, min(a + size - 1, self._end)) for a in range(self._start, self._end + 1, size)]

    def _spawn_open(self, start: int, end: int) -> asyncio.Task[OpenRange]:
        # Only a stream's very first request asks the host's breaker.
        gate, self._gate = self._gate, False
        task = asyncio.ensure_future(
            self._fetcher.open_range(self._info, start, end, gate=gate)
        )
        # A prefetch that is never awaited must not warn about its exception.
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return task

    async def _produce(self) -> None:
        ranges = self._ranges()
        pending: asyncio.Task[OpenRange] | None = self._spawn_open(*ranges[0])
        try:
            for index, (start, end) in enumerate(ranges):
                opener, pending = pending, None
                pos = start
                gap = RetryGap(self._policy)
                while pos <= end:
                    try:
                        if opener is None:
                            opener = self._spawn_open(pos, end)
                        current = await opener
                    except (UpstreamFailed, aiohttp.ClientError, TimeoutError) as exc:
                        await self._recover(exc, gap, pos)
                        continue
                    finally:
                        opener = None
                    try:
                        if current.total is not None:
                            end = min(end, current.total - 1)
                            if self.total is None:
                                self.total = current.total
                                self.content_type = current.content_type
                        if pending is None and index + 1 < len(ranges):
                            pending = self._spawn_open(*ranges[index + 1])
                        pos = await self._relay_range(current, pos, min(end, current.end), gap)
                    except _Broken as broken:
                        pos = broken.pos
                        await self._recover(broken.cause, gap, pos)
                    finally:
                        current.close()  # never reuse a connection that broke
            await self._queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._queue.put(exc)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    (await pending).close()

    async def _recover(self, exc: BaseException, gap: RetryGap, pos: int) -> None:
        """Wait and return to try again from ``pos``, refresh the URL, or give up by raising."""
        if isinstance(exc, UpstreamHostNotAllowed):
            raise exc
        retry_after: float | None = None
        if isinstance(exc, UpstreamUnavailable):
            raise exc  # a new stream meets an open breaker: 503 at once
        if isinstance(exc, UpstreamRefused):
            if exc.status in _REFRESH_STATUSES:
                if self._refreshed_since_success:
                    raise UpstreamGone(
                        f"upstream refused the stream (HTTP {exc.status}) even with a "
                        "fresh URL; the track may be gone or blocked here"
                    ) from exc
                log.warning("upstream: %s: %s refused (HTTP %d) at byte %d; "
                            "refreshing the stream URL", self._label, exc.host, exc.status, pos)
                self.retries["refresh"] += 1
                try:
                    self._info = await self._refresh()
                except ResolverUnavailable as refresh_error:
                    # The resolver may recover within this gap's budget: wait and
                    # try again (the old URL's refusal will bring us back here).
                    exc = refresh_error
                    cause = "resolver"
                else:
                    self._refreshed_since_success = True
                    self.refreshes += 1
                    self._fetcher.stats["refreshes"] += 1
                    return
            elif exc.status not in _TRANSIENT_STATUSES:
                raise exc  # 404 and other 4xx: another try will not help
            else:
                retry_after = exc.retry_after
                cause = f"http_{exc.status}"
        else:
            cause = _cause_name(exc)
        delay = gap.next_delay(retry_after)
        if delay is None:
            # The one ERROR line is the handler's, which knows the listener's view.
            raise UpstreamFailed(
                f"upstream kept failing for {gap.elapsed:.1f} s over {gap.attempts - 1} "
                f"retries ({_describe(exc)})"
            ) from exc
        self.retries[cause] += 1
        self._fetcher.stats[f"retry_{cause}"] += 1
        log.warning("upstream: %s: attempt %d at byte %d failed (%s); retrying in %.2f s",
                    self._label, gap.attempts, pos, _describe(exc), delay)
        await asyncio.sleep(delay)

    async def _relay_range(self, current: OpenRange, pos: int, end: int, gap: RetryGap) -> int:
        """Queue bytes ``pos..end`` from ``current``; returns the next position."""
        # Time spent waiting on upstream for this range; time the listener
        # spends paused (we block on the queue) does not count.
        waited = 0.0
        limit = self._fetcher.config.range_timeout
        try:
            while pos <= end:
                before = time.monotonic()
                piece = await current.response.content.readany()
                waited += time.monotonic() - before
                if not piece:
                    raise UpstreamFailed(f"upstream ended early at byte {pos} of {end + 1}")
                if waited > limit:
                    raise TimeoutError(f"range took over {limit:g} s of upstream time")
                if len(piece) > end - pos + 1:
                    piece = piece[: end - pos + 1]
                pos += len(piece)
                self.bytes_fetched += len(piece)
                if gap.attempts:
                    self.resumes += 1
                    self._fetcher.stats["resumes"] += 1
                gap.progress()
                self._refreshed_since_success = False
                await self._queue.put(piece)
        except (aiohttp.ClientError, TimeoutError, UpstreamFailed) as exc:
            self._fetcher.record_failure(current.host, exc)
            raise _Broken(pos, exc) from exc
        return pos

    async def __aenter__(self) -> RangeStream:
        self._task = asyncio.create_task(self._produce(), name="ytproxy-range-stream")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def next_piece(self) -> bytes | None:
        """The next bytes, or None at the end; raises the upstream failure if there was one."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


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


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
