"""A bad track never costs another: failures count against what failed."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import ProxyFactory, random_audio

FAST: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 0.5, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.01, "max_delay": 0.05, "gap_budget": 2.0, "attempts": 20},
    "breaker": {"failures": 3, "reset_after": 30.0},
}


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
    assert status["upstream"]["hosts"]["127.0.0.1"]["state"] == "closed"
