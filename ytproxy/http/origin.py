"""What a web page may ask of the daemon: the Host, Origin, Sec-Fetch-Site and
Content-Type rules.

A browser lets any page send requests to ``127.0.0.1:6602``: a form or a
``no-cors`` fetch posts ``text/plain`` bodies, and a page whose DNS name is
rebound to 127.0.0.1 reads the answers too (its requests are same-origin to
the browser and carry ``Host: evil.example``).  The token (``auth.py``) keeps
writes from pages only when one is set; these rules hold with or without it:

* The API (every route but the player routes) needs an accepted ``Host``: the
  listen address, ``localhost``, a loopback address, a name in ``[server]
  allowed_hosts``, or (bound to a wildcard such as 0.0.0.0) any IP literal.
  Rebinding needs a DNS name, so IP literals are safe to accept.  A missing
  Host (HTTP/1.0) is accepted: every browser sends one.
* Writes (any method but GET, HEAD and OPTIONS) also need no foreign ``Origin``
  (one whose host is not accepted; ``null`` is foreign), no ``Sec-Fetch-Site:
  cross-site``, and a body, if any, sent as ``application/json``: no page can
  send that cross-site without a CORS preflight, which the daemon never grants.
* The player routes (GET and HEAD of ``/proxy/<id>``, ``/playlist.m3u``,
  ``/playlist/<name>.m3u``) take any Host: MPD, VLC and mpv send whatever name
  the person typed, and never an Origin or Sec-Fetch-* header.  A page's own
  fetch under a foreign Host (``Sec-Fetch-Site`` other than ``none``, which a
  typed address sends) is DNS rebinding and refused; a page of another site
  (foreign Origin, ``Sec-Fetch-Site: cross-site``) may play stored tracks, as
  an ``<audio>`` element would, but not add new ones (``FROM_OTHER_SITE``,
  checked by ``/proxy``): it cannot read what it plays.

Refusals are ``ForbiddenHost``/``CrossSiteRequest`` (403) and
``UnsupportedMediaType`` (415), answered as JSON by the error middleware.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from ytproxy.config import ServerConfig
from ytproxy.errors import CrossSiteRequest, ForbiddenHost, UnsupportedMediaType, YtproxyError

__all__ = [
    "FROM_OTHER_SITE",
    "Asked",
    "Hosts",
    "asked_of",
    "from_other_site",
    "refusal",
    "trust_middleware",
]

log = logging.getLogger(__name__)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
# Set on player requests from another site's page: they play stored tracks only.
FROM_OTHER_SITE = web.RequestKey("from_other_site", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bare(host: str) -> str:
    """A Host header's (or an address's) name: no port, no brackets, lower case,
    no trailing dot."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]  # one colon: a port (IPv6 literals have several)
    return name.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class Hosts:
    """The names this daemon answers to as itself (``accepts``)."""

    listen: str
    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, server: ServerConfig) -> Hosts:
        return cls(server.host, frozenset(_bare(h) for h in server.allowed_hosts))

    def accepts(self, host: str) -> bool:
        """Whether a Host header (or an Origin's host), with or without its port,
        names this daemon."""
        name = _bare(host)
        if not name:
            return False
        listen = _bare(self.listen)
        if name in ("localhost", listen) or name in self.allowed:
            return True
        address, bound = _ip(name), _ip(listen)
        if address is None:
            return False  # a DNS name no one configured: what DNS rebinding sends
        if bound is not None and address == bound:
            return True  # "::1" and "0:0::1" are one address
        # An IP literal cannot be rebound: a wildcard bind answers to any, and a
        # loopback bind to every loopback address (127.0.0.1 and ::1 alike).
        wildcard = listen in _WILDCARDS
        loopback = listen == "localhost" or (bound is not None and bound.is_loopback)
        return wildcard or (loopback and address.is_loopback)

    def foreign_origin(self, origin: str | None) -> bool:
        """An Origin header that is not this daemon's (``null`` and garbage are foreign)."""
        if origin is None:
            return False
        try:
            host = urlsplit(origin.strip()).hostname
        except ValueError:
            return True
        return host is None or not self.accepts(host)


