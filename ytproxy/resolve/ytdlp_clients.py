"""Which of yt-dlp's YouTube player clients to ask for when some have failed.

A googlevideo URL names the client that produced it only by InnerTube name
(``c=TVHTML5``), while yt-dlp's ``player_client`` takes its own names (``tv``,
``tv_samsung``, ...).  The table between the two is yt-dlp's
``INNERTUBE_CLIENTS``, which is not public API: it, and the other private
pieces ``ytproxy doctor`` reports (the default clients with and without
cookies, which need a PO token, the PO-token providers yt-dlp loaded), are
read through ytproxy.private.ytdlp; this module is the policy built on them.
It runs only in the yt-dlp worker processes and in ``doctor``'s threads,
which import yt-dlp anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ytproxy.private.ytdlp import (
    default_clients,
    innertube_clients,
    loaded_pot_providers,
    needs_gvs_token,
)

__all__ = ["FALLBACK_CLIENTS", "PlayerClients", "clients_in_force", "clients_named",
           "options_avoiding", "po_token_providers"]

# Clients added to the request when some failed, so that excluding the
# defaults' clients still leaves some to ask (yt-dlp 2026.10 defaults to
# tv_samsung, visionos, web; web is SABR-only and yields no URL).  Each is
# asked only when the ones before it are all excluded or fail too.
FALLBACK_CLIENTS = ("tv", "visionos", "mweb", "android_vr", "tv_simply")


def clients_named(innertube_names: Iterable[str]) -> list[str]:
    """yt-dlp's player client names whose InnerTube name (``c=``) is one of these."""
    wanted = {name.upper() for name in innertube_names}
    found: list[str] = []
    for client, spec in innertube_clients().items():
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


@dataclass(frozen=True)
class PlayerClients:
    """The player clients yt-dlp asks YouTube, as one call's options make it."""

    clients: tuple[str, ...]
    # Where they come from: "yt-dlp's defaults with cookies", "ytdlp_options", ...
    source: str
    # Of ``clients``: those whose URLs need a PO token (GVS, for plain https
    # formats), and of those the ones a web PO-token provider (bgutil) serves.
    need_token: tuple[str, ...]
    provider_serves: tuple[str, ...]
    # yt-dlp's defaults for a YouTube Premium account (it tells only per video).
    premium: tuple[str, ...]


def _webpo_client_names() -> frozenset[str]:
    """InnerTube names of the clients a web PO-token provider serves (what
    bgutil-ytdlp-pot-provider declares it supports)."""
    from yt_dlp.extractor.youtube.pot.utils import WEBPO_CLIENTS

    return frozenset(str(name) for name in WEBPO_CLIENTS)


def clients_in_force(options: Mapping[str, Any], *, cookies: bool, js_runtime: bool = True,
                     music: bool = False) -> PlayerClients:
    """Which player clients a call with ``options`` asks, read from yt-dlp's
    own defaults (signed in or not, with or without a JavaScript runtime) and
    the ``player_client`` extractor argument as yt-dlp reads it ("default",
    "all", "-name"); and which of them need a PO token.  ``music``: the source
    is a YouTube Music page (signed in, yt-dlp adds web_music)."""
    known = default_clients()
    table = innertube_clients()
    if cookies:
        defaults, source = known.authed, "yt-dlp's defaults with cookies"
    elif not js_runtime:
        defaults, source = known.jsless, "yt-dlp's defaults without a JavaScript runtime"
    else:
        defaults, source = known.plain, "yt-dlp's defaults without cookies"
    args = options.get("extractor_args")
    youtube = args.get("youtube") if isinstance(args, Mapping) else None
    asked = youtube.get("player_client") if isinstance(youtube, Mapping) else None
    if isinstance(asked, str):
        asked = [part.strip() for part in asked.split(",")]
    allowed = sorted((c for c in table if not c.startswith("_")),
                     key=lambda c: table[c].get("priority", 0), reverse=True)
    requested: list[str] = []
    excluded: list[str] = []
    for name in (str(c).lower() for c in asked or ()):
        if name == "default":
            requested.extend(defaults)
        elif name == "all":
            requested.extend(allowed)
        elif name.startswith("-"):
            excluded.append(name[1:])
        elif name in table and not name.startswith("_"):
            requested.append(name)
    if asked:
        source = "resolver.ytdlp_options extractor_args youtube.player_client"
    if not requested:
        requested.extend(defaults)
    chosen = [c for c in dict.fromkeys(requested) if c not in excluded]
    if cookies and music and "web_music" not in chosen:
        chosen.append("web_music")
    if cookies:  # yt-dlp skips the clients that take no cookies
        chosen = [c for c in chosen if table[c].get("SUPPORTS_COOKIES")]
    webpo = _webpo_client_names()
    need = tuple(c for c in chosen if needs_gvs_token(table[c]))

    def served(client: str) -> bool:
        context = table[client].get("INNERTUBE_CONTEXT", {})
        return str(context.get("client", {}).get("clientName", "")) in webpo

    return PlayerClients(tuple(chosen), source, need, tuple(c for c in need if served(c)),
                         known.premium)


def po_token_providers() -> dict[str, str]:
    """The PO-token providers yt-dlp loads (plugins on its plugin path, such as
    bgutil-ytdlp-pot-provider's ``bgutil:http``): name → version."""
    return loaded_pot_providers()
