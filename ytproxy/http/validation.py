"""Request validation shared by the routes: hostile paths, track ids, JSON bodies.

Every refusal is a ``YtproxyError`` (400, or 408/413 for bodies), so the
server's error middleware answers it as JSON like any other error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ytproxy.errors import BadJson, BadPath, BadRequest, BodyCutShort, BodyTimeout
from ytproxy.models import TrackId

__all__ = [
    "MAX_FIELD_LENGTH",
    "check_path",
    "path_guard",
    "read_json_object",
    "string_field",
    "track_id",
]

log = logging.getLogger(__name__)

# Characters in one string field of a JSON body (a page URL is the longest).
MAX_FIELD_LENGTH = 2048

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def check_path(raw_path: str) -> None:
    """Refuse a request target whose path could mean something other than it looks.

    No route needs any of these, and each is a classic way past a path check:
    ``.``/``..`` segments (raw or percent-encoded: aiohttp would resolve them
    and route ``/proxy/../status`` to ``/status``), an encoded ``/`` or ``\\``,
    control characters such as NUL (``%00``), malformed ``%`` escapes, and
    percent-encoding that is not UTF-8 (overlong forms of ``.`` and ``/``).
    """
    path = raw_path.partition("?")[0].partition("#")[0]
    if _BAD_ESCAPE.search(path):
        raise BadPath("the path has a '%' that is not followed by two hex digits")
    if "\\" in path:
        raise BadPath("the path has a backslash")
    for segment in path.split("/"):
        try:
            text = unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            raise BadPath("the path's percent-encoding is not UTF-8") from None
        if text in (".", ".."):
            raise BadPath("the path has a '.' or '..' segment")
        if "/" in text or "\\" in text:
            raise BadPath("the path has an encoded '/' or '\\'")
        if any(ch < " " or ch == "\x7f" for ch in text):
            raise BadPath("the path has control characters (such as NUL)")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def path_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``check_path`` before any route (and before aiohttp's 404/405) runs."""
    check_path(request.raw_path)
    return await handler(request)


def track_id(request: web.Request) -> TrackId:
    """The ``{id}`` of a route, if it can be a track id (``InvalidTrackId`` otherwise)."""
    return TrackId(request.match_info["id"])


async def read_json_object(request: web.Request, *, within: float) -> dict[str, Any]:
    """The body as a JSON object; ``BadJson``/``BadRequest``/``BodyTimeout``/
    ``BodyCutShort``/413 otherwise.

    The body is read ``within`` seconds (a client dripping it must not
    hold a handler forever) and up to the app's ``client_max_size`` (413 past
    it). JSON is UTF-8 whatever charset the Content-Type claims (RFC 8259).
    """
    try:
        async with asyncio.timeout(within):
            raw = await request.read()
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {within:g} s") from None
    except ConnectionResetError:
        # The client closed before its body was all sent: nobody to answer, and
        # not a bug (any client can do it, as often as it likes).
        log.debug("server: %s %s from %s: the client left before its body arrived",
                  request.method, request.path[:100], request.remote)
        raise BodyCutShort("the connection closed before the request body arrived") from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadJson("the body must be JSON in UTF-8, like {\"id\": \"…\"}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge ints, deep nesting
        raise BadJson(f"the body must be JSON like {{\"id\": \"…\"}}: {_first_line(exc)}"
                      ) from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object like {{\"id\": \"…\"}}, "
                         f"got {type(body).__name__}")
    return body


def string_field(body: dict[str, Any], key: str) -> str:
    """``body[key]`` as a non-empty, printable string of bounded length."""
    value = body[key]
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f'field "{key}" must be a non-empty string, got {_preview(value)}')
    if len(value) > MAX_FIELD_LENGTH:
        raise BadRequest(f'field "{key}" is too long: {len(value)} characters, '
                         f"at most {MAX_FIELD_LENGTH}")
    if any(ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff" for ch in value):
        raise BadRequest(f'field "{key}" must not contain control characters or '
                         "unpaired surrogates")
    return value


def _preview(value: object, limit: int = 60) -> str:
    """A value as JSON, cut short: error messages must not echo a whole request."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:200]
