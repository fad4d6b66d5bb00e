"""``ytproxy doctor``'s lines on PO tokens: the player clients yt-dlp asks
YouTube and which of them need a token, and the PO-token provider server
(bgutil-ytdlp-pot-provider's, at ``[resolver] pot_provider_url``).

What yt-dlp itself says (its default clients, their token policies, the
providers it loads) is read from yt-dlp in a thread
(``ytproxy.resolve.ytdlp_clients``); the provider is asked ``GET /ping``, as
its plugin asks it, and its version compared with the plugin's as the plugin
compares them: another major version is refused, any other difference warned of.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from ytproxy.cli.checks import Check
from ytproxy.config import Config

if TYPE_CHECKING:
    from ytproxy.resolve.ytdlp_clients import PlayerClients

__all__ = ["POT_PROVIDER", "YtdlpView", "check_player_clients", "check_pot_provider",
           "read_ytdlp_view"]

# The provider of bgutil-ytdlp-pot-provider that pot_provider_url is for.
POT_PROVIDER = "bgutil:http"
# Where its plugin looks when no base_url is given.
_PLUGIN_DEFAULT_URL = "http://127.0.0.1:4416"
_INSTALL = ("pip install 'ytproxy[pot]' (it brings bgutil-ytdlp-pot-provider) into the "
            "daemon's environment, then restart it (systemctl --user restart ytproxy)")
_START = ("start the provider server (systemctl --user start bgutil-pot-provider, from "
          "systemd/bgutil-pot-provider.service), or fix [resolver] pot_provider_url")


@dataclass(frozen=True)
class YtdlpView:
    """What yt-dlp says about one config's calls; None (and why) where it could not
    be read (yt-dlp moved a private table)."""

    clients: PlayerClients | None
    providers: dict[str, str] | None
    clients_error: str = ""
    providers_error: str = ""


def read_ytdlp_view(config: Config, js_runtime: bool) -> YtdlpView:
    """Blocking (imports yt-dlp and its plugins): run it in a thread."""
    from ytproxy.resolve.ytdlp_clients import clients_in_force, po_token_providers

    r = config.resolver
    clients: PlayerClients | None = None
    providers: dict[str, str] | None = None
    clients_error = providers_error = ""
    try:
        clients = clients_in_force(
            r.ytdlp_options, cookies=bool(r.cookies_file.strip() or r.cookies_from_browser.strip()),
            js_runtime=js_runtime, music="music.youtube.com" in r.source_url_template)
    except Exception as exc:  # say so on its line, check the rest
        clients_error = f"{type(exc).__name__}: {exc}"
    try:
        providers = po_token_providers()
    except Exception as exc:
        providers_error = f"{type(exc).__name__}: {exc}"
    return YtdlpView(clients, providers, clients_error, providers_error)


def _names(clients: tuple[str, ...]) -> str:
    return ", ".join(clients) if clients else "none"


def check_player_clients(config: Config, view: YtdlpView) -> Check:
    clients = view.clients
    if clients is None:
        return Check("player clients", "warn", "cannot tell which clients yt-dlp asks "
                     f"({view.clients_error})", "upgrade ytproxy, or report this: yt-dlp changed")
    detail = f"{_names(clients.clients)} ({clients.source})"
    if "with cookies" in clients.source:
        detail += f"; with YouTube Premium: {_names(clients.premium)}"
    if not clients.need_token:
        return Check("player clients", "ok", f"{detail}; none of them needs a PO token")
    need = (f"{_names(clients.need_token)} "
            f"{'needs' if len(clients.need_token) == 1 else 'need'} a PO token for "
            "their formats")
    unserved = [c for c in clients.need_token if c not in clients.provider_serves]
    if unserved:
        need += f" ({', '.join(unserved)}: no web PO-token provider serves it)"
    provider = bool(config.resolver.pot_provider_url.strip())
    if set(clients.need_token) == set(clients.clients) and not provider:
        return Check("player clients", "warn", f"{detail}; every one of them needs a PO "
                     "token and no provider is set: yt-dlp may find no formats",
                     "set [resolver] pot_provider_url (see the pot provider line), or "
                     "ask other clients in [resolver.ytdlp_options]")
    return Check("player clients", "ok", f"{detail}; {need}")


async def check_pot_provider(config: Config, view: YtdlpView, seconds: float) -> Check:
    name = "pot provider"
    url = config.resolver.pot_provider_url.strip().rstrip("/")
    if view.providers is None:
        return Check(name, "warn", "cannot tell which PO-token providers yt-dlp loads "
                     f"({view.providers_error})", "upgrade ytproxy, or report this: yt-dlp "
                     "changed")
    plugin = view.providers.get(POT_PROVIDER)
    affects = _affects(view.clients)
    if not url:
        also = (f"; the installed plugin {plugin} asks {_PLUGIN_DEFAULT_URL} by itself"
                if plugin else "")
        return Check(name, "skip", "[resolver] pot_provider_url is not set: a PO-token "
                     "provider gives the player clients that need one a token for their "
                     f"URLs; one {affects}{also}")
    if plugin is None:
        return Check(name, "fail", f"resolver.pot_provider_url is {url}, but yt-dlp loads no "
                     f"{POT_PROVIDER} PO-token provider plugin", _INSTALL)
    try:
        status, body = await _ping(url, seconds)
    except _NoAnswer as exc:
        return Check(name, "fail", f"nothing answers at {url} ({exc.reason})", _START)
    version = body.get("version") if isinstance(body, dict) else None
    if status != 200 or not isinstance(version, str) or not version:
        return Check(name, "fail", f"{url}/ping answered HTTP {status} without a version: "
                     "not a bgutil PO-token provider server, or a very old one",
                     f"{_START}; run the server of the plugin's version ({plugin})")
    uptime = body.get("server_uptime") if isinstance(body, dict) else None
    up = f", up {_duration(uptime)}" if isinstance(uptime, int | float) else ""
    said = f"bgutil provider {version} at {url}{up}, plugin {plugin}"
    same = (f"run both at one version: the server of version {plugin} (its container image "
            f"tag or a checkout of tag {plugin}), or pip install "
            f"'bgutil-ytdlp-pot-provider=={version}'")
    if version.split(".", 1)[0] != plugin.split(".", 1)[0]:
        return Check(name, "fail", f"{said}: the plugin refuses a server of another major "
                     "version, so yt-dlp gets no PO tokens", same)
    if version != plugin:
        return Check(name, "warn", f"{said}: the versions differ (the plugin warns of it, "
                     f"and its authors ask for the same version); it {affects}", same)
    return Check(name, "ok", f"{said}; it {affects}")


def _affects(clients: PlayerClients | None) -> str:
    """Which of the clients in force a provider gives tokens to."""
    if clients is None:
        return "serves clients yt-dlp cannot tell"
    if not clients.provider_serves:
        return "would serve none of the clients in force"
    return f"serves {_names(clients.provider_serves)} of the clients in force"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


class _NoAnswer(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _ping(url: str, seconds: float) -> tuple[int, Any]:
    """``GET {url}/ping`` as the plugin sends it (never through a proxy)."""
    timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=min(seconds, 2.0))
    try:
        async with (aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                    session.get(f"{url}/ping") as resp):
            text = await resp.text()
            status = resp.status
    except aiohttp.ClientConnectorError as exc:
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else str(exc.os_error)
        raise _NoAnswer(reason.lower()) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = (f"no answer within {seconds:g} s" if isinstance(exc, TimeoutError)
                  else str(exc) or type(exc).__name__)
        raise _NoAnswer(reason) from exc
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, None
