"""HTTP ``Range`` parsing for a single byte range (RFC 9110 §14)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from multidict import MultiMapping

from ytproxy.errors import BadRange

__all__ = ["parse_range", "requested_range"]

# ASCII digits only: \d would also take other scripts' digits, which int() reads.
_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)")
# Offsets with more digits than this are past any end (and int() refuses
# strings over 4300 digits, which a header can hold).
_MAX_DIGITS = 18


def requested_range(headers: MultiMapping[str] | Mapping[str, str], size: int
                    ) -> tuple[int, int] | None:
    """``parse_range`` of a request's headers, with the rules around it (RFC 9110 §13.1.5, §14.2).

    - ``If-Range`` present → None: we send no validator, so none can match
      and the Range must be ignored;
    - more than one ``Range`` line → BadRange: Range is not a list field, so
      two lines are an invalid request.
    """
    if "If-Range" in headers:
        return None
    if isinstance(headers, MultiMapping) and len(headers.getall("Range", [])) > 1:
        raise BadRange("more than one Range header", size)
    return parse_range(headers.get("Range"), size)


def _well_formed(spec: str) -> bool:
    """``N-``, ``N-M`` with M >= N, or ``-K``: an RFC 9110 int-range or suffix-range."""
    match = _SPEC_RE.fullmatch(spec)
    if match is None or not (match.group(1) or match.group(2)):
        return False
    first, last = match.group(1), match.group(2)
    return not (first and last and _offset(last) < _offset(first))


def _shown(header: str) -> str:
    """The header for an error message, cut short (it may be 8 KB)."""
    return repr(header if len(header) <= 80 else header[:80] + "…")


def _offset(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for, or None to send the whole body.

    - no header, another unit, or several well-formed ranges → None (RFC 9110
      lets a server ignore Range; we never send multipart bodies);
    - ``bytes=N-``, ``bytes=N-M``, ``bytes=-K`` → the range, clamped to the size;
    - malformed (anywhere in a list), ``bytes=-0``, or starting at/after the
      end → BadRange (416).
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    # RFC 9110 §5.6.1: empty list elements ("bytes=0-5,") are to be ignored.
    specs = [s.strip() for s in spec.split(",") if s.strip()]
    if not specs:
        raise BadRange(f"malformed Range header {_shown(header)}", size)
    if len(specs) > 1 and all(_well_formed(s) for s in specs):
        return None
    match = _SPEC_RE.fullmatch(specs[0])
    if match is None or len(specs) > 1:
        raise BadRange(f"malformed Range header {_shown(header)}", size)
    first, last = match.group(1), match.group(2)
    if not first and not last:
        raise BadRange(f"malformed Range header {_shown(header)}", size)
    if not first:
        suffix = _offset(last)
        if suffix == 0 or size == 0:
            raise BadRange(f"Range {_shown(header)} asks for no bytes", size)
        return max(0, size - suffix), size - 1
    start = _offset(first)
    end = _offset(last) if last else size - 1
    if last and end < start:
        raise BadRange(f"Range {_shown(header)} ends before it starts", size)
    if start >= size:
        raise BadRange(f"Range {_shown(header)} starts at or past the end ({size} bytes)", size)
    return start, min(end, size - 1)
