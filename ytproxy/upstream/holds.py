"""Requests held while a dependency is down, and since when upstream is out of reach.

MPD waits for a response's headers with no timeout of its own, so a request
that cannot be served *yet* (the network is down, a breaker rests a host) is
held rather than answered with an error, which MPD would take as a dead song
and skip.  This registry is what ``/status``, ``/health`` and the log say about
it: one line when holding starts for a reason, one when it ends, not one per
request.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

__all__ = ["Held", "Holds"]

log = logging.getLogger(__name__)


class Held:
    """One held request; ``release`` (idempotent) when it is served or given up."""

    def __init__(self, holds: Holds, reason: str) -> None:
        self._holds: Holds | None = holds
        self.reason = reason

    def release(self) -> None:
        holds, self._holds = self._holds, None
        if holds is not None:
            holds._release(self.reason)


class Holds:
    """Held requests by reason ("host X", "resolver"), and upstream's offline time."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._since: dict[str, float] = {}
        self.offline_since: float | None = None  # unix time of the first unreachable try

    def hold(self, reason: str) -> Held:
        """Count one request held for ``reason`` until ``Held.release``."""
        if not self._held[reason]:
            self._since[reason] = time.time()
            log.warning("holding requests for %s: it is out of reach; MPD waits, and "
                        "streams start or resume when it answers", reason)
        self._held[reason] += 1
        return Held(self, reason)

    def _release(self, reason: str) -> None:
        self._held[reason] -= 1
        if not self._held[reason]:
            del self._held[reason]
            began = self._since.pop(reason, time.time())
            log.warning("holding requests for %s ended after %.1f s", reason,
                        time.time() - began)

    def unreachable(self) -> None:
        """Upstream could not be reached at all (no answer)."""
        if self.offline_since is None:
            self.offline_since = time.time()
            log.warning("upstream: offline: no upstream host answers")

    def reached(self) -> None:
        """Upstream answered."""
        if self.offline_since is not None:
            log.warning("upstream: back online after %.1f s offline",
                        time.time() - self.offline_since)
            self.offline_since = None

    @property
    def count(self) -> int:
        return sum(self._held.values())

    def reasons(self) -> list[str]:
        """What /health says while anything is held or upstream is offline."""
        said = []
        if self.offline_since is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.offline_since))
            said.append(f"offline since {stamp}")
        said += [f"holding {n} request{'s' if n != 1 else ''} for {reason}"
                 for reason, n in sorted(self._held.items())]
        return said

    def as_dict(self) -> dict[str, object]:
        return {"offline_since": self.offline_since, "held": dict(self._held),
                "held_total": self.count}
