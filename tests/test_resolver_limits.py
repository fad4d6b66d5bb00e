"""The resolver's breaker and rate limit, through the daemon."""

from __future__ import annotations

import asyncio
import time

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio


async def status_of(proxy: RunningProxy, track_id: str) -> tuple[int, dict[str, str], bytes]:
    async with proxy.session.get(proxy.url(f"/proxy/{track_id}")) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_burst_of_cold_ids_is_spread_to_the_configured_rate(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    ids = [f"ColdBurst{n:02d}" for n in range(5)]
    for track_id in ids:
        googlevideo.add_track(track_id, random_audio(2000, seed=len(track_id)), title=track_id)
    proxy = await make_proxy(resolver={"max_calls_per_minute": 120})  # one every 0.5 s
    started = time.monotonic()
    finished: list[float] = []

    async def play(track_id: str) -> int:
        status, _, _ = await status_of(proxy, track_id)
        finished.append(time.monotonic() - started)
        return status

    statuses = await asyncio.gather(*(play(i) for i in ids))
    assert statuses == [200] * 5
    assert sum(googlevideo.watch_hits.values()) == 5
    # The first goes at once; each later one waits for its 0.5 s slot.
    assert max(finished) >= 4 * 0.5 * 0.9
    async with proxy.session.get(proxy.url("/status")) as resp:
        assert (await resp.json())["resolver"]["rate_limit_waiting"] == 0


async def test_waiting_past_the_deadline_is_503_with_retry_after(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    ids = ["SlowLane001", "SlowLane002", "SlowLane003"]
    for track_id in ids:
        googlevideo.add_track(track_id, random_audio(2000), title=track_id)
    proxy = await make_proxy(resolver={"max_calls_per_minute": 6, "rate_limit_wait": 0.5})
    results = await asyncio.gather(*(status_of(proxy, i) for i in ids))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 503, 503]
    refused = [r for r in results if r[0] == 503]
    assert all(int(r[1]["Retry-After"]) >= 1 for r in refused)
    assert all(b"max_calls_per_minute" in r[2] for r in refused)


async def test_resolver_breaker_opens_spares_stored_urls_and_closes(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    stored = random_audio(5000, seed=1)
    googlevideo.add_track("StoredOk001", stored, title="Stored")
    for n in range(4):
        googlevideo.add_track(f"NewTrack00{n}", random_audio(1000), title="New")
        googlevideo.set_watch_status(f"NewTrack00{n}", 503)
    proxy = await make_proxy(breaker={"failures": 3, "reset_after": 3.0},
                             retry={"gap_budget": 1.0, "hold_budget": 1.0})
    assert (await status_of(proxy, "StoredOk001"))[0] == 200  # resolved while healthy
    for n in range(3):
        assert (await status_of(proxy, f"NewTrack00{n}"))[0] == 503
    hits = sum(googlevideo.watch_hits.values())
    started = time.monotonic()
    status, headers, body = await status_of(proxy, "NewTrack003")
    # Held while the resolver rests (retry.hold_budget), then the 503.
    assert status == 503 and int(headers["Retry-After"]) >= 1
    assert b"yt-dlp failed 3 times in a row" in body
    assert time.monotonic() - started >= 0.9
    assert sum(googlevideo.watch_hits.values()) == hits  # yt-dlp was not called
    # A track whose stored URL is good plays on.
    status, _, body = await status_of(proxy, "StoredOk001")
    assert status == 200 and body == stored
    async with proxy.session.get(proxy.url("/status")) as resp:
        assert (await resp.json())["resolver"]["breaker"]["state"] == "open"
    googlevideo.set_watch_status("NewTrack003", None)  # the source recovers
    async with proxy.session.get(proxy.url("/status")) as resp:
        rest = (await resp.json())["resolver"]["breaker"]["retry_after"]
    await asyncio.sleep(rest + 0.1)
    assert (await status_of(proxy, "NewTrack003"))[0] == 200  # the trial call closes it
    async with proxy.session.get(proxy.url("/status")) as resp:
        assert (await resp.json())["resolver"]["breaker"]["state"] == "closed"
