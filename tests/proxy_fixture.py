"""Run the real ytproxy app on a loopback port, wired to the fake googlevideo."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseRunner, TestServer

from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.tube import FakeTube
from tests.ports import free_port
from ytproxy.config import Config
from ytproxy.http.app import create_app
from ytproxy.http.listener import Runner


def proxy_config(googlevideo: FakeGooglevideo, tmp_path: Path, **sections: dict[str, Any]
                 ) -> Config:
    """A config that resolves through the fake's watch page and may fetch only from it."""
    config = Config()
    config = config.replace("store", path=str(tmp_path / "tracks.db"))
    # The relay's own tests run without the download-ahead cache (as with
    # [cache] max_size = 0); tests/test_cache.py turns it on.
    config = config.replace("cache", directory=str(tmp_path / "cache"), max_size=0)
    # No rate limit nor hourly budget by default (a test of either sets its
    # own): tests resolve often.
    config = config.replace("resolver", source_url_template=googlevideo.watch_url_template,
                            timeout=20.0, max_calls_per_minute=6000,
                            max_calls_per_hour=100_000, max_listings_per_hour=10_000)
    config = config.replace("upstream", allowed_hosts=(googlevideo.host,),
                            chunk_size=256 * 1024)
    for section, changes in sections.items():
        config = config.replace(section, **changes)
    return config


class ProxyTestServer(TestServer):
    """A TestServer on ytproxy's own runner: connection limits apply as in the daemon."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return Runner(self.app, **kwargs)


@dataclass
class RunningProxy:
    app: web.Application
    server: TestServer
    session: aiohttp.ClientSession
    config: Config

    @property
    def base_url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def url(self, path: str) -> str:
        return self.base_url + path


ProxyFactory = Callable[..., Awaitable[RunningProxy]]


async def _proxies(upstream: FakeGooglevideo, tmp_path: Path
                   ) -> AsyncIterator[ProxyFactory]:
    """A factory of running proxies wired to ``upstream``; all closed afterwards."""
    running: list[RunningProxy] = []

    async def factory(**sections: dict[str, Any]) -> RunningProxy:
        config = proxy_config(upstream, tmp_path, **sections)
        # The port it is reached on is server.port, as in the daemon (MPD
        # look-ahead knows its own /proxy URLs by it).
        port = free_port()
        config = config.replace("server", port=port)
        server = ProxyTestServer(create_app(config), host="127.0.0.1", port=port)
        await server.start_server()
        session = aiohttp.ClientSession(auto_decompress=False)
        proxy = RunningProxy(server.app, server, session, config)
        running.append(proxy)
        return proxy

    yield factory
    for proxy in running:
        await proxy.session.close()
        await proxy.server.close()


@pytest.fixture
async def make_proxy(googlevideo: FakeGooglevideo, tmp_path: Path
                     ) -> AsyncIterator[ProxyFactory]:
    async for factory in _proxies(googlevideo, tmp_path):
        yield factory


@pytest.fixture
async def make_tube_proxy(faketube: FakeTube, tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    """Like ``make_proxy``, resolving through FakeTube (the real yt-dlp with the
    test-only FakeTube extractor plugin)."""
    async for factory in _proxies(faketube, tmp_path):
        yield factory


def random_audio(size: int, seed: int = 1) -> bytes:
    """Deterministic incompressible bytes standing in for audio."""
    return random.Random(seed).randbytes(size)
