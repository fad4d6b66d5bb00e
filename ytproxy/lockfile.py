"""One daemon per store and per cache directory: a lock file held for its life.

Two daemons on one store would each take the other's cache records for stale
ones, and on one cache directory each would delete or rewrite the files the
other serves.  The lock is ``flock(2)`` on a file beside the resource: the
kernel releases it when its holder dies however it dies (``kill -9``, OOM), so
a stale lock file is simply taken over.  The file keeps the holder's pid, for
the message the next daemon gives.  Its descriptor is not inherited (O_CLOEXEC):
a yt-dlp worker outliving a killed daemon must not keep the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ytproxy.errors import AlreadyRunning

__all__ = ["LockFile"]


class LockFile:
    """``path`` locked by this process until ``release``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, path: Path, what: str, setting: str) -> LockFile:
        """Lock ``path`` (made 0600 if missing) for ``what``, or raise
        AlreadyRunning naming the holder's pid, the file and ``setting`` (the
        config key that gives a daemon a resource of its own)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"another ytproxy daemon ({holder}) is using {what}: it holds the lock "
                f"file {path}; stop it first, or give this one its own {setting}") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let the lock go; the file stays (removing it would race a daemon
        opening it to wait for its turn)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
