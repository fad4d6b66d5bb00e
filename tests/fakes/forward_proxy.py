"""A small HTTP forward proxy on loopback that records what passes through it.

It answers absolute-URI requests (``GET http://127.0.0.1:PORT/path HTTP/1.1``,
what a client configured with an http proxy sends for an http URL) by
fetching the target and streaming the answer back, and ``CONNECT host:port``
by opening a tunnel.  Only loopback targets are forwarded; anything else
gets 403, so a test can never send traffic off this machine through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from yarl import URL

__all__ = ["ForwardProxy", "Forwarded"]

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection",
               "te", "trailer", "transfer-encoding", "upgrade", "host"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Forwarded:
    method: str
    url: str  # absolute target URL, or host:port for CONNECT
    range_header: str | None


@dataclass
class ForwardProxy:
    records: list[Forwarded] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _server: asyncio.Server | None = None
    port: int = 0
    connect_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connect_url(self) -> str:
        """A proxy that only tunnels (CONNECT), for https targets."""
        return f"http://127.0.0.1:{self.connect_port}"

    def paths(self) -> list[str]:
        return [URL(r.url).path for r in self.records if r.method != "CONNECT"]

    async def start(self) -> None:
        # auto_decompress off and no env: bytes pass through unchanged, and
        # this proxy itself never uses a proxy.
        self._session = aiohttp.ClientSession(auto_decompress=False, trust_env=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._server = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        self.connect_port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not request.raw_path.startswith("http://"):
            return web.Response(status=400, text="not a proxy request (no absolute URI)\n")
        target = request.url
        if target.host not in _LOOPBACK:
            self.refused.append(str(target))
            return web.Response(status=403, text="this test proxy forwards to loopback only\n")
        self.records.append(Forwarded(request.method, str(target), request.headers.get("Range")))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method, target, headers=headers, data=await request.read(),
                allow_redirects=False)
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"proxy: {exc}\n")
        try:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP})
            await response.prepare(request)
            async for piece in upstream.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response
        finally:
            upstream.release()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            if len(request_line) < 2 or request_line[0] != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            host, _, port = request_line[1].rpartition(":")
            if host not in _LOOPBACK:
                self.refused.append(request_line[1])
                writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                return
            self.records.append(Forwarded("CONNECT", request_line[1], None))
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while piece := await reader.read(65536):
            writer.write(piece)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
