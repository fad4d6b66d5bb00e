"""Can this machine reach a host?  DNS, TCP and TLS, each step under a short deadline.

For ``ytproxy doctor``.  Goes through the same outbound proxy ytproxy itself
would use (``upstream.proxy``, else ``HTTP(S)_PROXY`` unless ``NO_PROXY``
says otherwise): a CONNECT tunnel for https, as clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Target", "Unreachable", "proxy_for", "reach"]

NETWORK_FIX = ("check the network connection; behind a proxy, set [upstream] proxy or "
               "HTTPS_PROXY")
_PROXY_FIX = "check the proxy (is it running, does it allow this host?)"

_Address = tuple[Any, ...]  # one getaddrinfo() entry


@dataclass(frozen=True)
class Target:
    """A host:port to reach, and why."""

    role: str  # "source" or "upstream"
    host: str
    port: int
    tls: bool
    note: str = ""

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


class Unreachable(Exception):
    """One step failed: ``reason`` says which and why, ``fix`` what to do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def proxy_for(target: Target, explicit: str) -> str | None:
    """The proxy ytproxy would use for ``target``: upstream.proxy, else the environment's."""
    if explicit:
        return explicit
    proxies = urllib.request.getproxies()
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(target.host, proxies):
        return None
    proxy = proxies.get(target.scheme)
    if proxy is None and target.role == "source" and target.tls:
        proxy = proxies.get("http")  # yt-dlp uses HTTP_PROXY for https too
    return proxy


def _is_invalid_name(host: str) -> bool:
    # RFC 6761: names under .invalid never resolve; answering at once keeps
    # the query off the wire.
    name = host.lower().rstrip(".")
    return name == "invalid" or name.endswith(".invalid")


async def _getaddrinfo(host: str, port: int, seconds: float) -> list[_Address]:
    """getaddrinfo in a daemon thread: a lookup that hangs past the deadline must not
    keep the process from exiting (the loop's executor would wait for it)."""
    if _is_invalid_name(host):
        raise socket.gaierror(socket.EAI_NONAME, ".invalid names never resolve")
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 0, "", (host, port))]
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[_Address]] = loop.create_future()

    def settle(result: list[_Address], error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def lookup() -> None:
        result: list[_Address] = []
        error: BaseException | None = None
        try:
            result = list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the waiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=lookup, name="ytproxy-dns", daemon=True).start()
    async with asyncio.timeout(seconds):
        return await future


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


# ``who`` starts each reason: "" for the target itself (its line names it),
# "the proxy HOST:PORT " for the proxy.

async def _dns(host: str, port: int, seconds: float, who: str) -> list[_Address]:
    try:
        return await _getaddrinfo(host, port, seconds)
    except TimeoutError:
        raise Unreachable(f"{who}DNS lookup took over {seconds:g} s "
                          "(offline, or no DNS server answering)", NETWORK_FIX) from None
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            raise Unreachable(f"{who}no such host name (DNS: {exc.strerror})",
                              "check the host name in the config") from None
        raise Unreachable(f"{who}DNS lookup failed: {exc.strerror} (offline?)",
                          NETWORK_FIX) from None


async def _tcp(addresses: Sequence[_Address], seconds: float, who: str
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    last: OSError | None = None
    unique = list(dict.fromkeys(a[4][:2] for a in addresses))
    try:
        async with asyncio.timeout(seconds):
            for address in unique:
                try:
                    return await asyncio.open_connection(address[0], address[1])
                except OSError as exc:
                    last = exc
    except TimeoutError:
        raise Unreachable(f"{who}no TCP answer within {seconds:g} s "
                          "(offline, or a firewall drops it)", NETWORK_FIX) from None
    if isinstance(last, ConnectionRefusedError):
        raise Unreachable(f"{who}connection refused (nothing listens there)", NETWORK_FIX)
    detail = (last.strerror or str(last)) if last is not None else "no address"
    raise Unreachable(f"{who}cannot connect: {detail}", NETWORK_FIX)


async def _tls(writer: asyncio.StreamWriter, host: str, seconds: float,
               context: ssl.SSLContext) -> str:
    try:
        async with asyncio.timeout(seconds):
            await writer.start_tls(context, server_hostname=host)
    except TimeoutError:
        raise Unreachable(f"TLS handshake with {host} took over {seconds:g} s",
                          NETWORK_FIX) from None
    except ssl.SSLCertVerificationError as exc:
        raise Unreachable(f"{host}'s certificate is not trusted: {exc.verify_message}",
                          "check the clock and the CA certificates (ca-certificates); a "
                          "TLS-inspecting proxy needs its CA installed") from None
    except (ssl.SSLError, OSError) as exc:
        detail = getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__
        raise Unreachable(f"TLS handshake with {host} failed: {detail}", NETWORK_FIX) from None
    ssl_object = writer.get_extra_info("ssl_object")
    return str(ssl_object.version()) if ssl_object is not None else "TLS"


async def _through_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         target: Target, proxy: str, seconds: float) -> str:
    """CONNECT for https; for http, a HEAD by absolute URI (proxies often allow
    CONNECT to port 443 only)."""
    authority = f"{target.host}:{target.port}"
    if target.tls:
        request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    else:
        request = (f"HEAD http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n"
                   "Connection: close\r\n\r\n")
    try:
        async with asyncio.timeout(seconds):
            writer.write(request.encode("ascii"))
            await writer.drain()
            status_line = (await reader.readline()).decode("latin-1").strip()
            if target.tls:  # the tunnel starts after the proxy's header block
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
    except TimeoutError:
        raise Unreachable(f"the proxy {proxy} did not answer within {seconds:g} s",
                          _PROXY_FIX) from None
    except OSError as exc:
        raise Unreachable(f"the proxy {proxy} dropped the connection: {exc}",
                          _PROXY_FIX) from None
    parts = status_line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if code == 0 or (target.tls and code != 200) or code in (502, 503, 504):
        raise Unreachable(f"the proxy {proxy} answered {status_line!r} for {authority}",
                          _PROXY_FIX)
    return f"HTTP {code}"


async def reach(
    target: Target,
    *,
    seconds: float,
    proxy: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """DNS, TCP and (for https) TLS to ``target``; a line of timings, or Unreachable."""
    steps: list[str] = []
    writer: asyncio.StreamWriter | None = None
    context = ssl_context or ssl.create_default_context()
    try:
        if proxy:
            p = urlsplit(proxy)
            phost, pport = p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
            started = time.monotonic()
            who = f"the proxy {phost}:{pport}: "
            addresses = await _dns(phost, pport, seconds, who)
            reader, writer = await _tcp(addresses, seconds, who)
            if p.scheme == "https":
                await _tls(writer, phost, seconds, context)
                return (f"https proxy {phost}:{pport} reachable in {_ms(started)} "
                        "(the host behind it is not tested through an https proxy)")
            steps.append(f"proxy {phost}:{pport} {_ms(started)}")
            started = time.monotonic()
            answer = await _through_proxy(reader, writer, target, proxy, seconds)
            steps.append(f"{'tunnel' if target.tls else 'request'} {answer} {_ms(started)}")
        else:
            started = time.monotonic()
            addresses = await _dns(target.host, target.port, seconds, "")
            steps.append(f"dns {_ms(started)}")
            started = time.monotonic()
            _reader, writer = await _tcp(addresses, seconds, "")
            steps.append(f"tcp {_ms(started)}")
        if target.tls:
            started = time.monotonic()
            version = await _tls(writer, target.host, seconds, context)
            steps.append(f"tls {_ms(started)} {version}")
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    return ", ".join(steps)
