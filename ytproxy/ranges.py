"""HTTP ``Range`` parsing for a single byte range (RFC 9110 §14)."""

from __future__ import annotations

import re

from ytproxy.errors import BadRange

__all__ = ["parse_range"]

_SPEC_RE = re.compile(r"(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for, or None to send the whole body.

    - no header, another unit, or several ranges → None (RFC 9110 lets a server
      ignore Range; we never send multipart bodies);
    - ``bytes=N-``, ``bytes=N-M``, ``bytes=-K`` → the range, clamped to the size;
    - malformed, or starting at/after the end → BadRange (416).
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) > 1 and all(_SPEC_RE.fullmatch(s) for s in specs):
        return None
    match = _SPEC_RE.fullmatch(specs[0])
    if match is None or len(specs) > 1:
        raise BadRange(f"malformed Range header {header!r}", size)
    first, last = match.group(1), match.group(2)
    if not first and not last:
        raise BadRange(f"malformed Range header {header!r}", size)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise BadRange(f"Range {header!r} asks for no bytes", size)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        raise BadRange(f"Range {header!r} ends before it starts", size)
    if start >= size:
        raise BadRange(f"Range {header!r} starts at or past the end ({size} bytes)", size)
    return start, min(end, size - 1)
