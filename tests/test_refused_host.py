"""A stored stream URL whose host no longer answers (nothing listens there: the
googlevideo edge moved) is not "offline": one fresh URL is asked for, and only
when that one is refused too is the request held.  Breakers are per host and
port: one dead server on a machine does not rest the others on it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.ports import free_port
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.config import BreakerConfig, UpstreamConfig
from ytproxy.errors import UpstreamUnavailable, UpstreamUnreachable
from ytproxy.http.app import FETCHER, RESOLVER, SLOTS, STORE
from ytproxy.models import StreamInfo
from ytproxy.upstream import UpstreamFetcher

VID = "MovedEdge01"
# A hold would last ten minutes: the test's own deadline (DEADLINE) ends it first.
NO_HOLDING: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 2.0, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.05, "max_delay": 0.3, "gap_budget": 5.0, "hold_budget": 600.0},
    "breaker": {"failures": 3, "reset_after": 0.5},
}
DEADLINE = 20.0


async def plant(proxy: RunningProxy, googlevideo: FakeGooglevideo, port: int,
                size: int | None) -> None:
    """The track stored as if resolved earlier, its unexpired URL on ``port``."""
    store = proxy.app[STORE]
    await store.upsert_track(VID, googlevideo.watch_url(VID), title="Moved")
    await store.save_stream(VID, StreamInfo(url=googlevideo.sign(VID, port=port),
                                            expires_at=time.time() + 3600,
                                            mime="audio/webm", size=size))


async def status_of(proxy: RunningProxy) -> dict[str, Any]:
    async with proxy.session.get(proxy.url("/status")) as resp:
        return dict(await resp.json())


@pytest.mark.parametrize("cache_size", [0, 50_000_000], ids=["relay", "cache"])
@pytest.mark.parametrize("size_known", [True, False], ids=["size-stored", "size-probed"])
async def test_a_stored_url_on_a_dead_host_is_re_resolved_once_not_held(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
    cache_size: int, size_known: bool,
) -> None:
    data = random_audio(700_000, seed=5)
    googlevideo.add_track(VID, data, title="Moved")
    proxy = await make_proxy(**NO_HOLDING, cache={"max_size": cache_size})
    dead = free_port()
    await plant(proxy, googlevideo, dead, len(data) if size_known else None)
    caplog.set_level(logging.INFO)
    try:
        async with asyncio.timeout(DEADLINE):
            async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
                assert resp.status == 200
                body = await resp.read()
    except TimeoutError:
        offline = (await status_of(proxy))["upstream"]["holding"]["offline_since"]
        pytest.fail(f"no answer in {DEADLINE} s: the request was held as offline "
                    f"(offline_since {offline})")
    assert body == data
    assert proxy.app[RESOLVER].calls == 1  # exactly one re-resolve
    assert googlevideo.watch_hits[VID] == 1
    status = await status_of(proxy)
    upstream = status["upstream"]
    assert upstream["refreshes"] == 1
    assert "unreachable" not in upstream["retries"] and "breaker_open" not in upstream["retries"]
    assert upstream["holding"] == {"offline_since": None, "held": {}, "held_total": 0}
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if m.startswith(("holding requests", "upstream: offline"))], said
    assert any(f"points at 127.0.0.1:{dead}, which refuses connections" in m
               for m in said), said
    # The dead host and the live one are told apart in /status, by port.
    hosts = upstream["hosts"]
    assert hosts[f"127.0.0.1:{dead}"]["recent_failures"] == 1
    assert hosts[f"127.0.0.1:{googlevideo.port}"]["state"] == "closed"
    # The fresh URL was stored: the next play uses it, with no resolve.
    track = await proxy.app[STORE].get(VID)
    assert track is not None and track.stream_url is not None
    assert track.stream_url.startswith(f"{googlevideo.base_url}/videoplayback?")
    async with asyncio.timeout(DEADLINE), proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert await resp.read() == data
    assert proxy.app[RESOLVER].calls == 1


async def test_a_host_resting_after_refusals_sends_a_new_stream_to_a_fresh_url(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(300_000, seed=8)
    googlevideo.add_track(VID, data, title="Moved")
    other = "MovedEdge02"
    googlevideo.add_track(other, data[::-1], title="Moved Too")
    # One refusal opens a breaker: the second track finds its host resting.
    proxy = await make_proxy(**{**NO_HOLDING, "breaker": {"failures": 1, "reset_after": 600}})
    dead = free_port()
    await plant(proxy, googlevideo, dead, len(data))
    store = proxy.app[STORE]
    await store.upsert_track(other, googlevideo.watch_url(other), title="Moved Too")
    await store.save_stream(other, StreamInfo(url=googlevideo.sign(other, port=dead),
                                              expires_at=time.time() + 3600, size=len(data)))
    async with asyncio.timeout(DEADLINE):
        for track, expected in ((VID, data), (other, data[::-1])):
            async with proxy.session.get(proxy.url(f"/proxy/{track}")) as resp:
                assert resp.status == 200
                assert await resp.read() == expected
    assert proxy.app[RESOLVER].calls == 2  # one re-resolve each
    upstream = (await status_of(proxy))["upstream"]
    dead_host = upstream["hosts"][f"127.0.0.1:{dead}"]
    # The second track's stream never knocked: the host was resting.
    assert dead_host["state"] == "open" and dead_host["recent_failures"] == 1
    assert "breaker_open" not in upstream["retries"] and "unreachable" not in upstream["retries"]
    assert upstream["holding"]["held_total"] == 0 and upstream["refreshes"] == 2


async def test_a_fresh_url_that_is_refused_too_is_held_with_no_more_resolves(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(400_000, seed=6)
    googlevideo.add_track(VID, data, title="Moved Twice")
    proxy = await make_proxy(**NO_HOLDING)
    await plant(proxy, googlevideo, free_port(), len(data))
    edge = free_port()
    googlevideo.media_port = edge  # the page now hands out URLs on an edge not up yet
    fetcher = proxy.app[FETCHER]
    play = asyncio.ensure_future(proxy.session.get(proxy.url(f"/proxy/{VID}")))
    try:
        async with asyncio.timeout(DEADLINE):
            # Held on the fresh URL's host, through several tries of it (no
            # event says so: refused connections never reach the fake).
            while fetcher.stats().retries.get("unreachable", 0) < 3:
                assert not play.done(), "answered while the fresh URL's host refused"
                await asyncio.sleep(0.05)
            held = (await status_of(proxy))["upstream"]["holding"]
            assert held["held"] == {f"host 127.0.0.1:{edge}": 1}, held
            assert held["offline_since"] is not None  # held as offline, as before
            assert proxy.app[RESOLVER].calls == 1  # one re-resolve, not one per try
            assert not play.done()
            await googlevideo.listen_also(edge)  # the edge comes up
            async with await play as resp:
                assert resp.status == 200
                assert await resp.read() == data
    finally:
        play.cancel()
    assert proxy.app[RESOLVER].calls == 1
    assert (await status_of(proxy))["upstream"]["holding"]["held_total"] == 0
    assert proxy.app[SLOTS].in_use == 0


async def test_a_breaker_open_for_one_port_does_not_rest_another_port_of_the_host(
    googlevideo: FakeGooglevideo,
) -> None:
    data = random_audio(50_000, seed=7)
    googlevideo.add_track(VID, data, title="Next Door")
    dead = free_port()
    config = UpstreamConfig(allowed_hosts=("127.0.0.1",), connect_timeout=2.0)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        fetcher = UpstreamFetcher(config, session, BreakerConfig(failures=2, reset_after=600))
        down = StreamInfo(url=googlevideo.sign(VID, port=dead), expires_at=time.time() + 60)
        for _ in range(2):
            with pytest.raises(UpstreamUnreachable):
                await fetcher.open_range(down, 0, 999)
        with pytest.raises(UpstreamUnavailable, match=rf"127\.0\.0\.1:{dead} failed 2 times"):
            await fetcher.open_range(down, 0, 999)  # resting: not even tried
        up = StreamInfo(url=googlevideo.sign(VID), expires_at=time.time() + 60)
        opened = await fetcher.open_range(up, 0, 999)
        try:
            assert await opened.response.read() == data[:1000]
        finally:
            fetcher.finish(opened)
        assert fetcher.breakers[f"127.0.0.1:{dead}"].state == "open"
        assert fetcher.breakers[f"127.0.0.1:{googlevideo.port}"].state == "closed"
        await fetcher.aclose()


def test_hosts_are_named_with_their_port_unless_it_is_the_schemes_own() -> None:
    from ytproxy.upstream.fetcher import host_key

    assert host_key("https://rr3---sn-abc.googlevideo.com/videoplayback?x=1") == (
        "rr3---sn-abc.googlevideo.com")
    assert host_key("https://rr3---sn-abc.googlevideo.com:443/v") == "rr3---sn-abc.googlevideo.com"
    assert host_key("http://RR3.googlevideo.com:80/v") == "rr3.googlevideo.com"
    assert host_key("https://rr3.googlevideo.com:8443/v") == "rr3.googlevideo.com:8443"
    assert host_key("http://127.0.0.1:443/v") == "127.0.0.1:443"
    assert host_key("http://[::1]:8080/v") == "[::1]:8080"
    assert host_key("https://[::1]/v") == "::1"
