"""Resolving a track to a stream URL with yt-dlp: worker processes, rate limit,
breaker, single-flight, the JavaScript runtime and player clients, and the
checks on page URLs people give."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ytproxy.lazy import lazy_names

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
    from ytproxy.resolve.ytdlp_options import ytdlp_problems

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
    "ytdlp_problems",
]

# Each name is imported from its module when first asked for (ytproxy.lazy).
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
    "ytdlp_problems": "ytdlp_options",
}


__getattr__ = lazy_names(__name__, _MODULE_OF, globals())
