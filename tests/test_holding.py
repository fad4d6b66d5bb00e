"""Hold, don't refuse: while upstream is out of reach a request waits (MPD waits
for headers with no timeout of its own) and a playing stream keeps its slot,
for up to retry.hold_budget; then the JSON 503 as before."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.http.app import SLOTS

VID = "HeldTrack01"
HOLD: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 0.5, "connect_timeout": 0.5},
    "retry": {"base_delay": 0.05, "max_delay": 0.3, "gap_budget": 1.0, "hold_budget": 10.0},
    "breaker": {"failures": 3, "reset_after": 0.5},
}


async def status_of(proxy: RunningProxy) -> dict[str, Any]:
    async with proxy.session.get(proxy.url("/status")) as resp:
        return dict(await resp.json())


async def wait_until(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_song_asked_for_while_offline_is_held_then_played_whole(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_audio(800_000, seed=1)
    googlevideo.add_track(VID, data, title="Held")
    proxy = await make_proxy(**HOLD)
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200  # resolved and stored while online
    caplog.set_level(logging.WARNING)
    await googlevideo.go_offline()
    play = asyncio.ensure_future(proxy.session.get(proxy.url(f"/proxy/{VID}")))

    async def holding() -> bool:
        held = (await status_of(proxy))["upstream"]["holding"]
        return bool(held["held_total"] and held["offline_since"])
    await wait_until(holding, 5)
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 503
        reasons = (await resp.json())["reasons"]
    assert any(r.startswith("offline since") for r in reasons), reasons
    assert any("holding 1 request for host 127.0.0.1" in r for r in reasons), reasons
    await asyncio.sleep(2.0)  # longer than gap_budget: a track's own budget would be spent
    assert not play.done()
    await googlevideo.go_online()
    async with await play as resp:
        assert resp.status == 200
        assert await resp.read() == data
    holding_lines = [r.getMessage() for r in caplog.records
                     if r.getMessage().startswith("holding requests for")]
    assert len(holding_lines) == 2, holding_lines  # once when it starts, once when it ends
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await status_of(proxy))["upstream"]["holding"] == {
        "offline_since": None, "held": {}, "held_total": 0}


async def test_a_playing_stream_rides_out_an_outage_and_resumes_at_the_byte(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(6_000_000, seed=2)  # beyond socket buffers: the outage lands mid-way
    googlevideo.add_track(VID, data, title="Outage")
    proxy = await make_proxy(**HOLD)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        head = await resp.content.readexactly(200_000)
        await googlevideo.go_offline()
        reader = asyncio.ensure_future(resp.read())
        await asyncio.sleep(3.0)  # three times gap_budget
        assert not reader.done()
        await googlevideo.go_online()
        rest = await reader
    assert head + rest == data


async def test_offline_past_the_hold_budget_is_a_503_after_the_budget_not_before(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    googlevideo.add_track(VID, random_audio(100_000), title="Gone Offline")
    proxy = await make_proxy(**{**HOLD, "retry": {**HOLD["retry"], "hold_budget": 2.0}})
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    await googlevideo.go_offline()
    started = time.monotonic()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        body = await resp.json()
        assert resp.status == 503 and "Retry-After" in resp.headers
    assert time.monotonic() - started >= 1.9
    assert "hold_budget" in body["message"]
    assert proxy.app[SLOTS].in_use == 0


async def test_a_listener_who_leaves_while_held_frees_its_slot(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    googlevideo.add_track(VID, random_audio(100_000), title="Left")
    proxy = await make_proxy(**HOLD, limits={"max_streams": 1, "max_connections": 8})
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    await googlevideo.go_offline()
    async with aiohttp.ClientSession() as impatient:
        waiting = asyncio.ensure_future(impatient.get(proxy.url(f"/proxy/{VID}")))

        async def slot_taken() -> bool:
            return proxy.app[SLOTS].in_use == 1
        await wait_until(slot_taken, 5)
        waiting.cancel()  # the player gives up and closes the connection
    await googlevideo.go_online()

    async def slot_free() -> bool:
        return proxy.app[SLOTS].in_use == 0
    await wait_until(slot_free, 3)


async def test_a_new_track_is_held_while_yt_dlp_cannot_reach_the_source(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(300_000, seed=3)
    googlevideo.add_track(VID, data, title="Not Yet Resolved")
    proxy = await make_proxy(**HOLD)
    await googlevideo.go_offline()  # the watch page too: yt-dlp's connection is refused
    play = asyncio.ensure_future(proxy.session.get(proxy.url(f"/proxy/{VID}")))

    async def held_for_the_resolver() -> bool:
        held = (await status_of(proxy))["upstream"]["holding"]["held"]
        return "the resolver (yt-dlp)" in held
    await wait_until(held_for_the_resolver, 20)
    await googlevideo.go_online()
    async with await play as resp:
        assert resp.status == 200
        assert await resp.read() == data
