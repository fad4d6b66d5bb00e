"""Outbound proxies: upstream ranges and yt-dlp's page fetch go through
``upstream.proxy``, else through ``HTTP_PROXY`` unless ``NO_PROXY`` says otherwise.

The proxy is a loopback forward proxy that records what it forwarded; every
target is the fake googlevideo on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.forward_proxy import ForwardProxy
from tests.fakes.googlevideo import FakeGooglevideo
from tests.ports import free_port
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.upstream import FIRST_RANGE

VID = "PrOxY_tEsT1"
SIZE = 700_000
# A short first range, then the fixture's 256 KiB chunks.
RANGES = 1 + -(-(SIZE - FIRST_RANGE) // 262_144)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variables from the machine; each test sets its own."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def set_env_proxy(env: pytest.MonkeyPatch, url: str) -> None:
    for name in ("http_proxy", "HTTP_PROXY"):
        env.setenv(name, url)


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def play_whole(proxy: RunningProxy) -> bytes:
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


def ranges_through(forward: ForwardProxy) -> list[str | None]:
    return [r.range_header for r in forward.records if "/videoplayback" in r.url]


async def test_upstream_proxy_carries_ranges_and_the_ytdlp_page_fetch(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, forward_proxy: ForwardProxy,
    clean_env: pytest.MonkeyPatch,
) -> None:
    data = random_audio(SIZE, seed=7)
    googlevideo.add_track(VID, data, title="Through the proxy")
    proxy = await make_proxy(upstream={"proxy": forward_proxy.url})

    assert await play_whole(proxy) == data
    # yt-dlp read the watch page through the proxy, and every range went through it.
    assert "/watch" in forward_proxy.paths()
    assert ranges_through(forward_proxy) == [
        f"bytes=0-{FIRST_RANGE - 1}", f"bytes={FIRST_RANGE}-{FIRST_RANGE + 262143}",
        f"bytes={FIRST_RANGE + 262144}-{FIRST_RANGE + 524287}",
        f"bytes={FIRST_RANGE + 524288}-{SIZE - 1}"]
    ok = [r for r in googlevideo.requests if r.kind == "ok"]
    assert len(ok) == len(ranges_through(forward_proxy))


async def test_http_proxy_from_the_environment_is_honoured(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, forward_proxy: ForwardProxy,
    clean_env: pytest.MonkeyPatch,
) -> None:
    data = random_audio(SIZE, seed=8)
    googlevideo.add_track(VID, data, title="Env proxy")
    set_env_proxy(clean_env, forward_proxy.url)
    proxy = await make_proxy()

    assert await play_whole(proxy) == data
    assert "/watch" in forward_proxy.paths()  # yt-dlp reads the environment itself
    assert len(ranges_through(forward_proxy)) == RANGES


async def test_no_proxy_bypasses_the_environment_proxy(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, forward_proxy: ForwardProxy,
    clean_env: pytest.MonkeyPatch,
) -> None:
    data = random_audio(SIZE, seed=9)
    googlevideo.add_track(VID, data, title="Bypassed")
    set_env_proxy(clean_env, forward_proxy.url)
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    clean_env.setenv("no_proxy", "127.0.0.1")
    proxy = await make_proxy()

    assert await play_whole(proxy) == data
    assert forward_proxy.records == []
    assert sum(1 for r in googlevideo.requests if r.kind == "ok") == RANGES


async def test_upstream_proxy_overrides_the_environment(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, forward_proxy: ForwardProxy,
    clean_env: pytest.MonkeyPatch,
) -> None:
    data = random_audio(SIZE, seed=10)
    googlevideo.add_track(VID, data, title="Explicit wins")
    # The environment names a proxy nobody runs: using it would fail the stream.
    set_env_proxy(clean_env, refused_url())
    proxy = await make_proxy(upstream={"proxy": forward_proxy.url})

    assert await play_whole(proxy) == data
    assert "/watch" in forward_proxy.paths()
    assert len(ranges_through(forward_proxy)) == RANGES
