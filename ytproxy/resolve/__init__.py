"""Resolving a track to a stream URL with yt-dlp: worker processes, rate limit,
breaker, single-flight, the JavaScript runtime and player clients, and the
checks on page URLs people give."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ytproxy.resolve.budget import CallKind
    from ytproxy.resolve.jsruntime import (
        JsRuntime,
        find_js_runtime,
        runtime_label,
        runtime_version,
    )
    from ytproxy.resolve.refusals import refusal_reason
    from ytproxy.resolve.resolver import Resolver, ResolverStats
    from ytproxy.resolve.singleflight import SingleFlight
    from ytproxy.resolve.sources import check_source_url
    from ytproxy.resolve.ytdlp_clients import PlayerClients, clients_in_force, po_token_providers

__all__ = [
    "CallKind",
    "JsRuntime",
    "PlayerClients",
    "Resolver",
    "ResolverStats",
    "SingleFlight",
    "check_source_url",
    "clients_in_force",
    "find_js_runtime",
    "po_token_providers",
    "refusal_reason",
    "runtime_label",
    "runtime_version",
]

# Each name is imported from its module when first asked for, not with the
# package: a yt-dlp worker runs as ``python -m ytproxy.resolve.ytdlp_process``,
# and this package importing the resolver (which imports that module) first
# would make runpy warn on its stderr and the worker start slower.
_MODULE_OF = {
    "CallKind": "budget",
    "JsRuntime": "jsruntime",
    "find_js_runtime": "jsruntime",
    "runtime_label": "jsruntime",
    "runtime_version": "jsruntime",
    "refusal_reason": "refusals",
    "Resolver": "resolver",
    "ResolverStats": "resolver",
    "SingleFlight": "singleflight",
    "check_source_url": "sources",
    "PlayerClients": "ytdlp_clients",
    "clients_in_force": "ytdlp_clients",
    "po_token_providers": "ytdlp_clients",
}


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
