"""A track's upstream as its streams read it: ``StreamSource``s bound to ``Tracks``.

Every reader of a track's stream (a listener's relay, a size probe, a cache
download) gets its ``StreamSource`` from ``TrackSources.of``: the settings are
read here once, and the way to a fresh URL is the tracks service's.
"""

from __future__ import annotations

from ytproxy.config import RetryConfig
from ytproxy.errors import YoutubeRefused
from ytproxy.library.tracks import Tracks
from ytproxy.models import StreamInfo
from ytproxy.resolve.budget import CallKind
from ytproxy.upstream import Refresh, StreamSource, UpstreamFetcher

__all__ = ["TrackSources", "refresher"]


def refresher(tracks: Tracks, track_id: str, kind: CallKind = CallKind.LISTENER) -> Refresh:
    """A stream's way to a fresh URL for the same format, avoiding failed clients.

    While YouTube refuses this address, a stream gets one yt-dlp try: held, it
    asks again without a call until the pause ends (``Resolver.resolve``)."""
    tried = False  # this stream's one try during a refusal is spent

    async def refresh(current: StreamInfo, avoid_clients: tuple[str, ...]) -> StreamInfo:
        nonlocal tried
        try:
            fresh = await tracks.refresh(track_id, format_id=current.format_id,
                                         avoid_clients=avoid_clients, kind=kind,
                                         try_while_paused=not tried)
        except YoutubeRefused:
            tried = True
            raise
        tried = False
        return fresh

    return refresh


class TrackSources:
    """Makes each stream of a track its own ``StreamSource`` (its refresher
    keeps the stream's one try during a refusal)."""

    def __init__(self, fetcher: UpstreamFetcher, tracks: Tracks, *, policy: RetryConfig,
                 max_available_wait: float) -> None:
        self.fetcher = fetcher
        self._tracks = tracks
        self._policy = policy
        self._max_available_wait = max_available_wait

    def of(self, track_id: str, kind: CallKind = CallKind.LISTENER) -> StreamSource:
        """A new stream's source for ``track_id``; ``kind`` is whose refreshes
        they are (a listener's, or background work's, ytproxy.resolve.budget)."""
        return StreamSource(self.fetcher, refresher(self._tracks, track_id, kind),
                            policy=self._policy, label=track_id,
                            max_available_wait=self._max_available_wait)
