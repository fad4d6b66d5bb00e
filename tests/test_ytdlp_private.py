"""Each private piece of yt-dlp that ytproxy.private.ytdlp reads, checked against
the installed yt-dlp: a failure here names the piece that changed."""

from __future__ import annotations

import yt_dlp.version

from ytproxy.private.ytdlp import (
    default_clients,
    innertube_clients,
    loaded_pot_providers,
    needs_gvs_token,
)


def changed(what: str, fn: str) -> str:
    return (f"yt-dlp {yt_dlp.version.__version__} changed {what}: "
            f"ytproxy.private.ytdlp.{fn} must follow it")


def test_the_client_table_names_each_clients_innertube_name() -> None:
    table = innertube_clients()
    assert isinstance(table, dict) and "tv" in table and "web" in table, \
        changed("INNERTUBE_CLIENTS", "innertube_clients")
    name = table["tv"].get("INNERTUBE_CONTEXT", {}).get("client", {}).get("clientName")
    assert name == "TVHTML5", changed("INNERTUBE_CLIENTS[...]['INNERTUBE_CONTEXT']",
                                      "innertube_clients")
    assert isinstance(table["tv"].get("SUPPORTS_COOKIES"), bool), \
        changed("INNERTUBE_CLIENTS[...]['SUPPORTS_COOKIES']", "innertube_clients")


def test_the_default_clients_are_clients_of_the_table() -> None:
    table = innertube_clients()
    known = default_clients()
    for kind in ("plain", "authed", "jsless", "premium"):
        clients = getattr(known, kind)
        assert clients and all(c in table for c in clients), \
            changed(f"YoutubeIE._DEFAULT_*_CLIENTS ({kind})", "default_clients")


def test_the_token_policy_tells_web_from_visionos() -> None:
    table = innertube_clients()
    assert needs_gvs_token(table["web"]), changed("GVS_PO_TOKEN_POLICY", "needs_gvs_token")
    assert not needs_gvs_token(table["visionos"]), \
        changed("GVS_PO_TOKEN_POLICY", "needs_gvs_token")


def test_the_provider_registry_is_read_and_loading_twice_adds_nothing() -> None:
    first = loaded_pot_providers()
    assert isinstance(first, dict), changed("pot._registry._pot_providers",
                                            "loaded_pot_providers")
    assert loaded_pot_providers() == first, changed("all_plugins_loaded", "loaded_pot_providers")