@dataclass(frozen=True)
class Asked:
    """What a request says of where it comes from, as the rules need it."""

    method: str
    player_route: bool
    host: str | None = None
    origin: str | None = None
    fetch_site: str | None = None
    has_body: bool = False
    content_type: str = ""  # the media type, lower case, without parameters


def from_other_site(hosts: Hosts, asked: Asked) -> bool:
    """Whether another site's page sent it (a foreign Origin, Sec-Fetch-Site: cross-site)."""
    return hosts.foreign_origin(asked.origin) or asked.fetch_site == "cross-site"


def refusal(hosts: Hosts, asked: Asked) -> YtproxyError | None:
    """Why the request is refused, or None: the module's rules, for one request."""
    host_ok = asked.host is None or not asked.host.strip() or hosts.accepts(asked.host)
    shown = (asked.host or "")[:100]
    if asked.player_route and asked.method in ("GET", "HEAD"):
        if host_ok or asked.fetch_site in (None, "none"):
            return None  # a player, or a person who typed the address
        return ForbiddenHost(
            f"a web page under the name {shown!r} may not read this daemon (DNS rebinding?); "
            "if that is this machine's name, add it to [server] allowed_hosts")
    if not host_ok:
        return ForbiddenHost(
            f"the Host header {shown!r} does not name this daemon; use its address "
            "(server.host or localhost), or add the name to [server] allowed_hosts")
    if asked.method in _READ_METHODS:
        return None
    if from_other_site(hosts, asked):
        shown_origin = f" (Origin: {asked.origin[:100]})" if asked.origin else ""
        return CrossSiteRequest(
            f"a {asked.method} from another site's web page{shown_origin} is refused: change "
            "tracks with the ytproxy command or a program; a site of your own can be named "
            "in [server] allowed_hosts")
    if asked.has_body and asked.content_type != "application/json":
        sent = (f"not {asked.content_type[:100]!r}" if asked.content_type
                else "and this one has no Content-Type")
        return UnsupportedMediaType(
            f"the request body must be sent as Content-Type: application/json, {sent}")
    return None


def asked_of(request: web.Request, player_paths: Collection[str]) -> Asked:
    """The request's ``Asked``; ``player_paths`` are the player routes' paths
    as the router spells them (``/proxy/{id}``)."""
    route = request.match_info.route
    canonical = route.resource.canonical if route.resource is not None else ""
    headers = request.headers
    return Asked(
        method=request.method,
        player_route=canonical in player_paths,
        host=headers.get("Host"),
        origin=headers.get("Origin"),
        fetch_site=(headers.get("Sec-Fetch-Site") or "").strip().lower() or None,
        has_body=request.body_exists,
        content_type=request.content_type.lower() if "Content-Type" in headers else "",
    )


def trust_middleware(server: ServerConfig, *, player_paths: Collection[str]) -> Middleware:
    """A middleware that refuses what ``refusal`` refuses, before any handler runs
    (and before the token is asked for)."""
    hosts = Hosts.of(server)
    paths = frozenset(player_paths)

    @web.middleware
    async def trust(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Unknown routes and methods keep their 404/405.
        if request.match_info.http_exception is None:
            asked = asked_of(request, paths)
            refused = refusal(hosts, asked)
            if refused is not None:
                log.debug("server: refused %s %s (Host %r, Origin %r, Sec-Fetch-Site %r): %s",
                          request.method, request.path[:100], (asked.host or "")[:100],
                          (asked.origin or "")[:100], asked.fetch_site, refused.code)
                raise refused
            if asked.player_route:
                request[FROM_OTHER_SITE] = from_other_site(hosts, asked)
        return await handler(request)

    return trust
