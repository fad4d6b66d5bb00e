"""``ytproxy cache list|clear|prefetch``: the running daemon's cache, for people
and scripts (``--json``).  The daemon owns the files; this only asks it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ytproxy.cli.client import (
    DaemonNotAnswering,
    daemon_base_url,
    not_answering_message,
    request_json,
)
from ytproxy.cli.status_view import EXIT_NOT_RUNNING, cache_line, format_bytes, format_duration
from ytproxy.config import Config
from ytproxy.errors import InvalidTrackId
from ytproxy.models import TrackId

__all__ = ["run_cache"]

# A prefetch answers when the tracks are on disk: minutes for many.
_PREFETCH_TIMEOUT = 3600.0


def run_cache(config: Config, action: str, ids: Sequence[str], *, as_json: bool) -> int:
    """0 done, 1 the daemon refused or a track failed, 2 bad input, 3 not answering."""
    try:
        for value in ids:
            TrackId(value)
    except InvalidTrackId as exc:
        print(f"ytproxy: {exc}", file=sys.stderr)
        return 2
    base = daemon_base_url(config)
    method, path, body, timeout = {
        "list": ("GET", "/cache", None, 10.0),
        "clear": ("DELETE", "/cache", None, 10.0),
        "prefetch": ("POST", "/cache/prefetch", {"ids": list(ids)}, _PREFETCH_TIMEOUT),
    }[action]
    try:
        status, answer = asyncio.run(request_json(base, method, path, body, timeout=timeout,
                                                  token=config.server.token))
    except DaemonNotAnswering as exc:
        print(not_answering_message(exc), file=sys.stderr)
        return EXIT_NOT_RUNNING
    if status != 200 or not isinstance(answer, dict):
        message = answer.get("message") if isinstance(answer, dict) else None
        print(f"ytproxy: the daemon answered HTTP {status}: {message or answer}",
              file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        sys.stdout.write(_render(action, answer))
    if action == "prefetch":
        results = answer.get("results") or {}
        return 1 if any(str(r).startswith("failed") for r in results.values()) else 0
    return 0


def _render(action: str, answer: dict[str, Any]) -> str:
    if action == "clear":
        kept = answer.get("kept_in_use", 0)
        return (f"dropped {answer.get('dropped', 0)} files"
                + (f"; kept {kept} being played" if kept else "") + "\n")
    if action == "prefetch":
        return "".join(f"{track_id}  {result}\n"
                       for track_id, result in (answer.get("results") or {}).items())
    lines = [f"cache: {cache_line(answer)}"]
    tracks = [t for t in answer.get("tracks") or [] if isinstance(t, dict)]
    if tracks:
        now = time.time()
        rows = [("ID", "SIZE", "ON DISK", "STATE", "LAST PLAYED")]
        for t in tracks:
            state = ("downloading" if t.get("downloading") else
                     "complete" if t.get("complete") else "partial")
            if t.get("in_use"):
                state += ", in use"
            used = t.get("last_used")
            rows.append((str(t.get("id")), format_bytes(t.get("size_bytes")),
                         format_bytes(t.get("held_bytes")), state,
                         format_duration(now - used) + " ago"
                         if isinstance(used, int | float) else "—"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
    return "\n".join(lines) + "\n"
