"""Small loopback servers for checks that reach out: one that answers HTTP,
one that accepts and never says a word, a fake MPD greeting, a refused port;
plus a config-file writer and the real daemon on a chosen port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.ports import free_port
from ytproxy.config import load_config
from ytproxy.http.app import create_app

__all__ = ["BlackHole", "FakeMpd", "free_port", "http_server", "running_daemon", "write_toml"]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
        for name, table in sections.items()
    )
    path.write_text(text, encoding="utf-8")
    return path


class _Listener:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._clients.add(writer)
        try:
            await self.serve(reader, writer)
        finally:
            self._clients.discard(writer)
            writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        for writer in list(self._clients):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


class BlackHole(_Listener):
    """Accepts connections and never answers (reads until the client leaves)."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass


class FakeMpd(_Listener):
    """Greets like MPD, answers ``close`` by closing."""

    def __init__(self, greeting: bytes = b"OK MPD 0.23.5\n") -> None:
        super().__init__()
        self.greeting = greeting

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            await reader.readline()


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[int]:
    """An HTTP server answering every path with 200: a healthy source host."""
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>ok</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_daemon(config_file: Path) -> AsyncIterator[TestServer]:
    """The real app, in this loop, on the port the config file names."""
    config = load_config(str(config_file))
    server = TestServer(create_app(config), host="127.0.0.1", port=config.server.port)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
