"""A stream's bytes from upstream, range by range, with every retry, refresh,
failover and exact resume (``RangeStream``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Literal

import aiohttp

from ytproxy.errors import (
    ResolverUnavailable,
    UpstreamFailed,
    UpstreamGone,
    UpstreamHostNotAllowed,
    UpstreamUnavailable,
    UpstreamUnreachable,
    YtproxyError,
)
from ytproxy.models import StreamInfo
from ytproxy.pacing import PACED_READ, Pacing
from ytproxy.resilience import RetryGap
from ytproxy.upstream.body import Change, PacedBody
from ytproxy.upstream.counters import RetryCause, retry_label
from ytproxy.upstream.fetcher import (
    FIRST_RANGE,
    REFRESH_STATUSES,
    TRANSIENT_STATUSES,
    FileChanged,
    OpenRange,
    UpstreamFetcher,
    UpstreamRefused,
    describe,
)
from ytproxy.upstream.holds import Held
from ytproxy.upstream.reads import (
    hold_reads,
    read_piece,
    set_read_limit,
    set_read_size,
    transport_of,
)
from ytproxy.upstream.source import StreamSource

__all__ = ["MAX_CLIENTS_PER_GAP", "RangeStream", "probe_size"]

log = logging.getLogger(__name__)

# After a stream's short first range (FIRST_RANGE, which a listener who leaves
# at once, as MPD does to seek, takes whole), this pause (seconds) lets such a
# listener go before the next range is asked for on its behalf; it is paid once
# per stream, and covered many times over by the first range already sent.
SECOND_RANGE_PAUSE = 0.005
# Ask for the next range when the rest of this one would be relayed within this
# many seconds at the pace the listener has taken it so far: in time to hide the
# request's latency, and a slow listener keeps one upstream connection (and one
# buffer) open most of the time, not two.
PREFETCH_LEAD = 4.0
# Player clients a gap may go through when URLs keep being refused (the first
# one's, then others'): some clients' URLs serve a prefix and then 403 for good.
MAX_CLIENTS_PER_GAP = 3
# A 403 this soon after a format's available_at is still its not-yet (clocks).
AVAILABLE_GRACE = 2.0


class RangeStream(PacedBody):
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
        source: StreamSource,
        info: StreamInfo,
        start: int,
        end: int,
        *,
        listening: Callable[[], bool] | None = None,
        expected_total: int | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        self._source = source
        self._fetcher: UpstreamFetcher = source.fetcher
        # The size of the file the listener was promised: a URL serving another
        # size is another file, never resumed from (FileChanged).
        self._expected_total = expected_total
        self.pacing = pacing if pacing is not None else Pacing()
        self._waited_for: str | None = None  # the URL whose available_at was awaited
        self._gap_clients: list[str] = []  # player clients refused in this gap
        self._held: Held | None = None  # counted in the fetcher's Holds while held
        self._listening = listening
        self._info = info
        self._start = start
        self._end = end
        self._pieces: AsyncGenerator[bytes, None] | None = None
        self._current: OpenRange | None = None
        self._room_read = PACED_READ  # the read size last set for a slow listener's room
        self._refreshed_since_success = False
        # A fresh URL was asked for in this gap because the URL's host refused
        # connections (_reroute): once, then such refusals are held.
        self._rerouted = False
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

    @property
    def source(self) -> Literal["relay"]:
        return "relay"

    @property
    def percent(self) -> None:
        return None

    async def _open(self, start: int, end: int) -> OpenRange:
        await self._until_available()
        # A stream asks the host's breaker until its first range opens: a new
        # stream waits for a resting host (held), a running one tries on.
        opened = await self._fetcher.open_range(self._info, start, end, gate=self._gate,
                                                track=self._source.label)
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
        wait = min(delay + 0.05, self._source.max_available_wait)
        log.info("upstream: %s: the format is available in %.1f s; waiting %.1f s before "
                 "the first request", self._source.label, delay, wait)
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
        """The stream's pieces: range after range, each retried from its first
        missing byte until it is whole (``_recover`` decides how, or gives up)."""
        ranges = self._ranges()
        following: tuple[int, int] | None = next(ranges)
        pending: asyncio.Task[OpenRange] | None = None  # the next range, asked ahead
        read_timeout = self._fetcher.config.read_timeout
        range_timeout = self._fetcher.config.range_timeout
        clock = time.monotonic
        try:
            while following is not None:
                (start, end), following = following, next(ranges, None)
                size = end - start + 1
                opener, pending = pending, None
                pos, gap = start, RetryGap(self._source.policy)
                while pos <= end:
                    current = await self._open_or_recover(opener, pos, end, gap)
                    opener = None
                    if current is None:
                        continue  # recovered: again from pos
                    try:
                        end = self._accept(current, end)
                        stop = min(end, current.end)
                        self._current = current
                        set_read_size(current, self.pacing.read_size(), self.pacing.slow)
                        # Upstream's time for this range; time the listener spends
                        # paused (nobody pulls) does not count.
                        waited, began, first = 0.0, clock(), pos
                        while pos <= stop:
                            before = clock()
                            piece = await read_piece(current, read_timeout, self.pacing.read_size())
                            waited += clock() - before
                            piece = _checked(piece, pos, stop, waited, range_timeout)
                            pos += len(piece)
                            self._took(len(piece), gap)
                            if (pending is None and following is not None
                                    and self._time_to_ask(pos - first, stop - pos, size, began)):
                                pending = self._spawn_open(*following)
                            # Handed over, not kept: this frame waits here while the
                            # relay waits for its listener, and a piece pinned by it
                            # would stay in memory as long.
                            handed = [piece]
                            del piece
                            yield handed.pop()
                    except FileChanged as changed:
                        if self.bytes_fetched == 0 and pos == self._start:
                            raise  # nothing relayed yet: the caller may start over
                        await self._recover(changed, gap, pos)
                    except (aiohttp.ClientError, TimeoutError, UpstreamFailed) as exc:
                        self._fetcher.record_failure(current.host, exc, self._source.label)
                        current.close()  # never reuse a connection that broke
                        await self._recover(exc, gap, pos)
                    finally:
                        self._fetcher.finish(current)
                if start == self._start and pending is None and following is not None:
                    await self._after_first_range(size)
        finally:
            self._unhold()
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    (await pending).close()

    async def _open_or_recover(self, opener: asyncio.Task[OpenRange] | None, pos: int,
                               end: int, gap: RetryGap) -> OpenRange | None:
        """The range from ``pos``, asked ahead (``opener``) or now; None when it
        failed and ``_recover`` says to try again."""
        try:
            # Awaited here, not in a task of its own, when nothing was asked for
            # ahead (a stream's start, a retry): the listener waits for it, and
            # a task costs two turns of the event loop.
            return await (self._open(pos, end) if opener is None else opener)
        except (UpstreamFailed, aiohttp.ClientError, TimeoutError) as exc:
            await self._recover(exc, gap, pos)
            return None

    def _accept(self, current: OpenRange, end: int) -> int:
        """The range's last byte as far as the file goes; FileChanged (the
        response closed) when upstream now serves a file of another size."""
        expected = self._expected_total
        if current.total is not None and expected is not None and current.total != expected:
            current.close()
            raise FileChanged(current.total, expected, current.host)
        if current.total is not None:
            end = min(end, current.total - 1)
            if self.total is None:
                self.total = current.total
                self.content_type = current.content_type
        return end

    def _took(self, nbytes: int, gap: RetryGap) -> None:
        """Bytes came: a gap being retried has resumed, and refreshes start afresh."""
        self.bytes_fetched += nbytes
        self._fetcher.counters.fetched(nbytes)
        if gap.attempts:
            self.resumes += 1
            self._fetcher.counters.resumed()
            gap.progress()
        if self._refreshed_since_success or self._gap_clients or self._rerouted:
            self._refreshed_since_success = False
            self._rerouted = False
            self._gap_clients.clear()

    def _time_to_ask(self, taken: int, left: int, size: int, began: float) -> bool:
        """Whether to ask for the next range now.  Unpaced: during this one, in
        time to hide the request's latency (PREFETCH_LEAD), never before a
        quarter of it is read.  Paced: when needed (the listener has seconds of
        audio in its buffers, and holds one upstream connection, not two)."""
        return (not self.pacing.paced and taken >= size // 4
                and left * (time.monotonic() - began) <= PREFETCH_LEAD * taken)

    async def _after_first_range(self, size: int) -> None:
        """The short first range is relayed: a listener who left at once (MPD
        seeks by reconnecting) needs no second one."""
        if size < self._fetcher.config.chunk_size:
            await asyncio.sleep(SECOND_RANGE_PAUSE)
            if self._listening is not None and not self._listening():
                raise ConnectionResetError("the listener went away")

    async def _recover(self, exc: BaseException, gap: RetryGap, pos: int) -> None:
        """Wait and return to try again from ``pos``, refresh the URL, or give up by raising."""
        if isinstance(exc, UpstreamHostNotAllowed):
            raise exc
        if (isinstance(exc, UpstreamUnreachable | UpstreamUnavailable) and exc.refused
                and not self._rerouted and not self._refreshed_since_success
                and await self._reroute(exc, pos)):
            return
        retry_after: float | None = None
        hold = False
        cause: RetryCause
        if isinstance(exc, UpstreamUnavailable):
            # A new stream meets a resting host: held until the breaker's trial
            # (MPD waits for headers with no timeout of its own).
            retry_after, hold, cause = exc.retry_after, True, "breaker_open"
        elif isinstance(exc, UpstreamUnreachable):
            hold, cause = True, "unreachable"
            # The fetcher leaves a refused connection's to us (a fresh URL first).
            self._fetcher.holds.unreachable()
        elif isinstance(exc, UpstreamRefused) and self._not_yet_available(exc.status):
            # Refused before the format's available_at: not a revoked URL, a wait.
            assert self._info.available_at is not None
            retry_after = max(0.0, self._info.available_at - time.time()) + 0.05
            cause = "not_yet_available"
        elif ((isinstance(exc, UpstreamRefused) and exc.status in REFRESH_STATUSES)
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
        elif isinstance(exc, UpstreamRefused) and exc.status not in TRANSIENT_STATUSES:
            raise exc  # 404 and other 4xx: another try will not help
        elif isinstance(exc, UpstreamRefused):
            retry_after = exc.retry_after
            cause = exc.status
        else:
            cause = _cause_name(exc)
        delay = gap.next_delay(retry_after, hold=hold)
        if delay is None:
            # The one ERROR line is the handler's, which knows the listener's view.
            if gap.held:
                raise UpstreamUnavailable(
                    f"upstream was out of reach for {gap.elapsed:.0f} s "
                    f"(retry.hold_budget; last: {describe(exc)})",
                    retry_after=self._source.policy.base_delay + 30.0) from exc
            raise UpstreamFailed(
                f"upstream kept failing for {gap.elapsed:.1f} s over {gap.attempts - 1} "
                f"retries ({describe(exc)})"
            ) from exc
        self.retries[retry_label(cause)] += 1
        self._fetcher.counters.retried(cause)
        # Nobody to fetch for: stop, and free the listener's slot.
        self._still_listening()
        if not hold:
            log.warning("upstream: %s: attempt %d at byte %d failed (%s); retrying in %.2f s",
                        self._source.label, gap.attempts, pos, describe(exc), delay)
            await asyncio.sleep(delay)
            self._still_listening()
            return
        # Held: said once for all held requests (Holds), not per attempt.
        log.debug("upstream: %s: holding at byte %d (%s); next try in %.2f s",
                  self._source.label, pos, describe(exc), delay)
        reason = _hold_reason(exc)
        if self._held is None or self._held.reason != reason:
            self._unhold()
            self._held = self._fetcher.holds.hold(reason)
        await asyncio.sleep(delay)
        self._still_listening()

    async def _reroute(self, exc: UpstreamFailed, pos: int) -> bool:
        """The URL's host refuses connections (or rests after refusing them):
        nothing listens where it points, and the stream may have moved to
        another host (a stored URL, unexpired, can outlive its googlevideo
        edge).  A fresh URL, as for a 403, once in a gap, before holding as
        offline; False when none came (the resolver is out of reach too, say)."""
        self._rerouted = True
        try:
            await self._new_url(exc, pos)
        except YtproxyError as refresh_error:
            log.info("upstream: %s: no fresh URL for a host that refuses connections (%s)",
                     self._source.label, refresh_error)
            return False
        self._still_listening()  # the resolve took a while
        return True

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
        """A URL was refused (403/410), serves another file or points at a host
        that refuses connections (_reroute): get a new one.

        First the same player client, fresh (the URL may have expired or been
        revoked).  When the fresh URL fails the same way before any byte came,
        the client is the problem (some clients' URLs serve a prefix, then 403
        for good): yt-dlp is asked for the same format from other clients, up
        to MAX_CLIENTS_PER_GAP clients in this gap.  Replaces ``self._info``,
        or raises UpstreamGone (or the resolver's error).
        """
        info = self._info
        client = info.client
        if isinstance(exc, UpstreamRefused):
            what = f"refused (HTTP {exc.status})"
        elif isinstance(exc, FileChanged):
            what = f"changed file ({exc})"
        else:
            what = f"points at {exc.host}, which refuses connections,"
        if not self._refreshed_since_success:
            log.warning("upstream: %s: the stream URL %s at byte %d; refreshing it",
                        self._source.label, what, pos)
            self.retries["refresh"] += 1
            fresh = await self._source.refresh(info, info.avoid_clients)
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
                        "asking yt-dlp for another client (not %s)", self._source.label, client,
                        what, pos, ", ".join(avoid))
            self.retries["failover"] += 1
            self._fetcher.counters.failed_over()
            fresh = await self._source.refresh(info, avoid)
            if fresh.client is not None and fresh.client in avoid:
                raise UpstreamGone(
                    f"yt-dlp offered no player client but {', '.join(avoid)} for this "
                    f"track, whose URLs are refused ({what})") from exc
            log.info("upstream: %s: resuming at byte %d with player client %s", self._source.label,
                     pos, fresh.client or "?")
        self._info = fresh
        self._refreshed_since_success = True
        self.refreshes += 1
        self._fetcher.counters.refreshed()

    async def __aenter__(self) -> RangeStream:
        self._pieces = self._produce()
        return self

    async def aclose(self) -> None:
        """Stop: close the open upstream responses and the pending prefetch."""
        if self._pieces is not None:
            await self._pieces.aclose()

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

    def _repaced(self, change: Change) -> None:
        """A slow listener reads little from upstream (its socket's room), with a
        small kernel receive buffer, and nothing while its socket drains; one
        that keeps up reads up to 256 KiB at a time.  Bytes not read wait in
        the kernel, under TCP flow control."""
        current = self._current
        pacing = self.pacing
        if change == "pace":
            if current is not None:
                set_read_size(current, pacing.read_size(), pacing.slow)
        elif change == "hold":
            if pacing.slow and current is not None:
                hold_reads(current)
        elif change == "filled":
            # Paced reads are PACED_READ from now on, not START_READ.
            if current is not None:
                set_read_limit(transport_of(current), pacing.read_size())
        else:
            # Room-sized reads (PACED_READ to ROOM_READ) go straight into the socket.
            size = pacing.room_read()
            if size != self._room_read:
                self._room_read = size
                if pacing.slow and current is not None:
                    set_read_limit(transport_of(current), size)

    @property
    def retry_count(self) -> int:
        return sum(self.retries.values())


async def probe_size(source: StreamSource, info: StreamInfo
                     ) -> tuple[int, StreamInfo, str | None]:
    """Size, URL and type of a stream from a one-byte range: googlevideo
    throttles HEAD, so never HEAD."""
    async with RangeStream(source, info, 0, 0) as probe:
        await probe.next_piece()
        if probe.total is None:
            raise YtproxyError("upstream did not say how long the stream is")
        return probe.total, probe.info, probe.content_type


def _checked(piece: bytes, pos: int, stop: int, waited: float, limit: float) -> bytes:
    """A piece read at ``pos``, cut to the range; the range's failure if it ended
    early or took over ``limit`` (upstream.range_timeout) of upstream's time."""
    if not piece:
        raise UpstreamFailed(f"upstream ended early at byte {pos} of {stop + 1}")
    if waited > limit:
        raise TimeoutError(f"range took over {limit:g} s of upstream time")
    return piece if len(piece) <= stop - pos + 1 else piece[: stop - pos + 1]


def _hold_reason(exc: BaseException) -> str:
    """What a held request waits for, as /status and the log say it."""
    if isinstance(exc, ResolverUnavailable):
        return "the resolver (yt-dlp)"
    host = exc.host if isinstance(exc, UpstreamFailed) else None
    return f"host {host}" if host else "upstream"


def _cause_name(exc: BaseException) -> RetryCause:
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

