"""Upstream's and the cache's figures as typed snapshots: counted by methods,
read once, and shown under the very names /status and /metrics always used."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import ProxyFactory, random_audio
from tests.test_faults import FAST, fetch
from ytproxy.http.app import CACHE, FETCHER
from ytproxy.upstream.counters import UpstreamCounters

VID = "Snapshot001"


def test_a_snapshot_is_frozen_and_names_each_retry_cause_in_the_order_first_seen() -> None:
    counters = UpstreamCounters()
    counters.retried("reset")
    counters.retried(503)  # an HTTP status upstream answered
    counters.retried("reset")
    counters.fetched(1000)
    counters.fetched(24)
    counters.resumed()
    counters.refreshed()
    counters.failed_over()
    counters.requested()
    counters.requested()
    before = counters.snapshot()
    assert (before.requests, before.bytes, before.resumes, before.refreshes,
            before.failovers) == (2, 1024, 1, 1, 1)
    assert list(before.retries.items()) == [("reset", 2), ("http_503", 1)]
    counters.retried("timeout")
    counters.fetched(1)
    assert before.bytes == 1024 and "timeout" not in before.retries  # taken, not a view
    assert counters.snapshot().retries["timeout"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.bytes = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        before.retries["reset"] = 0  # type: ignore[index]


async def test_status_and_metrics_show_the_snapshots_under_their_old_names(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(cache={"max_size": 64 * 1_048_576}, **FAST)
    data = random_audio(700_000, seed=27)
    googlevideo.add_track(VID, data, title="Counted twice")
    googlevideo.add_fault(VID, Fault("status", status=503, times=2))
    # A download (a miss, retried past the two 503s), then a play from its file (a hit).
    assert [await fetch(proxy, VID) for _ in range(2)] == [(200, data)] * 2
    async with proxy.session.get(proxy.url("/status")) as resp:
        status = await resp.json()
    async with proxy.session.get(proxy.url("/metrics"),
                                 headers={"Accept-Encoding": "identity"}) as resp:
        text = await resp.text()

    def value(series: str) -> float:
        match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        assert match, f"{series} missing from:\n{text}"
        return float(match.group(1))

    stats = proxy.app[FETCHER].stats()
    upstream = status["upstream"]
    assert stats.retries == {"http_503": 2}
    assert upstream["retries"] == {"http_503": 2}
    assert value('ytproxy_upstream_retries_total{cause="http_503"}') == 2
    assert upstream["bytes"] == stats.bytes == value("ytproxy_upstream_bytes_total") == len(data)
    assert upstream["requests"] == stats.requests == value("ytproxy_upstream_requests_total")
    assert upstream["resumes"] == stats.resumes == value("ytproxy_upstream_resumes_total")
    assert upstream["refreshes"] == stats.refreshes == value("ytproxy_upstream_refreshes_total")

    cache = proxy.app[CACHE]
    assert cache is not None
    snapshot = cache.snapshot()
    assert (snapshot.hits, snapshot.misses, snapshot.tracks) == (1, 1, 1)
    assert status["cache"] == snapshot.as_dict()
    assert list(status["cache"]) == [
        "enabled", "directory", "size_bytes", "reserved_bytes", "limit_bytes", "tracks",
        "partial", "downloading", "hits", "misses", "bytes_served", "bytes_saved",
        "evictions", "downloads_done", "disk_full"]
    assert value("ytproxy_cache_hits_total") == 1
    assert value("ytproxy_cache_misses_total") == 1
    assert value("ytproxy_cache_tracks") == 1
    assert value("ytproxy_cache_size_bytes") == len(data) == snapshot.size_bytes
