"""Pacing: whether a listener is slow, and what its body reads for it meanwhile.

Every threshold of pacing is here: when a listener counts as slow or fast
(``ListenerPace``), and the sizes a body reads in while it is paced, from
upstream (``RangeStream``) or from a cache file (``CachedBody``).  ``Pacing``
is the relay's word on its listener as a body keeps it.

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
from dataclasses import dataclass

__all__ = [
    "FAST_PIECE",
    "PACED_BELOW",
    "PACED_PIECE",
    "PACED_READ",
    "ROOM_PIECE",
    "ROOM_READ",
    "SLOW_DRAIN",
    "SLOW_PIECE",
    "START_PIECE",
    "START_READ",
    "UNPACE_AFTER",
    "UNPACE_RATE",
    "ListenerPace",
    "Pacing",
]

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

# -- upstream reads (RangeStream; ytproxy.upstream.reads applies them) ----------

# A slow listener's stream reads as much as the listener's socket has room for
# (RangeStream.room), from PACED_READ up to this, and nothing while that socket
# drains (RangeStream.hold): each piece goes straight into the kernel, so few
# big pieces (less CPU than many small ones) leave nothing waiting here.
ROOM_READ = 128 * 1024
# What one read from an upstream socket may bring in while the stream is paced
# (see RangeStream.pace); asyncio reads up to 256 KiB at a time, which is right
# for a listener that keeps up and a waste of memory for one that takes 20 KB/s.
# Smaller costs CPU (more reads per second of audio), larger costs memory.
PACED_READ = 8 * 1024
# The same before the listener's socket was first full (RangeStream.filled):
# a player's first gulp (MPD: 512 KiB plus socket buffers) in reads this big,
# not in a hundred small ones (a thousand players joining at once kept a core
# busy with those); then the pieces left over here are PACED_READ.
START_READ = 32 * 1024

# -- cache file pieces (CachedBody) -------------------------------------------

# What the listener's socket does not take at once waits in this process, so a
# listener not yet known to keep up gets pieces of START_PIECE (a thousand
# players' first gulps in 256 KiB pieces held ~300 MB here), one known to be
# slow what its socket has room for (SLOW_PIECE to ROOM_PIECE), one that keeps
# up FAST_PIECE.  A file, unlike upstream, costs nothing per read, so a slow
# listener's pieces stay small: with room-sized pieces of up to 128 KiB a
# thousand listeners on uvloop grew to 160 MB (the socket's room, told in
# bytes, is not what the kernel takes: the rest waited here); with 16 KiB,
# 80 MB and flat (66 MB either way on asyncio's loop).
START_PIECE = 32 * 1024
PACED_PIECE = 8 * 1024
SLOW_PIECE = 4096
ROOM_PIECE = 16 * 1024
FAST_PIECE = 256 * 1024


@dataclass
class Pacing:
    """The relay's word on its listener, as a body keeps it (see ``PacedBody``
    in ``ytproxy.upstream.body``): paced or not, known slow, its socket full
    once, and the room its socket had when last told.  One per listener: a
    cache body's relay after a full disk keeps its body's."""

    paced: bool = True  # a stream starts paced: small reads until it proves fast
    slow: bool = False  # told slow (not assumed, as at the start)
    filled: bool = False  # the listener's socket was full once: the first gulp is over
    room: int | None = None  # bytes its socket had room for, when last told

    def room_read(self) -> int:
        """A slow listener's upstream read: its socket's room, PACED_READ to ROOM_READ."""
        return PACED_READ if self.room is None else max(PACED_READ, min(self.room, ROOM_READ))

    def read_size(self) -> int | None:
        """What one upstream read may bring in (None: as much as the loop reads)."""
        if not self.paced:
            return None
        if self.slow:
            return self.room_read()
        return PACED_READ if self.filled else START_READ


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
