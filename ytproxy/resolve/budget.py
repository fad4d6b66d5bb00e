"""How many yt-dlp calls the last hour saw, and whose turn the next one is.

YouTube limits an address to roughly 300 videos an hour (about 2,000 signed
in) and answers more with a refusal that lasts up to an hour (FACTS.md).  A
daemon that looks ahead, prefetches and fills queues calls yt-dlp on its own,
so its calls are counted over a sliding hour:

* a *listener* call (a person is waiting for this track) always goes at once
  and is counted: the budget protects YouTube from the daemon's own bursts,
  and a person plays one track at a time (the burst limit and a refusal state
  still apply to it);
* a *background* call (look-ahead, ``cache prefetch``, autoplay, a sync's
  re-resolves) takes only what the hour has left, and waits its turn (first
  come, first served) when nothing is;
* a *listing* (a search, a mix, a playlist) is counted apart, with its own
  small budget, and is refused rather than queued when that is spent: it is
  one page of many entries, asked by a person or a feature that can say so.

Pure bookkeeping with an injected clock: no sockets, no event loop; the
resolver does the waiting.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import time
from collections import deque
from collections.abc import Callable

__all__ = ["WINDOW", "CallBudget", "CallKind", "Ticket"]

WINDOW = 3600.0  # seconds: the sliding hour


class CallKind(enum.Enum):
    """Who a yt-dlp call is for."""

    LISTENER = "listener"  # someone waits for this track now
    BACKGROUND = "background"  # look-ahead, prefetch, autoplay, sync
    LISTING = "listing"  # a search, a mix, a playlist: one page of entries


class Ticket:
    """A background call's place in line (see ``CallBudget.join``)."""

    __slots__ = ("number", "since")

    def __init__(self, number: int, since: float) -> None:
        self.number = number
        self.since = since


class _Window:
    """Times of the calls inside the last ``WINDOW`` seconds."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._times: deque[float] = deque()

    def used(self) -> int:
        horizon = self._clock() - WINDOW
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        return len(self._times)

    def record(self) -> None:
        self._times.append(self._clock())

    def free_in(self, room_for: int = 1) -> float:
        """Seconds until ``room_for`` more calls fit under the limit (0: now)."""
        used = self.used()
        over = used + room_for - self.limit
        if over <= 0:
            return 0.0
        if over > used:
            return WINDOW  # the limit is below what is asked for: a whole hour
        return max(0.0, self._times[over - 1] + WINDOW - self._clock())


class CallBudget:
    """The hour's yt-dlp calls: videos (listener and background) and listings apart."""

    def __init__(self, per_hour: int, listings_per_hour: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._videos = _Window(per_hour, clock)
        self._listings = _Window(listings_per_hour, clock)
        self._line: deque[Ticket] = deque()
        self._numbers = itertools.count(1)
        self.listener_calls = 0
        self.background_calls = 0
        self.listing_calls = 0
        self.listings_refused = 0

    @property
    def per_hour(self) -> int:
        return self._videos.limit

    @property
    def listings_per_hour(self) -> int:
        return self._listings.limit

    def used(self) -> int:
        """Video calls (listener and background) in the last hour."""
        return self._videos.used()

    def listings_used(self) -> int:
        return self._listings.used()

    def left(self) -> int:
        return max(0, self._videos.limit - self._videos.used())

    @property
    def waiting(self) -> int:
        """Background calls in line for the hour's budget."""
        return len(self._line)

    # -- listener calls ---------------------------------------------------

    def take_listener(self) -> None:
        """Count a call a listener waits for: it never waits for the budget."""
        self._videos.record()
        self.listener_calls += 1

    # -- background calls -------------------------------------------------

    def join(self) -> Ticket:
        """Take a place at the end of the background line."""
        ticket = Ticket(next(self._numbers), self._clock())
        self._line.append(ticket)
        return ticket

    def turn(self, ticket: Ticket) -> float | None:
        """0.0: ``ticket`` has its call now (counted, and out of the line);
        seconds: the head of the line waits that long for room; None: others
        are ahead of it (wait until the line moves)."""
        if not self._line or self._line[0] is not ticket:
            if ticket not in self._line:
                raise ValueError("this ticket has left the line")
            return None
        delay = self._videos.free_in()
        if delay > 0:
            return delay
        self._line.popleft()
        self._videos.record()
        self.background_calls += 1
        return 0.0

    def leave(self, ticket: Ticket) -> None:
        """A ticket given up (its caller was cancelled, or paused): out of line."""
        with contextlib.suppress(ValueError):
            self._line.remove(ticket)

    # -- listings ---------------------------------------------------------

    def take_listing(self) -> float:
        """0.0: a listing may be asked now (counted); else the seconds until one may."""
        delay = self._listings.free_in()
        if delay > 0:
            self.listings_refused += 1
            return delay
        self._listings.record()
        self.listing_calls += 1
        return 0.0

    def as_dict(self) -> dict[str, object]:
        """What /status says about the hour."""
        oldest = self._line[0].since if self._line else None
        return {
            "calls_last_hour": self.used(),
            "max_calls_per_hour": self.per_hour,
            "left": self.left(),
            "waiting_background": self.waiting,
            "oldest_waiting_seconds": None if oldest is None
            else round(self._clock() - oldest, 1),
            "next_free_in": round(self._videos.free_in(), 1) if self.left() == 0 else 0.0,
            "listener_calls": self.listener_calls,
            "background_calls": self.background_calls,
            "listings_last_hour": self.listings_used(),
            "max_listings_per_hour": self.listings_per_hour,
            "listing_calls": self.listing_calls,
            "listings_refused": self.listings_refused,
        }
