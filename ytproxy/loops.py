"""Which event loop the daemon runs on: ``server.event_loop``.

uvloop costs less CPU per wake-up than asyncio's own loop (``python -m bench``:
1,000 slow listeners at 4-9 % of a core against 10-11 %; a 200 MB relay
1.1-1.2x as fast, the kernel's copying being most of its cost), so ``auto``
takes it where it is installed (it is a dependency on the platforms it
supports) and asyncio's loop elsewhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

__all__ = ["EVENT_LOOPS", "loop_factory", "loop_name", "resolve_event_loop"]

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def resolve_event_loop(setting: str) -> str:
    """``uvloop`` or ``asyncio`` for a ``server.event_loop`` setting; raises
    LookupError for ``uvloop`` where it is not installed."""
    setting = setting.lower()
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if setting == "uvloop" and not have_uvloop:
        raise LookupError('server.event_loop is "uvloop", but uvloop is not installed '
                          '(pip install uvloop, or set it to "auto" or "asyncio")')
    if setting == "auto":
        return "uvloop" if have_uvloop else "asyncio"
    return setting


def loop_factory(setting: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new event loop of the kind ``setting`` names."""
    if resolve_event_loop(setting) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: what the running (or given) loop is."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
