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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from ytproxy.config import UpstreamConfig
from ytproxy.errors import UpstreamFailed, UpstreamHostNotAllowed
from ytproxy.models import StreamInfo

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

    def __init__(self, status: int, host: str) -> None:
        super().__init__(f"upstream {host} answered HTTP {status}")
        self.status = status
        self.host = host


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

    def close(self) -> None:
        self.response.close()


class UpstreamFetcher:
    """Opens bounded ranges of a stream URL, checking hosts and redirects."""

    def __init__(self, config: UpstreamConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=None,  # never a whole-stream deadline; a paused listener may idle for hours
            sock_connect=config.connect_timeout,
            sock_read=config.read_timeout,
        )
        self.requests = 0

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

    async def open_range(self, info: StreamInfo, start: int, end: int) -> OpenRange:
        """GET bytes ``start..end`` (inclusive); ``end - start + 1`` must be <= chunk_size."""
        assert 0 <= start <= end and end - start < self.config.chunk_size
        headers = {k: v for k, v in info.http_headers.items() if k.lower() not in _DROP_HEADERS}
        headers["Range"] = f"bytes={start}-{end}"
        headers["Accept-Encoding"] = "identity"
        url = info.url
        for _ in range(_MAX_REDIRECTS + 1):
            self.check_allowed(url)
            self.requests += 1
            try:
                response = await self._session.get(
                    url, headers=headers, allow_redirects=False, timeout=self._timeout
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamFailed(
                    f"cannot reach upstream {urlsplit(url).hostname}: {exc.__class__.__name__}"
                ) from exc
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                url = urljoin(url, response.headers["Location"])
                response.release()
                continue
            return self._accept(response, url, start, end)
        raise UpstreamFailed(f"upstream redirected more than {_MAX_REDIRECTS} times")

    def _accept(
        self, response: aiohttp.ClientResponse, url: str, start: int, end: int
    ) -> OpenRange:
        host = urlsplit(url).hostname or "?"
        content_type = response.headers.get("Content-Type")
        if response.status == 206:
            match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != start:
                response.close()
                raise UpstreamFailed(f"upstream {host} answered a different range than asked")
            total = None if match.group(3) == "*" else int(match.group(3))
            return OpenRange(response, start, int(match.group(2)), total, content_type)
        if response.status == 200 and start == 0:
            # A server that ignores Range sends everything: read only what we asked for.
            total = response.content_length
            last = end if total is None else min(end, total - 1)
            return OpenRange(response, 0, last, total, content_type)
        response.close()
        raise UpstreamRefused(response.status, host)


Refresh = Callable[[], Awaitable[StreamInfo]]


class RangeStream:
    """Bytes ``start..end`` of a stream, fetched range by range, one range ahead.

    A producer task reads upstream into a small queue (so memory stays bounded
    when the listener is slow); the request for the next range is sent while the
    current one is still being relayed, so there is no gap at range boundaries.
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
    ) -> None:
        self._fetcher = fetcher
        self._info = info
        self._start = start
        self._end = end
        self._refresh = refresh
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(
            self._QUEUE_PIECES
        )
        self._task: asyncio.Task[None] | None = None
        self.total: int | None = None
        self.content_type: str | None = None
        self.refreshes = 0
        self.bytes_fetched = 0

    @property
    def info(self) -> StreamInfo:
        return self._info

    def _ranges(self) -> list[tuple[int, int]]:
        size = self._fetcher.config.chunk_size
        return [(a, min(a + size - 1, self._end)) for a in range(self._start, self._end + 1, size)]

    async def _open(self, start: int, end: int) -> OpenRange:
        try:
            return await self._fetcher.open_range(self._info, start, end)
        except UpstreamRefused as exc:
            if exc.status not in (403, 410) or self.refreshes:
                raise
            # The stored URL was refused (expired early, or bound to another IP):
            # ask the resolver for a fresh one once, then try again.
            log.warning("upstream: %s refused (HTTP %d); refreshing the stream URL",
                        exc.host, exc.status)
            self.refreshes += 1
            self._info = await self._refresh()
            return await self._fetcher.open_range(self._info, start, end)

    async def _produce(self) -> None:
        ranges = self._ranges()
        pending: asyncio.Task[OpenRange] | None = asyncio.ensure_future(self._open(*ranges[0]))
        try:
            for index, (start, end) in enumerate(ranges):
                assert pending is not None
                current = await pending
                pending = None
                try:
                    if self.total is None:
                        self.total = current.total
                        self.content_type = current.content_type
                    if index + 1 < len(ranges):
                        pending = asyncio.ensure_future(self._open(*ranges[index + 1]))
                    await self._relay_range(current, start, min(end, current.end))
                finally:
                    current.close()
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

    async def _relay_range(self, current: OpenRange, start: int, end: int) -> None:
        want = end - start + 1
        got = 0
        try:
            while got < want:
                piece = await current.response.content.readany()
                if not piece:
                    break
                if got + len(piece) > want:
                    piece = piece[: want - got]
                got += len(piece)
                self.bytes_fetched += len(piece)
                await self._queue.put(piece)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(
                f"upstream broke off at byte {start + got}: {exc.__class__.__name__}"
            ) from exc
        if got < want:
            raise UpstreamFailed(f"upstream ended early at byte {start + got} of {end + 1}")

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

    async def pieces(self) -> AsyncIterator[bytes]:
        while (piece := await self.next_piece()) is not None:
            yield piece
