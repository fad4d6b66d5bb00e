"""Which JavaScript runtime yt-dlp is given (``[resolver] js_runtime``).

Since 2025.11 yt-dlp needs one for full YouTube support: without it, it falls
back to a single player client.  ``pip install ytproxy`` brings deno (the
``deno`` extra of yt-dlp) into the interpreter's scripts directory, which is
not always on a systemd unit's PATH, so that place is looked at first.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUNTIME_NAMES", "JsRuntime", "find_js_runtime", "runtime_label", "runtime_version"]

# Executable name → yt-dlp's key in ``js_runtimes``, in the order "auto" tries them.
RUNTIME_NAMES: dict[str, str] = {"deno": "deno", "node": "node", "bun": "bun", "qjs": "quickjs"}
# Names a person may write in ``js_runtime`` (yt-dlp's key or the executable's).
_ALIASES = {**RUNTIME_NAMES, "quickjs": "quickjs", "nodejs": "node"}
_VERSION_TIMEOUT = 10.0


@dataclass(frozen=True)
class JsRuntime:
    """A runtime found on this machine: yt-dlp's name for it and its executable."""

    name: str  # yt-dlp's key: deno, node, bun or quickjs
    path: str

    def ytdlp_option(self) -> dict[str, dict[str, str]]:
        """The ``js_runtimes`` parameter of ``YoutubeDL`` naming only this runtime."""
        return {self.name: {"path": self.path}}


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _next_to_interpreter(executable: str) -> str | None:
    """``executable`` in the running interpreter's scripts directory (a venv's bin/)."""
    for directory in dict.fromkeys((Path(sys.executable).parent, Path(sys.prefix) / "bin")):
        candidate = directory / executable
        if _executable(candidate):
            return str(candidate)
    return None


def _look_up(executable: str) -> str | None:
    return _next_to_interpreter(executable) or shutil.which(executable)


def find_js_runtime(setting: str = "auto") -> JsRuntime | None:
    """The runtime ``setting`` names: ``auto`` (deno next to the interpreter,
    then deno, node, bun, qjs on PATH), a runtime's name, or a path to one."""
    setting = setting.strip()
    if setting in ("", "auto"):
        for executable, name in RUNTIME_NAMES.items():
            path = _look_up(executable)
            if path is not None:
                return JsRuntime(name, path)
        return None
    if setting.lower() in _ALIASES:
        name = _ALIASES[setting.lower()]
        executables = [e for e, n in RUNTIME_NAMES.items() if n == name]
        for executable in executables:
            path = _look_up(executable)
            if path is not None:
                return JsRuntime(name, path)
        return None
    given = Path(setting).expanduser()
    if not _executable(given):
        return None
    runtime = _ALIASES.get(given.name.lower().removesuffix(".exe"))
    if runtime is None:
        # A renamed binary: tell it apart by what it says it is.
        version = (runtime_version(str(given)) or "").lower()
        runtime = next((n for n in ("deno", "bun", "quickjs") if n in version), "node")
    return JsRuntime(runtime, str(given))


@functools.lru_cache(maxsize=16)
def runtime_version(path: str) -> str | None:
    """The first line ``path --version`` prints (deno: ``deno 2.5.6 (...)``), or None.
    Blocking: call it from a thread in the daemon."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True,
                              timeout=_VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def runtime_label(name: object, version: object) -> str:
    """``deno 2.9.8`` from a runtime's name and the first line of its ``--version``
    (``deno 2.9.8 (stable, release, x86_64-unknown-linux-gnu)``, node's ``v22.1.0``)."""
    said = re.sub(r"\s*\(.*\)\s*$", "", version).strip() if isinstance(version, str) else ""
    shown = str(name or "?")
    if not said:
        return f"{shown} (version unknown)"
    return said if said.lower().startswith(shown.lower()) else f"{shown} {said}"
