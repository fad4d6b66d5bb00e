"""Telling systemd how the daemon is doing: ``sd_notify`` without libsystemd.

With ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a datagram socket;
a leading ``@`` names an abstract one) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``.  The daemon sends ``READY=1`` once it serves,
``STATUS=…`` for ``systemctl status``, ``WATCHDOG=1`` at half the watchdog
period and ``STOPPING=1`` when asked to stop.  Outside systemd every call is
a quiet no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

__all__ = ["Notifier", "notify_address", "sd_notify", "watchdog_interval"]

log = logging.getLogger(__name__)

#: How often ``STATUS=`` is refreshed (only sent when the line changed).
STATUS_EVERY = 10.0


def notify_address() -> str | None:
    """``$NOTIFY_SOCKET`` as a ``socket.connect`` address, or None when unset/unusable."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    if address:
        # systemd >= 254 may also hand out "vsock:CID:PORT", for VMs only.
        log.debug("systemd: NOTIFY_SOCKET=%r is not a unix socket; not notifying", address)
    return None


def _send(address: str, message: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop: a full queue drops this one message.
            sock.setblocking(False)
            sock.connect(address)
            sock.send(message.encode())
    except OSError as exc:
        # The manager went away (or is restarting): not the daemon's problem.
        log.debug("systemd: cannot notify %r: %s", message.split("\n", 1)[0], exc)
        return False
    return True


def sd_notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to ``$NOTIFY_SOCKET``; False if not sent."""
    address = notify_address()
    if address is None:
        return False
    return _send(address, message)


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is for: a
    child that inherited the variables must not ping for its parent.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


Summary = Callable[[], Awaitable[str]]


class Notifier:
    """READY, STATUS, WATCHDOG and STOPPING for one server, from its event loop.

    ``start`` (in a cleanup context, before the sockets are bound) computes a
    first status line and starts the background pings; ``ready`` is called
    once aiohttp has bound the sockets; ``stopping`` when a stop was asked
    for; ``stop`` cancels and awaits the background tasks.
    """

    def __init__(self, address: str | None, watchdog: float | None,
                 *, status_every: float = STATUS_EVERY) -> None:
        self.address = address
        # Pings without a socket to send them to would be pointless.
        self.watchdog = watchdog if address is not None else None
        self.status_every = status_every
        self.status = ""
        self.is_ready = False
        self.is_stopping = False
        self._summary: Summary | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(notify_address(), watchdog_interval())

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        return _send(self.address, message)

    async def start(self, summary: Summary) -> None:
        if not self.enabled:
            return
        self._summary = summary
        self.status = await self._summarize()
        if self.watchdog is not None:
            log.debug("systemd: watchdog ping every %.3g s", self.watchdog)
            self._tasks.append(asyncio.create_task(self._ping(self.watchdog)))
        self._tasks.append(asyncio.create_task(self._refresh_status()))

    def ready(self) -> None:
        """The sockets are bound and the store is open: ``READY=1`` and the first status."""
        if self.enabled and not self.is_ready:
            self.is_ready = True
            self.send(f"READY=1\nSTATUS={self.status}")

    def stopping(self, status: str) -> None:
        if self.enabled and not self.is_stopping:
            self.is_stopping = True
            self.status = _one_line(status)
            self.send(f"STOPPING=1\nSTATUS={_one_line(status)}")

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _summarize(self) -> str:
        assert self._summary is not None
        try:
            return _one_line(await self._summary())
        except Exception as exc:
            return _one_line(f"status unavailable: {exc}")

    async def _ping(self, every: float) -> None:
        # A task on the event loop, not a thread: a stuck loop stops the
        # pings, and systemd restarts the daemon (Restart=on-failure).
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(every)

    async def _refresh_status(self) -> None:
        while True:
            await asyncio.sleep(self.status_every)
            status = await self._summarize()
            if status == self.status or self.is_stopping:
                continue
            self.status = status
            if self.is_ready:
                self.send(f"STATUS={status}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
