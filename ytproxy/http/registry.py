"""The registry of active streams and the counters that /status reads."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActiveStream", "StreamRegistry"]

_RATE_WINDOW = 5.0


@dataclass
class ActiveStream:
    key: int
    track_id: str
    name: str
    client: str
    requested_range: str | None
    started_at: float = field(default_factory=time.time)
    bytes_sent: int = 0
    refreshes: int = 0
    retries: int = 0
    resumes: int = 0
    # Where the bytes come from: ("cache" | "download" | "relay", percent on disk).
    source: Callable[[], tuple[str, float | None]] | None = None
    # (monotonic time, bytes_sent) a few seconds back, for the current rate.
    _mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))

    def current_rate(self) -> float:
        """Bytes per second since a mark at most a few seconds old (MPD pauses and
        bursts, so the average since the start says little)."""
        now = time.monotonic()
        then, sent = self._mark
        rate = (self.bytes_sent - sent) / max(now - then, 1e-3)
        if now - then >= _RATE_WINDOW:
            self._mark = (now, self.bytes_sent)
        return rate

    def as_dict(self) -> dict[str, Any]:
        source, percent = self.source() if self.source is not None else ("relay", None)
        return {
            "source": source,
            "downloaded_percent": percent,
            "id": self.track_id,
            "name": self.name,
            "client": self.client,
            "started_at": self.started_at,
            "bytes_sent": self.bytes_sent,
            "rate_bytes_per_sec": round(self.current_rate()),
            "range": self.requested_range,
            "refreshes": self.refreshes,
            "retries": self.retries,
            "resumes": self.resumes,
        }


class StreamRegistry:
    def __init__(self) -> None:
        self._active: dict[int, ActiveStream] = {}
        self._keys = itertools.count(1)
        self.served = 0
        self.failed = 0
        self.bytes_total = 0
        self.started_total = 0

    def start(self, track_id: str, name: str, client: str, requested_range: str | None
              ) -> ActiveStream:
        stream = ActiveStream(next(self._keys), track_id, name, client, requested_range)
        self._active[stream.key] = stream
        self.started_total += 1
        return stream

    def finish(self, stream: ActiveStream, *, ok: bool) -> None:
        if self._active.pop(stream.key, None) is None:
            return
        self.bytes_total += stream.bytes_sent
        if ok:
            self.served += 1
        else:
            self.failed += 1

    def active(self) -> list[ActiveStream]:
        return list(self._active.values())

    def bytes_sent(self) -> int:
        """Every byte relayed so far, streams still running included."""
        return self.bytes_total + sum(s.bytes_sent for s in self._active.values())
