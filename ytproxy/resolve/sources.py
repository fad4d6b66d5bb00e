"""Which page URLs a person may ask ytproxy to read: no requests on their machine's behalf
to itself or to the local network (server-side request forgery).

`ytproxy add`, ``POST /tracks`` and `ytproxy import` hand yt-dlp a URL that someone
typed or sent.  Unless ``resolver.allow_private_sources`` is true, the URL must be
http(s) and its host must not be, or resolve to, a loopback, link-local, private
(RFC 1918, ULA ``fc00::/7``), unspecified, multicast or otherwise non-public
address.  The configured ``resolver.source_url_template`` is the admin's own and is
not checked; the ids put into it are validated instead (``Resolver.source_url_for``).

Limit: the name is looked up here and again by yt-dlp when it fetches the page, and
yt-dlp follows redirects, so a hostile DNS server (rebinding) or a public page that
redirects inward can still get one request through.  This check stops the plain
cases — a URL naming a private address or a name that resolves to one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from ytproxy.errors import ResolverUnavailable, SourceNotAllowed

__all__ = ["address_refusal", "check_source_url"]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALLOW_HINT = ("ytproxy does not read pages on this machine or the local network unless "
               "[resolver] allow_private_sources = true")


def _embedded_ipv4(ip: _IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (``::ffff:a.b.c.d``, 6to4, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str) -> str | None:
    """Why ``address`` (an IP literal) may not be a source, or None when it may."""
    try:
        ip: _IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop a scope id
    except ValueError:
        return "not an IP address"
    ip = _embedded_ipv4(ip) or ip
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_reserved:
        return "not a public address"
    return None


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


async def check_source_url(url: str, *, allow_private: bool, timeout: float) -> None:  # noqa: ASYNC109
    """Raise SourceNotAllowed (400) unless ``url`` may be handed to yt-dlp.

    A name is resolved on the event loop's resolver (never blocking the loop);
    if any address it resolves to is refused, the URL is refused.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        what = f"{scheme}:" if scheme else "a relative URL"
        raise SourceNotAllowed(
            f"{url!r} is not an http(s) URL ({what}); ytproxy only reads http:// and "
            "https:// pages"
        )
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise SourceNotAllowed(f"{url!r} is not a valid URL: {exc}") from None
    host = (host or "").rstrip(".")  # "localhost." is "localhost" (and /etc/hosts knows it)
    if not host:
        raise SourceNotAllowed(f"{url!r} names no host")
    if allow_private:
        return
    literal = _literal(host)
    if literal is not None:
        reason = address_refusal(literal)
        if reason is not None:
            raise SourceNotAllowed(f"{url!r}: its host {host} is {reason}; {_ALLOW_HINT}")
        return
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port or (443 if scheme == "https" else 80),
                                           type=socket.SOCK_STREAM)
    except TimeoutError:
        raise ResolverUnavailable(
            f"looking up {host} (the host of {url}) took over {timeout:g} s; "
            "check the network"
        ) from None
    except (socket.gaierror, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ResolverUnavailable(
            f"cannot look up {host} (the host of {url}): {detail}; check the name and "
            "the network"
        ) from None
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        reason = address_refusal(address)
        if reason is not None:
            raise SourceNotAllowed(
                f"{url!r}: its host {host} resolves to {address}, {reason}; {_ALLOW_HINT}"
            )
