"""What one listener gets: ``Playback.listen``.

A track whole in the cache is played from its file, with no yt-dlp call and
no upstream byte.  Otherwise its stream URL is looked up (held while the
resolver is out of reach), its size learned if the store has none, and its
bytes come from the cache file as it downloads, or are relayed from upstream
when there is no cache or no room in it.  A stream whose upstream turns out
to serve another file than the stored size promised is answered, before its
first byte, with the file upstream has (the same-file rule: never a splice of
two).  A listener from byte 0 is a play.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from ytproxy.cache import CacheFile, TrackCache
from ytproxy.config import RetryConfig
from ytproxy.errors import UpstreamFailed
from ytproxy.library.sources import TrackSources
from ytproxy.library.tracks import Tracks
from ytproxy.models import StreamInfo, Track, TrackId
from ytproxy.pacing import Pacing
from ytproxy.playback.holding import held_stream_for
from ytproxy.playback.plays import PlayCounts
from ytproxy.upstream import Body, FileChanged, RangeStream, probe_size

__all__ = ["FALLBACK_MIME", "Answer", "Playback", "RangeFor"]

log = logging.getLogger(__name__)

FALLBACK_MIME = "application/octet-stream"

# The bytes a listener asks for, once the stream's size is known: (first,
# last), or None for all of it.  It may raise (a range past the end).
RangeFor = Callable[[int], tuple[int, int] | None]


@dataclass
class Answer:
    """What the listener gets: the track, its size and type, the range of it
    answered (None: all), and the body, its first bytes in (None when no
    bytes were asked for, or there are none)."""

    track: Track
    size: int
    mime: str
    byte_range: tuple[int, int] | None
    body: Body | None

    @property
    def start(self) -> int:
        return self.byte_range[0] if self.byte_range else 0

    @property
    def end(self) -> int:
        return self.byte_range[1] if self.byte_range else self.size - 1


class Playback:
    """Decides what each listener gets; one per daemon."""

    def __init__(self, *, tracks: Tracks, sources: TrackSources, cache: TrackCache | None,
                 policy: RetryConfig, resolver_pace: float) -> None:
        self._tracks = tracks
        self._sources = sources
        self._cache = cache
        self._policy = policy
        self._resolver_pace = resolver_pace
        self.plays = PlayCounts(tracks)

    @asynccontextmanager
    async def listen(self, track_id: TrackId, *, range_for: RangeFor,
                     listening: Callable[[], bool], with_body: bool = True
                     ) -> AsyncIterator[Answer]:
        """The listener's answer, held open until the block ends (a cache file
        it reads cannot be evicted, cleared or deleted from under it).

        ``range_for`` picks the bytes asked for once the size is known;
        ``listening`` tells whether the listener is still there (nobody to
        hold for or fetch for otherwise: ConnectionResetError); ``with_body``
        False answers without bytes (HEAD).  Raises what keeps the listener
        from its first byte (the block is then not entered)."""
        cache = self._cache
        cached = cache.hit(track_id) if cache is not None else None
        if cached is not None:
            # On disk whole: no yt-dlp call, no upstream byte (also offline).
            # Held open from here on: an eviction, a clear or a deletion
            # meanwhile cannot take the bytes from under this listener.
            assert cache is not None
            try:
                track = await self._tracks.get(track_id)
                if track is not None:
                    mime = cached.mime or track.stream_mime or FALLBACK_MIME
                    answer = await self._open(track, None, cached.size, mime, range_for,
                                              listening, with_body, cached=cached)
                    try:
                        yield answer
                    finally:
                        await _close(answer)
                    return
            finally:
                cache.release(cached)
        track, info = await held_stream_for(
            self._tracks, track_id, policy=self._policy, resolver_pace=self._resolver_pace,
            holds=self._sources.fetcher.holds, listening=listening)
        known_mime = info.mime
        size = info.size
        if size is None:
            size, info, learned_mime = await self._learn_size(track_id, info)
            known_mime = known_mime or learned_mime
        mime = known_mime or FALLBACK_MIME
        try:
            answer = await self._open(track, info, size, mime, range_for, listening, with_body)
        except FileChanged as exc:
            # Nothing was sent yet: the stored size was another file's (or the
            # URL was refreshed to another): answer with the one upstream has.
            log.warning("stream: %s: the stored size (%d bytes) is not upstream's (%d); "
                        "answering with upstream's", track_id, exc.expected, exc.total)
            self._tracks.remember_size_soon(track_id, exc.total)
            answer = await self._open(track, info, exc.total, mime, range_for, listening,
                                      with_body)
        try:
            yield answer
        finally:
            await _close(answer)

    def begun(self, answer: Answer) -> None:
        """The answer is on its way: bytes from byte 0 are a play (a seek, or a
        HEAD, is not)."""
        if answer.body is not None and answer.start == 0:
            self.plays.count(answer.track.id)

    async def drain(self) -> None:
        """Let pending bookkeeping writes finish (called before the store closes)."""
        await self.plays.drain()

    async def _learn_size(self, track_id: TrackId, info: StreamInfo) -> tuple[int, StreamInfo, str]:
        size, info, mime = await probe_size(self._sources.of(track_id), info)
        self._tracks.remember_size_soon(track_id, size)
        return size, info, mime or FALLBACK_MIME

    async def _open(self, track: Track, info: StreamInfo | None, size: int, mime: str,
                    range_for: RangeFor, listening: Callable[[], bool], with_body: bool, *,
                    cached: CacheFile | None = None) -> Answer:
        byte_range = range_for(size)
        answer = Answer(track, size, mime, byte_range, None)
        if not with_body or size == 0:
            return answer
        # The stored track's id (checked when it was stored).
        body = self._body(TrackId(track.id), info, answer.start, answer.end, size, mime, cached,
                          listening)
        await body.__aenter__()
        # Wait for the first bytes before answering, so a failure to start is
        # a clear error rather than a truncated 200.
        try:
            await body.ready()
        except BaseException as exc:
            await body.aclose()
            if isinstance(exc, UpstreamFailed) and not isinstance(exc, FileChanged):
                log.error("stream: %s: giving up before the first byte: %s", track.id, exc)
            raise
        answer.body = body
        return answer

    def _body(self, track_id: TrackId, info: StreamInfo | None, start: int, end: int, size: int,
              mime: str, cached: CacheFile | None, listening: Callable[[], bool]) -> Body:
        """The listener's bytes: from the cache file (downloading it whole if it is
        not), or relayed from upstream when there is no cache or no room in it."""
        cache = self._cache
        late_relay = partial(self._late_relay, track_id, info, size, listening)
        if cache is not None:
            entry = cached
            if entry is None:
                assert info is not None
                cache.record_miss()
                entry = cache.start(track_id, info, size, mime, focus=start)
                if entry is not None:
                    try:
                        return cache.body(entry, start, end, relay=late_relay)
                    finally:
                        cache.release(entry)  # the body holds it now
            else:
                cache.record_hit()  # held by listen until the answer ends
                return cache.body(entry, start, end, relay=late_relay)
        assert info is not None
        return self._relay(track_id, info, start, end, size, listening)

    def _relay(self, track_id: TrackId, info: StreamInfo, start: int, end: int, size: int,
               listening: Callable[[], bool], pacing: Pacing | None = None) -> RangeStream:
        return RangeStream(self._sources.of(track_id), info, start, end, listening=listening,
                           expected_total=size, pacing=pacing)

    async def _late_relay(self, track_id: TrackId, info: StreamInfo | None, size: int,
                          listening: Callable[[], bool], start: int, end: int,
                          pacing: Pacing) -> RangeStream:
        """A relay for the rest of a stream whose cache file cannot be filled."""
        if info is None:
            _, info = await self._tracks.stream_for(track_id)
        return self._relay(track_id, info, start, end, size, listening, pacing)


async def _close(answer: Answer) -> None:
    if answer.body is not None:
        await answer.body.aclose()
