"""A listener's stream URL, held for while the resolver is out of reach."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ytproxy.config import RetryConfig
from ytproxy.errors import ResolverUnavailable, YoutubeRefused
from ytproxy.library.tracks import Tracks
from ytproxy.models import StreamInfo, Track, TrackId
from ytproxy.resilience import RetryGap
from ytproxy.upstream.holds import Held, Holds

__all__ = ["held_stream_for"]

log = logging.getLogger(__name__)


async def held_stream_for(tracks: Tracks, track_id: TrackId, *, policy: RetryConfig,
                          resolver_pace: float, holds: Holds, listening: Callable[[], bool]
                          ) -> tuple[Track, StreamInfo]:
    """``Tracks.stream_for``, held while the resolver is out of reach for every
    track (offline, breaker open, YouTube refusing this address) for up to
    ``retry.hold_budget``: MPD waits for headers, and an error would make it
    skip the song.  While YouTube refuses, a request gets one yt-dlp try;
    held, it asks again without calling yt-dlp until the pause ends.

    Looks again at most every ``resolver_pace`` seconds (the resolver
    breaker's reset); ConnectionResetError once nobody is ``listening``."""
    gap = RetryGap(policy)
    held: Held | None = None
    try_while_paused = True
    try:
        while True:
            try:
                return await tracks.stream_for(track_id, try_while_paused=try_while_paused)
            except ResolverUnavailable as exc:
                if not exc.offline:
                    raise
                refused = isinstance(exc, YoutubeRefused)
                if refused:
                    try_while_paused = False  # its one try is spent
                # Probe at the resolver breaker's pace at most (a network
                # failure's own retry_after is a generic 30 s).
                pace = min(exc.retry_after or 0.0, resolver_pace)
                delay = gap.next_delay(pace, hold=True)
                if delay is None:
                    raise
                if not listening():
                    raise ConnectionResetError("the listener went away") from None
                log.debug("stream: %s: holding for the resolver (%s); next look in "
                          "%.1f s", track_id, exc, delay)
                if held is None:
                    held = holds.hold(f"YouTube ({exc.state})"
                                      if isinstance(exc, YoutubeRefused)
                                      else "the resolver (yt-dlp)")
                await asyncio.sleep(delay)
    finally:
        if held is not None:
            held.release()
