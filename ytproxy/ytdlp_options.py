"""What ytproxy knows of yt-dlp's parameters without importing yt-dlp.

Which ``YoutubeDL`` parameters ytproxy sets itself (a person's
``[resolver] ytdlp_options`` may not), the extractor arguments of the
PO-token provider plugin, the browsers ``cookiesfrombrowser`` can read and
the shape of that option.  The config loader checks ``[resolver]`` with
:func:`ytdlp_problems`; the resolver builds yt-dlp's parameters with the rest.
Light on purpose (no import of yt-dlp or of the rest of ytproxy): the config
loader and ``check-config`` use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["BROWSERS", "OWNED_YTDLP_OPTIONS", "POT_PROVIDER_ARGS", "browser_cookie_spec",
           "with_extractor_arg", "ytdlp_problems"]

# yt-dlp parameters ytproxy sets itself, with what to use instead.
OWNED_YTDLP_OPTIONS: dict[str, str] = {
    "format": "use resolver.format",
    "quiet": "ytproxy keeps yt-dlp quiet; its messages reach the log at server.log_level = "
             '"debug"',
    "noplaylist": "ytproxy resolves one track per id (add playlists with `ytproxy import`)",
    "extract_flat": "ytproxy lists playlists flat itself (`ytproxy import`)",
    "logger": 'yt-dlp\'s messages go to the daemon\'s log (server.log_level = "debug")',
    "proxy": "use upstream.proxy (or HTTP(S)_PROXY)",
    "cookiefile": "use resolver.cookies_file",
    "cookies": "use resolver.cookies_file",
    "cookiesfrombrowser": "use resolver.cookies_from_browser",
    "js_runtimes": "use resolver.js_runtime",
}
# The extractor_args table of bgutil-ytdlp-pot-provider's HTTP provider, whose
# base_url is resolver.pot_provider_url.
POT_PROVIDER_ARGS = "youtubepot-bgutilhttp"
# yt-dlp's SUPPORTED_BROWSERS (not imported here: yt-dlp is heavy).
BROWSERS = frozenset({"brave", "chrome", "chromium", "edge", "firefox", "opera", "safari",
                      "vivaldi", "whale"})
_BROWSER_SPEC = re.compile(r"""(?x)
    (?P<name>[^+:]+)
    (?:\s*\+\s*(?P<keyring>[^:]+))?
    (?:\s*:\s*(?!:)(?P<profile>.+?))?
    (?:\s*::\s*(?P<container>.+))?""")


def browser_cookie_spec(
    value: str,
) -> tuple[str, str | None, str | None, str | None] | None:
    """yt-dlp's ``cookiesfrombrowser`` (browser, profile, keyring, container) for
    ``BROWSER[+KEYRING][:PROFILE][::CONTAINER]`` as its command line takes it;
    None for an empty value.  Raises ValueError saying what is wrong."""
    if not value.strip():
        return None
    match = _BROWSER_SPEC.fullmatch(value.strip())
    if match is None or match.group("name").strip().lower() not in BROWSERS:
        raise ValueError(f"must name one of {', '.join(sorted(BROWSERS))}, optionally as "
                         "BROWSER[+KEYRING][:PROFILE][::CONTAINER]")
    name, keyring, profile, container = match.group("name", "keyring", "profile", "container")
    return (name.strip().lower(), profile, keyring.upper() if keyring else None, container)


def with_extractor_arg(extractor_args: object, ie_key: str, key: str,
                       value: str) -> dict[str, Any]:
    """yt-dlp's ``extractor_args`` (the person's, from ytdlp_options) with
    ``ie_key:key=value`` added; every other argument, of this extractor and of
    others, kept.  Copies: the config's table is not changed."""
    merged = {k: dict(v) if isinstance(v, dict) else v
              for k, v in (extractor_args.items() if isinstance(extractor_args, dict) else ())}
    table = merged.get(ie_key)
    merged[ie_key] = {**(table if isinstance(table, dict) else {}), key: [value]}
    return merged


def ytdlp_problems(*, cookies_from_browser: str, ytdlp_options: Mapping[str, Any],
                   pot_provider_url: str) -> list[tuple[str, str]]:
    """What is wrong with the ``[resolver]`` keys that are handed to yt-dlp, each as
    (the key a person set, a sentence naming it)."""
    found: list[tuple[str, str]] = []
    try:
        browser_cookie_spec(cookies_from_browser)
    except ValueError as exc:
        found.append(("cookies_from_browser", f"resolver.cookies_from_browser {exc}, "
                      f"got {cookies_from_browser!r}"))
    for key in ytdlp_options:
        if key in OWNED_YTDLP_OPTIONS:
            found.append(("ytdlp_options", f"resolver.ytdlp_options.{key} is set by ytproxy; "
                          f"{OWNED_YTDLP_OPTIONS[key]}"))
    found.extend(_pot_provider_problems(pot_provider_url, ytdlp_options))
    return found


def _pot_provider_problems(pot_provider_url: str,
                           ytdlp_options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """resolver.pot_provider_url: empty, or the http(s) URL of a provider server;
    and not also given as base_url in resolver.ytdlp_options (one place says it)."""
    found: list[tuple[str, str]] = []
    url = pot_provider_url.strip()
    if url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or parts.query or parts.fragment):
            found.append(("pot_provider_url", "resolver.pot_provider_url must be the http:// "
                          "or https:// URL of a PO-token provider server, such as "
                          f'"http://127.0.0.1:4416", or empty for none; got {url!r}'))
    args = ytdlp_options.get("extractor_args")
    table = args.get(POT_PROVIDER_ARGS) if isinstance(args, Mapping) else None
    if url and isinstance(table, Mapping) and "base_url" in table:
        found.append(("ytdlp_options", "resolver.ytdlp_options"
                      f".extractor_args.{POT_PROVIDER_ARGS}.base_url and "
                      "resolver.pot_provider_url are both set; keep resolver.pot_provider_url"))
    return found
