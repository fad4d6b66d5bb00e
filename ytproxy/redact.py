"""Keeping signed stream URLs' credentials out of what people and programs get to see.

A googlevideo URL's query (``sig``, ``lsig``, ``ip``, ``expire``…) lets whoever
holds it fetch the stream as us.  Error bodies, ``/status`` and the log pass
their text through :func:`redact_urls`, which keeps every URL's scheme, host,
path and parameter *names* but masks parameter values (and passwords).  The
few parameters of YouTube page URLs that identify what was asked for (``v``,
``list``) are kept, so messages about a page still say which one.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RedactingFilter", "redact_strings", "redact_url", "redact_urls"]

MASK = "***"
# Page parameters that name a video or playlist; never credentials.
_KEEP_PARAMS = frozenset({"v", "list", "index"})
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# Punctuation that ends a sentence around a URL rather than belonging to it.
_TRAILING = ".,;:!?)]}"


def redact_url(url: str) -> str:
    """``url`` with its query values, fragment and password masked."""
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
    query = "&".join(_mask_param(p) for p in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if not value or name in _KEEP_PARAMS:
        return param
    return f"{name}{eq}{MASK}"


def _redact_match(match: re.Match[str]) -> str:
    text = match.group(0)
    stripped = text.rstrip(_TRAILING)
    return redact_url(stripped) + text[len(stripped):]


def redact_urls(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL_RE.sub(_redact_match, text)


def redact_strings(value: Any) -> Any:
    """A copy of a JSON-like value with :func:`redact_urls` applied to every string."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {k: redact_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_strings(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that redacts URLs in every record's message (all levels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # A traceback's messages may carry a signed URL too: format it here,
            # redacted (handlers use exc_text when it is set).
            record.exc_text = redact_urls(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER = logging.Formatter()
