"""Keeping signed stream URLs' credentials out of what people and programs get to see.

A googlevideo URL's query (``sig``, ``lsig``, ``ip``, ``expire``…) lets whoever
holds it fetch the stream as us.  Error bodies, ``/status`` and the log pass
their text through :func:`redact_urls`, which keeps every URL's scheme, host,
path and parameter *names* but masks parameter values (and passwords).  The
few parameters of YouTube page URLs that identify what was asked for (``v``,
``list``) are kept, so messages about a page still say which one.

Cookies sign in as the person whose browser they came from: :func:`redact_secrets`
also masks the value of anything that looks like a line of a Netscape cookies
file (yt-dlp quotes a line it cannot parse, tabs as ``\t``), of the session
cookies YouTube signs in with wherever they appear (``SID``, ``__Secure-…``), and
of a ``Cookie`` header.  The log's filter applies both.

The effective configuration (``check-config``, ``/status``) goes through
:func:`redact_config`, the one place that masks it: a secret-named key's value
(``SECRET_KEYS``, at any depth: yt-dlp's options too), cookie values, and, in
any URL anywhere in it, the password and the values of secret-named query
parameters.  Its
other query values stay: they are the admin's templates (``{id}``), not
signatures.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["SECRET_KEYS", "RedactingFilter", "redact_config", "redact_cookies", "redact_secrets",
           "redact_strings", "redact_url", "redact_urls"]

MASK = "***"
# Page parameters that name a video or playlist; never credentials.
_KEEP_PARAMS = frozenset({"v", "list", "index"})
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# Punctuation that ends a sentence around a URL rather than belonging to it.
_TRAILING = ".,;:!?)]}"


# Keys whose values are secrets, in the config (at any depth) and as a URL's
# query parameters there: shown as "***" by check-config and /status.
SECRET_KEYS = frozenset({"token", "password", "videopassword", "ap_password", "cookie",
                          "cookies"})
# A config URL's query parameters that are credentials: those, and the usual names of keys.
_SECRET_PARAMS = SECRET_KEYS | {"key", "api_key", "apikey", "access_token", "auth", "secret",
                                "sig", "signature"}


def redact_url(url: str, *, signed: bool = True) -> str:
    """``url`` with its password masked and, ``signed`` (a stream URL, text from
    elsewhere), its query values (those of ``v``, ``list``, ``index`` kept) and
    fragment; not ``signed`` (a URL of the config), the values of secret-named
    query parameters only."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Not parseable as a URL: mask everything after the host part.
        head, sep, _ = url.partition("?")
        return f"{head}{sep}{MASK}" if sep else url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}"
    masked = _mask_param if signed else _mask_secret_param
    query = "&".join(masked(p) for p in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment and signed else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if not value or name in _KEEP_PARAMS:
        return param
    return f"{name}{eq}{MASK}"


def _mask_secret_param(param: str) -> str:
    name, eq, value = param.partition("=")
    return f"{name}{eq}{MASK}" if value and name.lower() in _SECRET_PARAMS else param


def redact_config(sections: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of configuration values (sections of keys, tables, arrays) fit to
    show: a secret-named key's value (when set) is ``"***"``, every URL in a
    string is passed through ``redact_url(..., signed=False)`` and every cookie
    value (``redact_cookies``) is masked; arrays are lists."""
    return {name: _shown(name, value) for name, value in sections.items()}


def _shown(key: object, value: Any) -> Any:
    if str(key).lower() in SECRET_KEYS and value:
        return MASK
    if isinstance(value, Mapping):
        return {k: _shown(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(None, v) for v in value]
    if isinstance(value, str):
        if "://" in value:
            value = _URL_RE.sub(lambda m: _redact_match(m, signed=False), value)
        return redact_cookies(value)
    return value


def _redact_match(match: re.Match[str], *, signed: bool = True) -> str:
    text = match.group(0)
    stripped = text.rstrip(_TRAILING)
    return redact_url(stripped, signed=signed) + text[len(stripped):]


def redact_urls(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL_RE.sub(_redact_match, text)


# A field separator of a cookies file line: a tab, or a tab as repr() shows it.
_SEP = r"(?:\t|\\t)"
# A field: no whitespace, quotes or backslashes (a repr's escapes start with one).
_FIELD = r"[^\s'\"\\]*"
# What is left of a line: up to its end, a quote, or an escaped line end.
_REST = r"(?:[^\r\n'\"\\]|\\t|\\(?![nrt]))*"
# Netscape format: domain, subdomains, path, secure, expiry, name, then the value.
_COOKIE_LINE_RE = re.compile(rf"(?P<keep>(?:{_FIELD}{_SEP}){{6}})(?P<value>{_REST})")
# Cookies that sign in (Google's), by name, followed by their value.
_SECRET_NAMES = (r"__(?:Secure|Host)-[\w.-]+|SID|HSID|SSID|APISID|SAPISID|SIDCC|LOGIN_INFO"
                 r"|OSID|LSID|SMSV")
_SECRET_COOKIE_RE = re.compile(
    rf"(?:(?<=\\t)|(?<![\w-]))(?P<keep>(?:{_SECRET_NAMES}){_SEP}|(?:{_SECRET_NAMES})=)"
    r"(?P<value>(?:[^\s'\";\\]|\\(?![nrt]))+)")
# A Cookie header, as text or in a dict's repr: every value in it.
_COOKIE_HEADER_RE = re.compile(r"(?i)(?P<keep>\bcookie['\"]?\s*[:=]\s*['\"]?)"
                               r"(?P<value>[^'\"\r\n]+)")


def _mask_value(match: re.Match[str]) -> str:
    return match.group("keep") + (MASK if match.group("value") else "")


def redact_cookies(text: str) -> str:
    """``text`` with cookie values masked: the value field of anything shaped
    like a cookies file line, the values of sign-in cookies by name, and a
    ``Cookie`` header's."""
    if "\t" in text or "\\t" in text:
        text = _COOKIE_LINE_RE.sub(_mask_value, text)
    text = _SECRET_COOKIE_RE.sub(_mask_value, text)
    if "ookie" in text or "OOKIE" in text:
        text = _COOKIE_HEADER_RE.sub(_mask_value, text)
    return text


def redact_secrets(text: str) -> str:
    """``text`` with URL credentials (:func:`redact_urls`) and cookie values
    (:func:`redact_cookies`) masked."""
    return redact_cookies(redact_urls(text))


def redact_strings(value: Any) -> Any:
    """A copy of a JSON-like value with :func:`redact_secrets` applied to every string."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {k: redact_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_strings(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that redacts URLs and cookies in every record's message
    (all levels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # A traceback's messages may carry a signed URL too: format it here,
            # redacted (handlers use exc_text when it is set).
            record.exc_text = redact_secrets(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER = logging.Formatter()
