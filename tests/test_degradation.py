"""Graceful degradation: a failed refresh keeps a working URL; a busy store cuts nothing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, random_audio
from ytproxy.http.app import STORE, TRACKS

VID = "Degrade0001"


async def test_a_failed_refresh_keeps_the_still_valid_url(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    data = random_audio(300_000)
    googlevideo.add_track(VID, data, title="Keep Going")
    googlevideo.url_ttl = 120  # valid for two minutes: inside the 300 s refresh margin
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200 and await resp.read() == data
    googlevideo.set_watch_status(VID, 503)  # the resolver is down now
    caplog.set_level(logging.WARNING)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    assert googlevideo.watch_hits[VID] == 2  # it tried to refresh, then used the old URL
    assert any("keeping the stored URL" in r.getMessage() for r in caplog.records)
    await proxy.app[TRACKS].drain()  # the failure is recorded in the background
    track = await proxy.app[STORE].get(VID)
    assert track is not None and track.last_error  # the failure is on record


async def test_an_expired_url_and_a_failing_resolver_is_a_clear_503(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Too Late")
    googlevideo.url_ttl = 10  # inside even the last-resort margin
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    googlevideo.set_watch_status(VID, 503)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "resolver_unavailable"


async def test_a_locked_store_never_delays_or_cuts_a_stream(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(2_000_000, seed=3)
    googlevideo.add_track(VID, data, title="Busy Store")
    proxy = await make_proxy(store={"busy_timeout": 0.1})
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200  # stored with a good URL
    # Another process (say `ytproxy add`) holds the write lock for a while.
    blocker = sqlite3.connect(proxy.app[STORE].path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
            assert resp.status == 200
            first = await resp.content.readexactly(1000)
            time_to_first = time.monotonic() - started
            rest = await resp.read()
        assert first + rest == data
        assert time_to_first < 0.5  # the play count write waits in the background
        await asyncio.sleep(0.3)  # inside the write's retries
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    for _ in range(50):  # the background write lands once the lock is gone
        track = await proxy.app[STORE].get(VID)
        assert track is not None
        if track.play_count == 1:
            break
        await asyncio.sleep(0.05)
    assert track.play_count == 1
