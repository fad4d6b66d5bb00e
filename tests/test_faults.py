"""Fault injection: every transient upstream failure is absorbed, byte-exact."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.http.app import SLOTS

SIZE = 1_200_000
CHUNK = 256 * 1024
# Short waits so faults are absorbed quickly; the logic is the same as the defaults.
FAST: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": CHUNK, "read_timeout": 0.5, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.02, "max_delay": 0.2, "gap_budget": 10.0, "attempts": 8},
}


async def fetch(proxy: RunningProxy, track_id: str) -> tuple[int, bytes]:
    async with proxy.session.get(proxy.url(f"/proxy/{track_id}")) as resp:
        return resp.status, await resp.read()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FAULTS = {
    "reset": lambda: Fault("reset", at_byte=300_000),
    "truncate": lambda: Fault("truncate", at_byte=600_000),
    "stall": lambda: Fault("stall", at_byte=400_000, stall_seconds=5),
    "5xx_burst": lambda: Fault("status", status=503, times=3),
    "429_retry_after": lambda: Fault("status", status=429, retry_after="1", times=1),
    "revoked_url": lambda: Fault("revoke", at_byte=300_000),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
async def test_each_fault_is_absorbed_byte_exact(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    data = random_audio(SIZE, seed=len(kind))
    googlevideo.add_track("FaultTrack1", data, title="Faulty")
    fault = googlevideo.add_fault("FaultTrack1", FAULTS[kind]())
    proxy = await make_proxy(**FAST)
    status, body = await fetch(proxy, "FaultTrack1")
    assert status == 200
    assert digest(body) == digest(data)
    assert fault.fired >= 1
    assert proxy.app[SLOTS].in_use == 0
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert retries, "the fault was absorbed silently"
    for record in caplog.records:  # signed URLs carry credentials in their query
        text = record.getMessage()
        assert "sig=" not in text and "expire=" not in text, text


async def test_retry_after_is_honoured(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(100_000)
    googlevideo.add_track("FaultTrack1", data, title="Busy")
    proxy = await make_proxy(**FAST)
    await fetch(proxy, "FaultTrack1")  # resolve first, so only the 429 is timed
    googlevideo.add_fault("FaultTrack1", Fault("status", status=429, retry_after="1"))
    started = time.monotonic()
    status, body = await fetch(proxy, "FaultTrack1")
    assert status == 200 and body == data
    assert time.monotonic() - started >= 0.95  # waited as told, not the 0.2 s backoff cap


async def test_expiry_while_the_listener_is_paused(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    # Far bigger than loopback socket buffers, so the pause really stops the relay.
    data = random_audio(12 * SIZE, seed=9)
    googlevideo.add_track("FaultTrack1", data, title="Paused")
    proxy = await make_proxy(**FAST)
    async with proxy.session.get(proxy.url("/proxy/FaultTrack1")) as resp:
        head = await resp.content.readexactly(100_000)
        # MPD paused for hours: every URL issued so far has expired upstream.
        base = time.time()
        googlevideo.clock = lambda: base + 7 * 3600
        await asyncio.sleep(0.8)  # idle past the read timeout while paused
        rest = await resp.read()
    assert head + rest == data
    assert googlevideo.counts["expired"] >= 1
    assert googlevideo.watch_hits["FaultTrack1"] == 2


async def test_resolver_failing_transiently_during_refresh(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(12 * SIZE, seed=4)  # beyond socket buffers: the revoke lands mid-way
    googlevideo.add_track("FaultTrack1", data, title="Flaky Resolver")
    proxy = await make_proxy(**FAST)
    async with proxy.session.get(proxy.url("/proxy/FaultTrack1")) as resp:
        head = await resp.content.readexactly(50_000)
        googlevideo.set_watch_faults("FaultTrack1", [500, 503])
        googlevideo.revoke("FaultTrack1")
        rest = await resp.read()
    assert head + rest == data
    assert googlevideo.watch_hits["FaultTrack1"] == 4  # first resolve, two failures, success


async def test_permanent_refusal_after_refresh_gives_up_cleanly(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    data = random_audio(12 * SIZE, seed=5)  # beyond socket buffers: the revoke lands mid-way
    googlevideo.add_track("FaultTrack1", data, title="Gone Midway")
    googlevideo.add_track("OtherTrack1", data[:50_000], title="Still Fine")
    proxy = await make_proxy(**FAST)
    caplog.set_level(logging.WARNING)
    async with proxy.session.get(proxy.url("/proxy/FaultTrack1")) as resp:
        await resp.content.readexactly(50_000)
        googlevideo.set_watch_status("FaultTrack1", 404)  # the video was taken down
        googlevideo.revoke("FaultTrack1")
        with pytest.raises(Exception):  # noqa: B017 - the body is cut short
            await resp.read()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "FaultTrack1" in errors[0].getMessage()
    assert proxy.app[SLOTS].in_use == 0
    status, body = await fetch(proxy, "OtherTrack1")
    assert status == 200 and body == data[:50_000]


async def test_dead_upstream_ends_within_the_budget_with_one_error(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    data = random_audio(12 * SIZE, seed=6)
    googlevideo.add_track("FaultTrack1", data, title="Dying")
    googlevideo.add_track("OtherTrack1", data[:10_000], title="Alive")
    proxy = await make_proxy(upstream=FAST["upstream"],
                             retry={"base_delay": 0.05, "max_delay": 0.3, "gap_budget": 2.0,
                                    "attempts": 100},
                             breaker={"failures": 1000})  # the budget alone ends it here
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    async with proxy.session.get(proxy.url("/proxy/FaultTrack1")) as resp:
        await resp.content.readexactly(10_000)
        googlevideo.add_fault("FaultTrack1", Fault("status", status=503, times=10_000))
        googlevideo.add_fault("FaultTrack1", Fault("reset", at_byte=CHUNK + 1000))
        with pytest.raises(Exception):  # noqa: B017 - the body is cut short
            await resp.read()
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 3.0  # the gap budget plus slack for a loaded machine
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "kept failing" in errors[0].getMessage()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("retrying in" in w and "FaultTrack1" in w for w in warnings)
    assert all("sig=" not in r.getMessage() for r in caplog.records)
    assert proxy.app[SLOTS].in_use == 0
    googlevideo.clear_faults()
    status, body = await fetch(proxy, "OtherTrack1")
    assert status == 200 and body == data[:10_000]


fault_plans = st.lists(
    st.one_of(
        st.builds(lambda b: Fault("reset", at_byte=b), st.integers(1, SIZE - 1)),
        st.builds(lambda b: Fault("truncate", at_byte=b), st.integers(1, SIZE - 1)),
        st.builds(lambda b: Fault("stall", at_byte=b, stall_seconds=3), st.integers(1, SIZE - 1)),
        st.builds(lambda b: Fault("revoke", at_byte=b), st.integers(0, SIZE - 1)),
        st.builds(lambda s, n: Fault("status", status=s, times=n),
                  st.sampled_from([500, 502, 503, 504, 429]), st.integers(1, 3)),
    ),
    max_size=4,
# A burst longer than retry.attempts (8) in one gap is a dead track, not a fault
# to absorb: the status faults all land on the first request's gap.
).filter(lambda plan: sum(f.times for f in plan if f.kind == "status") <= 6)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=fault_plans)
async def test_random_fault_plans_never_change_the_bytes(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, plan: list[Fault]
) -> None:
    data = random_audio(SIZE, seed=11)
    googlevideo.clear_faults()
    if "FaultTrack1" not in googlevideo.tracks:
        googlevideo.add_track("FaultTrack1", data, title="Random")
    for fault in plan:
        googlevideo.add_fault("FaultTrack1", fault)
    proxy = await make_proxy(**FAST)
    try:
        status, body = await fetch(proxy, "FaultTrack1")
    finally:
        # Each example's daemon lets go of the store (and its lock) before the
        # next one opens it, as a restarted daemon would.
        await proxy.session.close()
        await proxy.server.close()
    assert status == 200
    assert digest(body) == digest(data)


async def test_host_breaker_opens_fails_fast_and_closes_after_recovery(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(100_000, seed=12)
    googlevideo.add_track("FaultTrack1", data, title="Breaker")
    googlevideo.add_track("FaultTrack2", data, title="Breaker Too")
    proxy = await make_proxy(upstream=FAST["upstream"],
                             retry={"base_delay": 0.01, "max_delay": 0.05, "gap_budget": 1.0,
                                    "attempts": 3, "hold_budget": 1.0},
                             breaker={"failures": 3, "reset_after": 4.0})
    for track in ("FaultTrack1", "FaultTrack2"):
        async with proxy.session.head(proxy.url(f"/proxy/{track}")) as resp:
            assert resp.status == 200  # resolved and stored while all is well
    # 500s for two tracks say the host is unwell (one track's would not).
    googlevideo.add_fault("FaultTrack2", Fault("status", status=500, times=10_000))
    status, _ = await fetch(proxy, "FaultTrack2")
    assert status == 502
    googlevideo.add_fault("FaultTrack1", Fault("status", status=500, times=10_000))
    status, _ = await fetch(proxy, "FaultTrack1")
    assert status in (502, 503)  # three failures open the breaker
    sent_before = googlevideo.counts["fault_status"]
    started = time.monotonic()
    async with proxy.session.get(proxy.url("/proxy/FaultTrack1")) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
    # Held for retry.hold_budget while the host rests, then given up; upstream
    # was not asked meanwhile.
    assert time.monotonic() - started >= 0.9
    assert body["error"] == "upstream_unavailable" and "127.0.0.1" in body["message"]
    assert "hold_budget" in body["message"]
    assert googlevideo.counts["fault_status"] == sent_before
    async with proxy.session.get(proxy.url("/status")) as resp:
        hosts = (await resp.json())["upstream"]["hosts"]
    assert hosts[f"127.0.0.1:{googlevideo.port}"]["state"] == "open"
    googlevideo.clear_faults()  # upstream recovers
    # The breaker's reset_after: then one trial decides.
    await asyncio.sleep(hosts[f"127.0.0.1:{googlevideo.port}"]["retry_after"] + 0.1)
    status, body_bytes = await fetch(proxy, "FaultTrack1")
    assert status == 200 and body_bytes == data
    async with proxy.session.get(proxy.url("/status")) as resp:
        hosts = (await resp.json())["upstream"]["hosts"]
    assert hosts[f"127.0.0.1:{googlevideo.port}"]["state"] == "closed"
