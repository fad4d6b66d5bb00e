"""yt-dlp's words, turned into one sentence a person can act on.

yt-dlp's messages are written for its own command line: long, full of flags
ytproxy does not have (``--cookies``, ``-t sleep``), and a network failure
names itself twice (``... (caused by TransportError("..."))``).  ``describe``
gives the kind of failure and one sentence saying what happened and what to
do; the raw text stays at DEBUG and in ``detail`` (JSON bodies, ``--json``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

__all__ = ["KINDS", "Described", "clock_time", "describe", "first_line"]

_UPGRADE = "pip install -U 'yt-dlp[default,deno]'"
_FIX_BOT = ("add YouTube cookies ([resolver] cookies_file or cookies_from_browser) or "
            "a PO-token provider (pip install 'ytproxy[pot]')")

# Each kind's phrases, lower case, looked for in this order (the first kind
# that matches wins: a rate limit's text also says "isn't available").
_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limited", ("rate-limited by youtube", "this content isn't available, try again later",
                      "this content isn\u2019t available, try again later")),
    ("bot_check", ("confirm you're not a bot", "confirm you\u2019re not a bot",
                   "confirm that you're not a bot", "not a robot")),
    ("age_restricted", ("confirm your age", "age-restricted", "age restricted",
                        "inappropriate for some users")),
    ("private", ("private video", "this video is private")),
    ("unavailable", ("video unavailable", "this video has been removed",
                     "this video is not available", "this video is no longer available",
                     "account associated with this video has been terminated",
                     "this video is unavailable")),
    ("too_old", ("please report this issue", "nsig extraction failed",
                 "signature extraction failed", "unable to extract", "requested format is "
                 "not available", "confirm you are on the latest version")),
    ("network", ("failed to resolve", "name or service not known",
                 "temporary failure in name resolution", "nodename nor servname",
                 "no address associated with hostname", "network is unreachable",
                 "no route to host", "connection refused", "connection reset",
                 "remote end closed connection", "timed out", "urlopen error",
                 "unable to connect to proxy")),
    ("sign_in", ("sign in to", "login required", "members-only", "join this channel")),
)
KINDS = (*(kind for kind, _ in _PHRASES), "other")
_CAUSED_BY = re.compile(r"\s*\(caused by .*\)\s*$", re.DOTALL)
_HOST = re.compile(r"Failed to resolve '([^']+)'")


@dataclass(frozen=True)
class Described:
    kind: str  # one of KINDS
    sentence: str  # what happened and what to do, for a person


def clock_time(when: float) -> str:
    """``HH:MM`` local time (the day too when it is not today)."""
    stamp = time.localtime(when)
    if time.strftime("%Y-%m-%d", stamp) == time.strftime("%Y-%m-%d", time.localtime()):
        return time.strftime("%H:%M", stamp)
    return time.strftime("%Y-%m-%d %H:%M", stamp)


def first_line(text: str) -> str:
    """yt-dlp's message without ``ERROR:``, its ``(caused by ...)`` repetition,
    and anything past the first line."""
    text = text.strip().removeprefix("ERROR: ").strip()
    text = text.splitlines()[0] if text else text
    return _CAUSED_BY.sub("", text)


def kind_of(text: str) -> str:
    lower = text.lower()
    for kind, phrases in _PHRASES:
        if any(p in lower for p in phrases):
            return kind
    return "other"


def describe(text: str, *, until: float | None = None, cookies: bool = False) -> Described:
    """The kind of yt-dlp failure ``text`` tells, and one sentence for a person.

    ``until``: when a rate limit's pause ends (unix time), named in its
    sentence; ``cookies``: yt-dlp was given cookies (the advice differs).
    """
    kind = kind_of(text)
    if kind == "rate_limited":
        when = f"until {clock_time(until)}" if until is not None else "for up to an hour"
        sentence = (f"YouTube rate-limits this address {when}: ytproxy pauses its own "
                    "calls and plays what is cached; new tracks play when it ends")
        if not cookies:
            sentence += " (signed in, with cookies, the limit is higher)"
    elif kind == "bot_check":
        sentence = f"YouTube asks this address to prove it is not a bot: {_FIX_BOT}"
        if cookies:
            sentence = ("YouTube asks to prove this is not a bot although cookies are "
                        "given: export fresh cookies, or add a PO-token provider "
                        "(pip install 'ytproxy[pot]')")
    elif kind == "age_restricted":
        sentence = ("this video is age-restricted: it plays only with the cookies of a "
                    "signed-in, age-verified account ([resolver] cookies_file)")
    elif kind == "private":
        sentence = "this video is private: only its owner can play it; remove it"
    elif kind == "unavailable":
        sentence = "YouTube says this video is unavailable (removed or blocked); remove it"
    elif kind == "too_old":
        sentence = (f"yt-dlp could not read YouTube's page, which usually means it is too "
                    f"old: {_UPGRADE}, then restart the daemon")
    elif kind == "network":
        host = _HOST.search(text)
        what = (f"cannot look up {host.group(1)} (no network or no DNS)" if host
                else "cannot reach YouTube (no network?)")
        sentence = f"{what}: check this machine's connection; tracks play when it is back"
    elif kind == "sign_in":
        sentence = ("this video needs a signed-in account (members-only or similar): "
                    "add cookies ([resolver] cookies_file) of one that may watch it")
    else:
        line = first_line(text)
        if len(line) > 160:
            line = line[:157] + "..."
        sentence = (f"yt-dlp failed: {line}; if it keeps happening, upgrade yt-dlp "
                    f"({_UPGRADE})")
    return Described(kind, sentence)
