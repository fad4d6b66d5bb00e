"""The hour's yt-dlp call budget and YouTube's refusal state: pure, on a hand-moved clock."""

from __future__ import annotations

import pytest

from ytproxy.resolve.budget import WINDOW, CallBudget
from ytproxy.resolve.refusals import RefusalState, refusal_reason


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_background_takes_only_what_is_left_and_waits_in_order() -> None:
    clock = Clock()
    budget = CallBudget(3, 2, clock=clock)
    first, second, third, fourth = (budget.join() for _ in range(4))
    assert budget.waiting == 4
    assert budget.turn(second) is None  # not its turn: the first is ahead
    assert budget.turn(first) == 0.0
    clock.now += 10
    assert budget.turn(second) == 0.0
    clock.now += 10
    assert budget.turn(third) == 0.0
    assert budget.used() == 3 and budget.left() == 0
    # Nothing left: the head waits until the oldest call leaves the hour.
    assert budget.turn(fourth) == pytest.approx(WINDOW - 20)
    clock.now += WINDOW - 20
    assert budget.turn(fourth) == 0.0
    assert budget.waiting == 0 and budget.background_calls == 4


def test_listener_calls_always_go_and_leave_less_for_background() -> None:
    clock = Clock()
    budget = CallBudget(2, 2, clock=clock)
    for _ in range(5):
        budget.take_listener()  # never refused, never waits
    assert budget.used() == 5 and budget.left() == 0
    ticket = budget.join()
    delay = budget.turn(ticket)
    assert delay is not None and delay > 0
    clock.now += WINDOW  # the listeners' calls are an hour old: room again
    assert budget.turn(ticket) == 0.0


def test_a_ticket_that_leaves_lets_the_next_go() -> None:
    budget = CallBudget(5, 1, clock=Clock())
    first, second = budget.join(), budget.join()
    budget.leave(first)
    assert budget.turn(second) == 0.0
    with pytest.raises(ValueError):
        budget.turn(first)


def test_listings_have_their_own_budget() -> None:
    clock = Clock()
    budget = CallBudget(100, 2, clock=clock)
    assert budget.take_listing() == 0.0
    clock.now += 100
    assert budget.take_listing() == 0.0
    assert budget.take_listing() == pytest.approx(WINDOW - 100)
    assert budget.used() == 0  # listings are not video calls
    assert budget.as_dict()["listings_refused"] == 1
    clock.now += WINDOW - 100
    assert budget.take_listing() == 0.0


def test_status_figures() -> None:
    clock = Clock()
    budget = CallBudget(1, 1, clock=clock)
    budget.take_listener()
    budget.join()
    clock.now += 5
    figures = budget.as_dict()
    assert figures["calls_last_hour"] == 1 and figures["max_calls_per_hour"] == 1
    assert figures["waiting_background"] == 1 and figures["oldest_waiting_seconds"] == 5.0
    assert figures["next_free_in"] == pytest.approx(WINDOW - 5)


def test_rate_limit_pauses_then_one_trial_then_resumes() -> None:
    clock = Clock()
    state = RefusalState(60.0, clock=clock)
    assert state.try_now() and state.current() is None
    assert state.refused("rate_limited", "YouTube rate-limits this address until 10:00") is True
    assert state.paused() and state.current() == "rate_limited"
    assert not state.try_now()  # no call for the pause
    clock.now += 30
    assert state.refused("rate_limited", "again") is False  # a listener's try: renewed
    assert state.left() == pytest.approx(60.0)
    clock.now += 60
    # The pause is over: the state is, and calls go one at a time until one succeeds.
    assert state.current() is None and not state.paused()
    assert state.try_now() is True
    assert state.try_now() is False  # the trial runs
    assert state.success() == "rate_limited"
    assert state.try_now() and state.try_now()


def test_bot_check_stays_until_a_call_succeeds() -> None:
    clock = Clock()
    state = RefusalState(60.0, clock=clock)
    state.refused("bot_check", "YouTube asks this address to prove it is not a bot")
    clock.now += 61
    assert state.current() == "bot_check"  # no success yet
    assert state.try_now() is True  # the trial
    state.release_trial()  # it ended with neither verdict (the network)
    assert state.try_now() is True
    state.refused("bot_check", "still")
    assert state.paused() and not state.try_now()
    assert state.success() == "bot_check" and state.current() is None


def test_refusal_reason_says_what_since_and_until() -> None:
    clock = Clock(1_800_000_000.0)
    state = RefusalState(3600.0, clock=clock)
    assert refusal_reason(state.as_dict()) is None
    state.refused("rate_limited", "YouTube rate-limits this address")
    reason = refusal_reason(state.as_dict())
    assert reason is not None
    assert reason.startswith("youtube: rate_limited since ") and ", until " in reason
    with pytest.raises(ValueError):
        state.refused("gone", "not a state")
