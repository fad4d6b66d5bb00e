"""Which of yt-dlp's YouTube player clients to ask for when some have failed.

A googlevideo URL names the client that produced it only by InnerTube name
(``c=TVHTML5``), while yt-dlp's ``player_client`` takes its own names (``tv``,
``tv_samsung``, ...).  The table between the two is yt-dlp's
``INNERTUBE_CLIENTS``, which is not public API: this module is the one place
that reads it (tests/test_ytdlp_options.py fails when yt-dlp moves or reshapes it), and
it runs only in the yt-dlp worker processes, which import yt-dlp anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FALLBACK_CLIENTS", "clients_named", "options_avoiding"]

# Clients added to the request when some failed, so that excluding the
# defaults' clients still leaves some to ask (yt-dlp 2026.10 defaults to
# tv_samsung, visionos, web; web is SABR-only and yields no URL).  Each is
# asked only when the ones before it are all excluded or fail too.
FALLBACK_CLIENTS = ("tv", "visionos", "mweb", "android_vr", "tv_simply")


def _innertube_clients() -> Mapping[str, Any]:
    from yt_dlp.extractor.youtube._base import INNERTUBE_CLIENTS  # private: see above

    table: Mapping[str, Any] = INNERTUBE_CLIENTS
    return table


def clients_named(innertube_names: Iterable[str]) -> list[str]:
    """yt-dlp's player client names whose InnerTube name (``c=``) is one of these."""
    wanted = {name.upper() for name in innertube_names}
    found: list[str] = []
    for client, spec in _innertube_clients().items():
        if client.startswith("_"):
            continue
        context = spec.get("INNERTUBE_CONTEXT", {}) if isinstance(spec, Mapping) else {}
        name = context.get("client", {}).get("clientName") if isinstance(context, Mapping) else None
        if isinstance(name, str) and name.upper() in wanted:
            found.append(client)
    return found


def options_avoiding(options: Mapping[str, Any], innertube_names: Iterable[str]) -> dict[str, Any]:
    """``options`` (YoutubeDL parameters) asking YouTube's extractor for player
    clients other than those whose URLs carry one of ``innertube_names``."""
    avoided = clients_named(innertube_names)
    if not avoided:
        return dict(options)
    extractor_args = {k: dict(v) if isinstance(v, Mapping) else v
                      for k, v in (options.get("extractor_args") or {}).items()}
    youtube = extractor_args.setdefault("youtube", {})
    requested = youtube.get("player_client") or ["default"]
    if isinstance(requested, str):
        requested = [requested]
    kept = [c for c in requested if c.lstrip("-") not in avoided or c.startswith("-")]
    extra = [c for c in FALLBACK_CLIENTS if c not in avoided and c not in kept]
    youtube["player_client"] = [*kept, *extra, *(f"-{c}" for c in avoided)]
    return {**options, "extractor_args": extractor_args}
