"""A bad track never costs another: failures count against what failed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio


def two_tracks(googlevideo: FakeGooglevideo) -> bytes:
    """LeftTrack01 (long) and NextTrack01 (short, returned) on the fake."""
    other = random_audio(100_000, seed=4)
    googlevideo.add_track("LeftTrack01", random_audio(6_000_000, seed=3), title="Left")
    googlevideo.add_track("NextTrack01", other, title="Next")
    return other


FAST: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 0.5, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.01, "max_delay": 0.05, "gap_budget": 2.0, "attempts": 20},
    "breaker": {"failures": 3, "reset_after": 30.0},
}
# One slot, and retries slow enough that a slot held for nobody would show.
ONE_SLOT: dict[str, dict[str, Any]] = {
    **FAST, "retry": {**FAST["retry"], "base_delay": 0.2, "max_delay": 0.5, "gap_budget": 5.0},
    "limits": {"max_streams": 1, "max_connections": 8},
}


async def next_song_plays(proxy: RunningProxy, other: bytes) -> None:
    """NextTrack01 gets the one slot within 2 s, whole."""
    deadline = time.monotonic() + 2.0
    while True:
        async with proxy.session.get(proxy.url("/proxy/NextTrack01")) as resp:
            if resp.status == 200:
                assert await resp.read() == other
                return
        assert time.monotonic() < deadline, "the slot stayed taken for nobody"
        await asyncio.sleep(0.1)


async def test_a_dead_track_does_not_rest_its_host_for_the_next_one(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    # Reproduction: after one track's 503s, the next healthy track on the same
    # host got "503 ... resting it for 30 s" without a single upstream request.
    good = random_audio(300_000, seed=1)
    googlevideo.add_track("DeadTrack01", random_audio(300_000, seed=2), title="Dead")
    googlevideo.add_track("GoodTrack01", good, title="Good")
    proxy = await make_proxy(**FAST)
    googlevideo.add_fault("DeadTrack01", Fault("status", status=503, times=10_000))
    caplog.set_level(logging.WARNING)
    async with proxy.session.get(proxy.url("/proxy/DeadTrack01")) as resp:
        assert resp.status == 502
    assert googlevideo.counts["fault_status"] >= 10  # far past the breaker's 3
    before = googlevideo.counts["ok"]
    async with proxy.session.get(proxy.url("/proxy/GoodTrack01")) as resp:
        assert resp.status == 200
        assert await resp.read() == good
    assert googlevideo.counts["ok"] > before
    status = await (await proxy.session.get(proxy.url("/status"))).json()
    assert status["upstream"]["hosts"][f"127.0.0.1:{googlevideo.port}"]["state"] == "closed"


async def test_a_listener_who_leaves_frees_its_slot_and_its_retries_stop(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    # Reproduction: with max_streams = 1, a client that read 32 KB and closed left
    # new requests answered 503 for 5 s while the daemon retried for nobody,
    # then logged an ERROR.
    other = two_tracks(googlevideo)
    proxy = await make_proxy(**ONE_SLOT)
    caplog.set_level(logging.WARNING)
    async with aiohttp.ClientSession() as player, player.get(
            proxy.url("/proxy/LeftTrack01")) as resp:
        # The first range came with the headers; every range after it fails.
        googlevideo.add_fault("LeftTrack01", Fault("status", status=503, times=10_000))
        await resp.content.readexactly(32_768)
        await googlevideo.wait_for(lambda: googlevideo.counts["fault_status"] >= 1, 5)
    await next_song_plays(proxy, other)
    await no_more_retries(googlevideo, caplog)


async def test_a_listener_who_leaves_before_the_first_byte_frees_its_slot(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    other = two_tracks(googlevideo)
    proxy = await make_proxy(**ONE_SLOT)
    async with proxy.session.head(proxy.url("/proxy/LeftTrack01")) as resp:
        assert resp.status == 200
    googlevideo.add_fault("LeftTrack01", Fault("status", status=503, times=10_000))
    caplog.set_level(logging.WARNING)
    async with aiohttp.ClientSession() as player:
        waiting = asyncio.ensure_future(player.get(proxy.url("/proxy/LeftTrack01")))
        await googlevideo.wait_for(lambda: googlevideo.counts["fault_status"] >= 1, 5)
        waiting.cancel()  # the player gives up on this song
    await next_song_plays(proxy, other)
    await no_more_retries(googlevideo, caplog)


async def no_more_retries(googlevideo: FakeGooglevideo,
                          caplog: pytest.LogCaptureFixture) -> None:
    faults = googlevideo.counts["fault_status"]
    await asyncio.sleep(1.0)
    assert googlevideo.counts["fault_status"] == faults  # nobody retries for it any more
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
