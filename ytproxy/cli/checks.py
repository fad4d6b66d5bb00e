"""One line of ``ytproxy doctor``: a check's name, level and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Check", "Level"]

Level = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""
    more: tuple[str, ...] = ()  # extra lines (every config error, say)
