"""A package's names, imported from their modules when first asked for.

Used where importing the names with the package would cost: ``ytproxy.resolve``
(a yt-dlp worker runs as ``python -m ytproxy.resolve.ytdlp_process``, and the
package importing the resolver first would make runpy warn and the worker start
slower) and ``ytproxy.private`` (its ``ytdlp`` part imports yt-dlp, which the
daemon itself never loads).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, module_of: Mapping[str, str],
               namespace: dict[str, Any]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``name`` comes from the
    submodule ``module_of[name]`` and is then bound in ``namespace``."""

    def get(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return get
