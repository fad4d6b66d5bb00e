"""What the relay reads a listener's bytes from: the ``Body`` interface.

Two bodies have it, and the relay cannot tell them apart: ``RangeStream``
(straight from upstream) and ``ytproxy.cache.CachedBody`` (from a cache file,
waiting for its download where it must).  ``Body`` is that face, checked by
mypy wherever a body is handed to the relay (``ytproxy.playback``).

``PacedBody`` holds what both share: waiting for the first bytes
(``ready``), and the relay's words on its listener
(``pace``, ``hold``, ``filled``, ``room``) kept in one ``Pacing`` state; each
body says in ``_repaced`` what a change means for its reads.
"""

from __future__ import annotations

from typing import Literal, Protocol, Self

from ytproxy.pacing import Pacing

__all__ = ["Body", "Change", "PacedBody"]

# What the relay just told a body (PacedBody._repaced).
Change = Literal["pace", "filled", "room", "hold"]


class Body(Protocol):
    """A listener's bytes ``start..end``, pulled piece by piece by the relay."""

    @property
    def pacing(self) -> Pacing: ...

    @property
    def source(self) -> Literal["cache", "download", "relay"]:
        """Where the bytes come from now (the registry shows it)."""
        ...

    @property
    def percent(self) -> float | None:
        """How much of the track's cache file is in; None for a relay."""
        ...

    # What the stream has been through (the registry shows them).
    @property
    def refreshes(self) -> int: ...

    @property
    def resumes(self) -> int: ...

    @property
    def retry_count(self) -> int: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def aclose(self) -> None: ...

    async def ready(self) -> None:
        """Wait for the first bytes, raising as ``next_piece`` would."""
        ...

    async def next_piece(self) -> bytes | None:
        """The next bytes, or None at the end; raises the failure if there was one."""
        ...

    # The relay's words on its listener (PacedBody).
    @property
    def paced(self) -> bool: ...

    @property
    def slow(self) -> bool: ...

    def pace(self, paced: bool = True) -> None: ...

    def hold(self) -> None: ...

    def filled(self) -> None: ...

    def room(self, nbytes: int) -> None: ...


class PacedBody:
    """The relay's words on its listener, kept in ``self.pacing`` (one
    ``Pacing``, shared with any body this one hands over to).

    A stream starts paced, reading in small bites; a listener that proves fast
    is unpaced (``pace(False)``) and its body reads big pieces, which it wants,
    where one that takes 20 KB/s would leave them all in this process's
    memory.  A listener told slow (``pace()``) gets pieces sized to its
    socket's room (``room``) and nothing read for it while its socket drains
    (``hold``).  ``filled``: its socket was full once, the first gulp is over.
    """

    pacing: Pacing
    _head: bytes | None = None  # the first bytes, read by ready, given by next_piece

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def ready(self) -> None:
        """Wait for the first bytes (raising as ``next_piece`` would); ``next_piece`` gives them."""
        self._head = await self.next_piece()

    async def next_piece(self) -> bytes | None:
        raise NotImplementedError

    @property
    def paced(self) -> bool:
        return self.pacing.paced

    @property
    def slow(self) -> bool:
        return self.pacing.slow

    def pace(self, paced: bool = True) -> None:
        """The relay's word: the listener is slow (paced), or fast (not paced)."""
        pacing = self.pacing
        slow = paced  # told, not assumed as at the start
        if paced != pacing.paced or slow != pacing.slow:
            pacing.paced, pacing.slow = paced, slow
            self._repaced("pace")

    def hold(self) -> None:
        """The relay's word that it waits for its listener's socket to drain."""
        self._repaced("hold")

    def filled(self) -> None:
        """The relay's word that its listener's socket is full."""
        if not self.pacing.filled:
            self.pacing.filled = True
            self._repaced("filled")

    def room(self, nbytes: int) -> None:
        """The relay's word that its listener's socket has room for about ``nbytes``."""
        self.pacing.room = nbytes
        self._repaced("room")

    def _repaced(self, change: Change) -> None:
        """What ``change`` means for this body's reads."""
        raise NotImplementedError
