"""Backoff, Retry-After and the per-gap retry budget."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ytproxy.config import RetryConfig
from ytproxy.resilience import CircuitBreaker, RetryGap, full_jitter, parse_retry_after


@given(attempt=st.integers(0, 60), base=st.floats(0.001, 5), cap=st.floats(0.001, 60))
def test_full_jitter_stays_within_its_envelope(attempt: int, base: float, cap: float) -> None:
    delay = full_jitter(attempt, base, cap, random.Random(attempt))
    assert 0 <= delay <= min(cap, base * 2**attempt) + 1e-9


def test_full_jitter_spreads_out() -> None:
    rng = random.Random(5)
    delays = [full_jitter(4, 0.25, 8.0, rng) for _ in range(200)]
    assert max(delays) > 3.0 and min(delays) < 0.5  # uniform over [0, 4]


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


def test_gap_budget_counts_attempts_and_resets_on_progress() -> None:
    gap = RetryGap(RetryConfig(attempts=3, base_delay=0.0, max_delay=0.0, gap_budget=60))
    assert [gap.next_delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert gap.next_delay() is None
    gap.progress()
    assert gap.next_delay() == 0.0


def test_gap_budget_counts_time_and_caps_retry_after() -> None:
    policy = RetryConfig(attempts=50, base_delay=0.0, max_delay=0.0, gap_budget=10,
                         retry_after_cap=4)
    gap = RetryGap(policy)
    assert gap.next_delay(retry_after=100) == 4  # capped
    assert RetryGap(policy).next_delay(retry_after=3) == 3
    gap._own_started -= 8  # type: ignore[operator]  # eight seconds spent on this track's failures
    assert gap.next_delay(retry_after=3) is None  # would overrun the 10 s budget


def test_a_held_gap_waits_out_the_hold_budget_without_counting_attempts() -> None:
    policy = RetryConfig(attempts=2, base_delay=0.0, max_delay=0.0, gap_budget=10,
                         hold_budget=60, retry_after_cap=4)
    gap = RetryGap(policy)
    for _ in range(10):  # far more than attempts: an outage is not the track's fault
        assert gap.next_delay(hold=True) == 0.0
    assert gap.next_delay(retry_after=30, hold=True) == 30  # a breaker's rest, uncapped
    gap.started -= 55  # type: ignore[operator]
    assert gap.next_delay(retry_after=30, hold=True) == pytest.approx(5, abs=0.1)
    gap.started -= 5  # type: ignore[operator]
    assert gap.next_delay(hold=True) is None and gap.held
    # Upstream back, but the track's own failures still get their own budget.
    fresh = RetryGap(policy)
    fresh.next_delay(hold=True)
    fresh.started -= 50  # type: ignore[operator]
    assert fresh.next_delay() == 0.0 and fresh.next_delay() == 0.0
    assert fresh.next_delay() is None and not fresh.held


def test_one_tracks_failures_never_open_the_breaker() -> None:
    breaker = CircuitBreaker("upstream host h", threshold=3, reset_after=30)
    for _ in range(50):
        breaker.record_failure("HTTP 503", "track-a")
    assert breaker.state == "closed"
    breaker.check()  # a new stream of another track goes ahead


def test_failures_from_two_tracks_open_it() -> None:
    breaker = CircuitBreaker("upstream host h", threshold=3, reset_after=30)
    breaker.record_failure("HTTP 503", "track-a")
    breaker.record_failure("HTTP 503", "track-a")
    assert breaker.state == "closed"
    breaker.record_failure("HTTP 503", "track-b")
    assert breaker.state == "open"


def test_connection_refusals_open_it_alone() -> None:
    breaker = CircuitBreaker("upstream host h", threshold=3, reset_after=30)
    for _ in range(3):
        breaker.record_failure("ConnectionRefusedError")
    assert breaker.state == "open"


def test_a_success_forgets_which_tracks_failed() -> None:
    breaker = CircuitBreaker("upstream host h", threshold=2, reset_after=30)
    breaker.record_failure("HTTP 503", "track-a")
    breaker.record_success()
    breaker.record_failure("HTTP 503", "track-b")
    breaker.record_failure("HTTP 503", "track-b")
    assert breaker.state == "closed"

