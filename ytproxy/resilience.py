"""Retry timing: full-jitter backoff, ``Retry-After``, and a budget per gap.

A *gap* is a stretch with no progress.  Each gap gets its own budget of
attempts and seconds, so a long stream that hits a few hiccups hours apart
never runs out, while a dead upstream ends the stream in bounded time.
Written by hand (a few lines) because the budget resets on progress, which
retry libraries built around one call do not model.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections import deque

from ytproxy.config import RetryConfig

__all__ = [
    "BreakerOpen",
    "CircuitBreaker",
    "RecentOutcomes",
    "RetryGap",
    "full_jitter",
    "parse_retry_after",
]


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """AWS "full jitter": uniform(0, min(cap, base * 2**attempt))."""
    upper = min(cap, base * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0, upper)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryGap:
    """Attempts and time spent since the first failure after the last progress.

    The clock starts at the first failure, not at the last byte: a listener
    who paused for an hour has not spent an hour of the budget.
    """

    def __init__(self, policy: RetryConfig) -> None:
        self._policy = policy
        self.attempts = 0
        self.started: float | None = None
        # The failures that are the track's own (not the network's), counted
        # and timed from the first of them: a gap held through an outage
        # still gives the track its own budget when upstream is back.
        self._own = 0
        self._own_started: float | None = None
        # The last failure was the network's or a resting dependency's.
        self.held = False

    def progress(self) -> None:
        self.attempts = 0
        self.started = None
        self._own = 0
        self._own_started = None
        self.held = False

    def next_delay(self, retry_after: float | None = None, *,
                   hold: bool = False) -> float | None:
        """How long to wait before the next attempt, or None when the budget is spent.

        ``hold``: this failure is the network's or a resting dependency's, not
        the track's: it is waited out for up to ``hold_budget`` from the gap's
        start, with no count of attempts, and a ``retry_after`` (a breaker's
        rest) is waited whole.  The track's own failures get ``attempts``
        tries within ``gap_budget`` from the first of them.
        """
        policy = self._policy
        now = time.monotonic()
        if self.started is None:
            self.started = now
        self.attempts += 1
        self.held = hold
        if hold:
            left = policy.hold_budget - (now - self.started)
            step = self.attempts
        else:
            self._own += 1
            if self._own_started is None:
                self._own_started = now
            if self._own > policy.attempts:
                return None
            left = policy.gap_budget - (now - self._own_started)
            step = self._own
        if retry_after is not None:
            delay = retry_after if hold else min(retry_after, policy.retry_after_cap)
        else:
            delay = full_jitter(min(step, 30) - 1, policy.base_delay, policy.max_delay)
        if left <= 0 or (delay > left and not hold):
            return None
        return min(delay, left)

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started


class BreakerOpen(Exception):
    """A call was refused because its dependency's breaker is open."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"{name} failed repeatedly; next try in {retry_after:.0f} s")
        self.name = name
        self.retry_after = retry_after


class RecentOutcomes:
    """Successes and failures over the last ``window`` seconds (at most ``limit`` kept)."""

    def __init__(self, window: float = 300.0, limit: int = 1000) -> None:
        self.window = window
        self._events: deque[tuple[float, bool]] = deque(maxlen=limit)

    def add(self, ok: bool) -> None:
        self._events.append((time.monotonic(), ok))

    def counts(self) -> tuple[int, int]:
        """(successes, failures) inside the window."""
        horizon = time.monotonic() - self.window
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()
        good = sum(1 for _, ok in self._events if ok)
        return good, len(self._events) - good

    def success_rate(self) -> float | None:
        good, bad = self.counts()
        return None if good + bad == 0 else good / (good + bad)


class CircuitBreaker:
    """CLOSED → OPEN after ``threshold`` consecutive failures → HALF_OPEN after
    ``reset_after`` seconds, where one trial call decides: success closes it,
    failure opens it again.

    Hand-written (some sixty lines) because callers need what the asyncio
    breaker libraries hide: a gate that only new streams pass through, failures
    recorded from places other than the guarded call (a body that breaks long
    after its request succeeded), and its state for /status.
    """

    def __init__(self, name: str, threshold: int = 5, reset_after: float = 30.0) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_after = reset_after
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.recent = RecentOutcomes()
        self._trial = False
        # Where the failures since the last success came from (see record_failure).
        self._sources: set[str] = set()
        self._unsourced = False

    def retry_after(self) -> float:
        return max(0.0, self.opened_at + self.reset_after - time.monotonic())

    def check(self) -> None:
        """Raise BreakerOpen unless a call may go ahead now."""
        if self.state == "closed":
            return
        if self.state == "open" and self.retry_after() <= 0:
            self.state = "half_open"
            self._trial = False
        if self.state == "half_open" and not self._trial:
            self._trial = True  # this caller is the trial
            return
        raise BreakerOpen(self.name, max(self.retry_after(), 1.0))

    def record_success(self) -> None:
        self.recent.add(True)
        self.state = "closed"
        self.failures = 0
        self._trial = False
        self._sources.clear()
        self._unsourced = False

    def record_failure(self, error: str, source: str | None = None) -> None:
        """A failure of the dependency (``source`` None: it is unwell, e.g. a
        connection refused), or one seen while serving ``source`` (a track):
        those open the breaker only when they come from two sources or more,
        so one broken track never stands for its host."""
        self.recent.add(False)
        self.failures += 1
        self.last_error = error
        self.last_error_at = time.time()
        if source is None:
            self._unsourced = True
        elif len(self._sources) < 2:
            self._sources.add(source)
        for_all = self._unsourced or len(self._sources) >= 2
        if self.state == "half_open" or (self.failures >= self.threshold and for_all):
            self.state = "open"
            self.opened_at = time.monotonic()
            self._trial = False

    def release_trial(self) -> None:
        """A trial that ended with neither verdict (e.g. cancelled) lets another try."""
        self._trial = False

    def as_dict(self) -> dict[str, object]:
        good, bad = self.recent.counts()
        rate = self.recent.success_rate()
        return {
            "state": self.state,
            "success_rate": None if rate is None else round(rate, 3),
            "window_seconds": self.recent.window,
            "recent_successes": good,
            "recent_failures": bad,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "retry_after": round(self.retry_after(), 1) if self.state == "open" else None,
        }
