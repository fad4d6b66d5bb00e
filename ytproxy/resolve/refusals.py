"""YouTube's refusals as a state of the resolver, not a failure of a track.

``rate_limited``: YouTube said the address has had too many calls ("This
content isn't available, try again later"; yt-dlp: "rate-limited by YouTube
for up to an hour").  ``bot_check``: "Sign in to confirm you're not a bot",
which stays on an address until something changes (cookies, a PO token).

While a state is on (``pause`` seconds from the refusal), no background call
goes; a listener's request gets one try per hold (``try_now``).  When the
pause ends, one trial call goes, like a half-open breaker's: a success ends
the state (``success``), a refusal starts another pause.  ``rate_limited``
also ends by itself when its pause ends without another refusal; ``bot_check``
only with a success.  Pure: an injected clock (unix time, since the pause's
end is shown as a time of day), no event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ytproxy.resolve.messages import clock_time

__all__ = ["STATES", "RefusalState", "refusal_reason"]

STATES = ("rate_limited", "bot_check")


class RefusalState:
    """What YouTube last refused with, since and until when."""

    def __init__(self, pause: float, *, clock: Callable[[], float] = time.time) -> None:
        self.pause = pause
        self._clock = clock
        self.state: str | None = None  # one of STATES, or None: none
        self.since: float | None = None  # the first refusal of this spell
        self.until: float | None = None  # when the pause after the last one ends
        self.sentence: str | None = None  # what a person is told
        self.detail: str | None = None  # YouTube's words, as yt-dlp gave them
        self.refusals = 0  # refusals in this spell
        self.ended: list[tuple[str, float, float]] = []  # (state, since, ended) last few
        self._trial = False

    def refused(self, state: str, sentence: str, detail: str | None = None) -> bool:
        """YouTube refused with ``state``; True when this starts a spell (a line
        for the log), False when it renews one."""
        if state not in STATES:
            raise ValueError(f"not a refusal state: {state!r}")
        now = self._clock()
        new = self.state is None
        if new or self.state != state:
            self.since = now
            self.refusals = 0
        self.state = state
        self.until = now + self.pause
        self.sentence = sentence
        self.detail = detail
        self.refusals += 1
        self._trial = False
        return new

    def success(self) -> str | None:
        """A call succeeded: the state (if any) ends; its name is returned."""
        ended = self.state
        if ended is not None:
            self.ended = [*self.ended[-4:], (ended, self.since or 0.0, self._clock())]
        self.state = self.since = self.until = self.sentence = self.detail = None
        self.refusals = 0
        self._trial = False
        return ended

    def current(self) -> str | None:
        """The state in force now; a ``rate_limited`` whose pause ended with no
        refusal since is over."""
        if self.state == "rate_limited" and self.left() <= 0:
            # Over, as YouTube said ("up to an hour"); calls still go one at
            # a time until one succeeds (``try_now``), so a line of waiting
            # background calls does not rush in on a limit still there.
            return None
        return self.state

    def paused(self) -> bool:
        """True while calls must not go (other than a listener's one try)."""
        return self.state is not None and self.left() > 0

    def left(self) -> float:
        """Seconds of the pause left (0 when none, or it has ended)."""
        if self.until is None:
            return 0.0
        return max(0.0, self.until - self._clock())

    def try_now(self) -> bool:
        """May a call that is not a listener's one try go now?  After the
        pause, one at a time until one succeeds (the trial)."""
        if self.state is None:
            return True
        if self.left() > 0 or self._trial:
            return False
        self._trial = True
        return True

    @property
    def trial_running(self) -> bool:
        return self._trial

    def release_trial(self) -> None:
        """The trial ended with neither verdict (cancelled, a track's own error)."""
        self._trial = False

    def as_dict(self) -> dict[str, object]:
        state = self.current()
        return {
            "state": state or "ok",
            "since": self.since if state else None,
            "until": self.until if state else None,
            "pause_left_seconds": round(self.left(), 1) if state else None,
            "refusals": self.refusals if state else 0,
            "message": self.sentence if state else None,
            "pause_seconds": self.pause,
        }


def refusal_reason(youtube: Mapping[str, Any]) -> str | None:
    """One line on YouTube's refusal state (``/status``'s resolver.youtube), or None."""
    state = youtube.get("state")
    if state in (None, "ok"):
        return None
    since, until = youtube.get("since"), youtube.get("until")
    when = ""
    if isinstance(since, int | float):
        when += f" since {clock_time(since)}"
    if isinstance(until, int | float):
        when += (f", until {clock_time(until)}" if state == "rate_limited"
                 else f", next try at {clock_time(until)}")
    return f"youtube: {state}{when}: {youtube.get('message') or 'YouTube refuses this address'}"
