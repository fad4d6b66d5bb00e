"""The registry of active streams and the counters that /status reads."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActiveStream", "StreamRegistry"]


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

    def as_dict(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started_at, 1e-6)
        return {
            "id": self.track_id,
            "name": self.name,
            "client": self.client,
            "started_at": self.started_at,
            "bytes_sent": self.bytes_sent,
            "rate_bytes_per_sec": round(self.bytes_sent / elapsed),
            "range": self.requested_range,
            "refreshes": self.refreshes,
            "retries": self.retries,
        }


class StreamRegistry:
    def __init__(self) -> None:
        self._active: dict[int, ActiveStream] = {}
        self._keys = itertools.count(1)
        self.served = 0
        self.failed = 0
        self.bytes_total = 0

    def start(self, track_id: str, name: str, client: str, requested_range: str | None
              ) -> ActiveStream:
        stream = ActiveStream(next(self._keys), track_id, name, client, requested_range)
        self._active[stream.key] = stream
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
