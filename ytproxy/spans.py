"""A span of seconds in its two largest units, for the CLI's views and the
status page, which print them each their own way ("2m05s", "2 min")."""

from __future__ import annotations

__all__ = ["largest_units"]

# (unit's seconds, unit, the next smaller unit's seconds, that unit), largest first.
_UNITS = ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s"))


def largest_units(total: int) -> tuple[int, str, int, str]:
    """``total`` seconds (≥ 0) as (count, unit, count, smaller unit):
    (5, "s", 0, ""), (125, → 2, "m", 5, "s"), (1, "h", 1, "m"), (1, "d", 2, "h")."""
    for size, unit, smaller, smaller_unit in _UNITS:
        if total >= size:
            return total // size, unit, total % size // smaller, smaller_unit
    return total, "s", 0, ""
