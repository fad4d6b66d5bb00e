"""Who may write: the bind policy and the bearer token on write requests.

On loopback only programs on this machine reach the daemon.  Bound anywhere
else, anyone on the network could add and remove tracks (and make ytproxy read
pages for them), so ``ytproxy serve`` refuses to start unless ``server.token``
is set or ``server.allow_unauthenticated`` says the person means it.

With a token, every request that changes something (any method but GET, HEAD
and OPTIONS on a route that exists) must carry ``Authorization: Bearer
<token>``.  ``/proxy`` and the read endpoints stay open: MPD cannot send a token.
What a web page may ask, token or not (Host, Origin, Content-Type), is
``origin.py``'s, checked before the token.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ytproxy.config import ServerConfig

__all__ = ["bind_refusal", "bind_warning", "is_loopback_host", "token_middleware"]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHALLENGE = 'Bearer realm="ytproxy"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a wildcard ("", 0.0.0.0, ::), a LAN address or some other name


def bind_refusal(server: ServerConfig) -> str | None:
    """Why ``serve`` must not start with this [server] section, or None."""
    if is_loopback_host(server.host) or server.token or server.allow_unauthenticated:
        return None
    return (
        f"refusing to listen on {server.host or 'every address'}:{server.port} without a "
        "token: anyone who can reach it could add and remove tracks. Set [server] token "
        "(e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or "
        "allow_unauthenticated = true if the network is trusted, or keep host = \"127.0.0.1\""
    )


def bind_warning(server: ServerConfig) -> str | None:
    """The warning to log when serving off loopback without a token (explicitly allowed)."""
    if is_loopback_host(server.host) or server.token:
        return None
    return (
        f"listening on {server.host or 'every address'}:{server.port} WITHOUT "
        "AUTHENTICATION (server.allow_unauthenticated = true): anyone who can reach this "
        "port can add and remove tracks and make ytproxy fetch pages; set [server] token"
    )


def _unauthorized(message: str, error: str | None) -> web.Response:
    challenge = _CHALLENGE if error is None else f'{_CHALLENGE}, error="{error}"'
    return web.json_response(
        {"error": "unauthorized", "message": message},
        status=401, headers={"WWW-Authenticate": challenge},
    )


def _presented_token(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def token_middleware(token: str) -> Middleware:
    """A middleware that answers 401 to write requests without ``Bearer <token>``."""
    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Unknown routes and methods keep their 404/405; reads stay open for MPD.
        if request.method in _READ_METHODS or request.match_info.http_exception is not None:
            return await handler(request)
        presented = _presented_token(request)
        if presented is None:
            return _unauthorized(
                f"{request.method} {request.path} needs the daemon's token: send "
                "\"Authorization: Bearer <server.token>\"", None)
        if not hmac.compare_digest(presented.encode("utf-8", "replace"), expected):
            return _unauthorized("the bearer token is wrong; use [server] token of the "
                                 "daemon's config", "invalid_token")
        return await handler(request)

    return require_token
