"""Where a stream's bytes come from upstream, and how it may get a fresh URL.

``StreamSource`` binds what every reader of one track's stream needs besides
the URL itself: the fetcher, the way to a fresh URL (``refresh``), the retry
policy, the label its log lines carry and how long it waits for a format's
``available_at``.  A relay (``RangeStream``), a size probe (``probe_size``) and
a cache download (``ytproxy.cache.Download``) all take one, so a new setting is
added here once and reaches them all alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ytproxy.config import RetryConfig
from ytproxy.models import StreamInfo
from ytproxy.upstream.fetcher import UpstreamFetcher

__all__ = ["Refresh", "StreamSource"]

# A stream's way to a fresh URL for the same format: (current, player clients
# to avoid) -> fresh.  It may keep state of its own for one stream (see
# ytproxy.library.sources.refresher), so each stream gets its own source.
Refresh = Callable[[StreamInfo, tuple[str, ...]], Awaitable[StreamInfo]]


@dataclass(frozen=True)
class StreamSource:
    """One track's upstream, as a stream reading it needs it."""

    fetcher: UpstreamFetcher
    refresh: Refresh
    policy: RetryConfig = field(default_factory=RetryConfig)
    label: str = "stream"  # what the log lines and the fetcher's per-track figures say
    # The longest wait for a format's available_at before the first request.
    max_available_wait: float = 30.0
