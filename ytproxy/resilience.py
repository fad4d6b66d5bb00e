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
from dataclasses import dataclass

__all__ = ["RetryGap", "RetryPolicy", "full_jitter", "parse_retry_after"]


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


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 8.0
    gap_budget: float = 30.0
    retry_after_cap: float = 15.0

    def new_gap(self) -> RetryGap:
        return RetryGap(self)


class RetryGap:
    """Attempts and time spent since the last progress."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self.attempts = 0
        self.started = time.monotonic()

    def progress(self) -> None:
        self.attempts = 0
        self.started = time.monotonic()

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """How long to wait before the next attempt, or None when the budget is spent."""
        policy = self._policy
        self.attempts += 1
        if self.attempts > policy.attempts:
            return None
        if retry_after is not None:
            delay = min(retry_after, policy.retry_after_cap)
        else:
            delay = full_jitter(self.attempts - 1, policy.base_delay, policy.max_delay)
        if time.monotonic() + delay - self.started > policy.gap_budget:
            return None
        return delay

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
