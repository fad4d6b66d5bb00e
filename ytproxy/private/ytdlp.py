"""The private parts of yt-dlp ytproxy reads, kept here alone.

A googlevideo URL names the player client that produced it only by InnerTube
name (``c=TVHTML5``), while yt-dlp's ``player_client`` takes its own names
(``tv``, ``tv_samsung``, ...): the table between the two is yt-dlp's
``INNERTUBE_CLIENTS``, which is not public API.  ``ytproxy doctor`` also
reports yt-dlp's default clients (with and without cookies, without a
JavaScript runtime, for Premium), which of them need a PO token, and the
PO-token providers yt-dlp loaded: all private too.  The policy built on them
is ytproxy.resolve.ytdlp_clients'.  ``tests/test_ytdlp_private.py`` fails,
naming the piece, when yt-dlp moves or reshapes one.  Imported only where
yt-dlp is imported anyway (the worker processes, ``doctor``'s threads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DefaultClients", "default_clients", "innertube_clients", "loaded_pot_providers",
           "needs_gvs_token"]


def innertube_clients() -> Mapping[str, Any]:
    """yt-dlp's player clients by its name: each one's ``INNERTUBE_CONTEXT``,
    ``priority``, ``SUPPORTS_COOKIES``, ``GVS_PO_TOKEN_POLICY``."""
    from yt_dlp.extractor.youtube._base import INNERTUBE_CLIENTS

    table: Mapping[str, Any] = INNERTUBE_CLIENTS
    return table


@dataclass(frozen=True)
class DefaultClients:
    """The player clients yt-dlp asks when told none (``YoutubeIE._DEFAULT_*``)."""

    plain: tuple[str, ...]  # without cookies
    authed: tuple[str, ...]  # with cookies
    jsless: tuple[str, ...]  # without a JavaScript runtime
    premium: tuple[str, ...]  # for a YouTube Premium account


def default_clients() -> DefaultClients:
    from yt_dlp.extractor.youtube._video import YoutubeIE

    return DefaultClients(plain=tuple(YoutubeIE._DEFAULT_CLIENTS),
                          authed=tuple(YoutubeIE._DEFAULT_AUTHED_CLIENTS),
                          jsless=tuple(YoutubeIE._DEFAULT_JSLESS_CLIENTS),
                          premium=tuple(YoutubeIE._DEFAULT_PREMIUM_CLIENTS))


def needs_gvs_token(spec: Mapping[str, Any]) -> bool:
    """Whether a client of ``innertube_clients()`` needs a PO token for its
    plain https formats (its ``GVS_PO_TOKEN_POLICY``)."""
    from yt_dlp.extractor.youtube._base import StreamingProtocol

    policy = (spec.get("GVS_PO_TOKEN_POLICY") or {}).get(StreamingProtocol.HTTPS)
    return bool(getattr(policy, "required", False))


def loaded_pot_providers() -> dict[str, str]:
    """The PO-token providers yt-dlp loads (plugins on its plugin path, such as
    bgutil-ytdlp-pot-provider's ``bgutil:http``): name → version.  Their
    registry (``pot._registry._pot_providers``) is private."""
    from yt_dlp.extractor.youtube.pot._registry import _pot_providers
    from yt_dlp.globals import all_plugins_loaded
    from yt_dlp.plugins import load_all_plugins

    if not all_plugins_loaded.value:  # a second load registers each provider again: an error
        load_all_plugins()
    return {str(p.PROVIDER_NAME): str(getattr(p, "PROVIDER_VERSION", "?"))
            for p in _pot_providers.value.values()}
