"""Whether a listener is slow: judged by the time the relay waited for it.

The relay (``ytproxy.http.streams``) hands each piece to the listener and, when
the listener's socket is full, waits for it to take everything left over.  That
waiting is the listener's time; the time spent waiting for upstream (a stall, a
retry's backoff, a hold, a refreshed URL, a cache file still downloading) is not,
and counts for nothing here: a listener that takes whatever it is offered at
once is fast however slowly upstream offers it.  (Judged by wall time, one 15 s
stall early in a stream made a reader that takes 400 MB/s look slower than
MPD, and kept it paced, in small reads, for the rest of the stream.)

``ListenerPace`` is the decision alone, with its clock injected: the relay tells
it when a hand-over starts and ends, and asks ``slow`` (tell the body to pace)
and ``fast`` (tell it to stop).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["PACED_BELOW", "SLOW_DRAIN", "UNPACE_AFTER", "UNPACE_RATE", "ListenerPace"]

# A listener taking less than this many bytes per second of its own time, whose
# socket is full, is a slow one (RangeStream.pace): 50 times a 160 kbit/s
# track, far below what a reader that does not pace itself takes.
PACED_BELOW = 1_000_000
# Or one whose full socket took longer than this (seconds) to take everything
# left over: a reader that keeps up drains a piece in milliseconds, MPD playing
# takes seconds.  Told at the first full socket, before big reads pile up here.
SLOW_DRAIN = 0.1
# A stream starts paced, and is unpaced once the listener has taken this much
# at this rate of its own time or faster: MPD's first gulp (512 KiB plus socket
# buffers) stays paced, a download does not.
UNPACE_AFTER = 4 * 1_048_576
UNPACE_RATE = 4_000_000


class ListenerPace:
    """The bytes a listener took and the seconds the relay waited for it to.

    ``handing()`` before a piece is written, ``handed(nbytes)`` once it is
    (after the wait for a full socket to drain, if there was one); the time in
    between is the listener's.  Time between ``handed`` and the next
    ``handing`` (the relay waiting for upstream's next piece) is nobody's.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.taken = 0  # bytes handed to the listener
        self.waited = 0.0  # seconds spent handing them over
        self._since = 0.0

    def handing(self) -> None:
        """A piece is about to be written: the listener's time starts."""
        self._since = self._clock()

    def handed(self, nbytes: int) -> float:
        """The piece (``nbytes``) is the listener's: the seconds it took."""
        took = self._clock() - self._since
        self.taken += nbytes
        self.waited += took
        return took

    def slow(self, took: float) -> bool:
        """Whether a listener whose full socket just took ``took`` seconds to
        drain is slow: that drain was long, or its rate so far is low."""
        return took > SLOW_DRAIN or self.taken < PACED_BELOW * self.waited

    @property
    def fast(self) -> bool:
        """Whether the listener has proved it keeps up (its stream may be unpaced)."""
        return self.taken >= UNPACE_AFTER and self.taken >= UNPACE_RATE * self.waited
