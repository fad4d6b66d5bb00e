"""The one private part of python-mpd2 ytproxy relies on, kept here alone.

python-mpd2 3.1.1's asyncio client re-raises the error that ended a
connection from its idle-result done-callback, which asyncio logs as an ERROR
"Exception in callback" with a traceback on every MPD restart; the idle
consumer has already had that error.  ``QuietMPDClient`` overrides that
callback (name-mangled ``__idle_result``) to skip a failed result.
``tests/test_mpd_private.py`` fails, naming this module, when python-mpd2
changes it.  (Part of ytproxy.private, with aiohttp's pieces.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import mpd.base  # type: ignore[import-untyped]
from mpd.asyncio import MPDClient  # type: ignore[import-untyped]

__all__ = ["IDLE_RESULT", "QuietMPDClient"]

# The mangled name of MPDClient.__idle_result (python-mpd2 3.1.1, mpd/asyncio.py).
IDLE_RESULT = "_MPDClient__idle_result"


class QuietMPDClient(MPDClient):  # type: ignore[misc]
    """python-mpd2's asyncio client, without an ERROR traceback when MPD goes away."""

    def _MPDClient__idle_result(self, result: asyncio.Future[Any]) -> None:
        if result.cancelled():
            return
        exc = result.exception()
        if exc is not None and not isinstance(exc, mpd.base.CommandError):
            return
        super()._MPDClient__idle_result(result)
