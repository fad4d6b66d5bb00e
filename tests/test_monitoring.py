"""/status, /health, /metrics and the page at / — what a person watching the daemon sees."""

from __future__ import annotations

import re

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, random_audio
from ytproxy.config import Config
from ytproxy.monitoring import redacted_config
from ytproxy.server import STORE

VID = "Watched0001"


async def test_status_shows_a_live_stream_and_every_section(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(3_000_000)
    googlevideo.add_track(VID, data, title="On Air")
    googlevideo.throttle_bytes_per_sec = 400_000
    proxy = await make_proxy()
    resp = await proxy.session.get(proxy.url(f"/proxy/{VID}"), headers={"Range": "bytes=10-"})
    await resp.content.readexactly(200_000)
    async with proxy.session.get(proxy.url("/status")) as status_resp:
        status = await status_resp.json()
        raw = await status_resp.text()
    resp.close()
    assert status["version"] and status["uptime_seconds"] >= 0
    [stream] = status["streams"]
    assert stream["id"] == VID and stream["name"].startswith("On Air")
    assert stream["client"] == "127.0.0.1" and stream["range"] == "bytes=10-"
    assert stream["bytes_sent"] >= 200_000 and stream["rate_bytes_per_sec"] > 0
    assert {"retries", "refreshes", "started_at"} <= stream.keys()
    assert status["totals"]["started"] == 1
    assert status["store"]["tracks"] == 1 and status["store"]["size_bytes"] > 0
    resolver = status["resolver"]
    assert resolver["calls"] == 1 and resolver["breaker"]["state"] == "closed"
    assert {"cache_hits", "single_flight_joins", "failures", "rate_limit_waiting"} <= set(resolver)
    host = status["upstream"]["hosts"]["127.0.0.1"]
    assert host["state"] == "closed" and host["success_rate"] == 1.0
    assert status["config"]["server"]["port"] == proxy.config.server.port
    assert "sig=" not in raw and "expire=" not in raw


def test_secrets_are_masked_in_the_reported_config() -> None:
    config = Config().replace("upstream", proxy="http://user:hunter2@proxy.example:3128")
    shown = redacted_config(config)
    assert shown["upstream"]["proxy"] == "http://user:***@proxy.example:3128"
    assert "hunter2" not in str(shown)
    assert shown["upstream"]["allowed_hosts"] == ["*.googlevideo.com", "*.youtube.com"]


async def test_health_ok_degraded_and_down(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Fine")
    proxy = await make_proxy(breaker={"failures": 1, "reset_after": 60})
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
    googlevideo.set_watch_status(VID, 503)  # yt-dlp fails: the resolver's breaker opens
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 503
    async with proxy.session.get(proxy.url("/health")) as resp:
        body = await resp.json()
        assert resp.status == 503
    assert body["status"] == "degraded"
    assert any(r.startswith("resolver: breaker open") for r in body["reasons"])
    await proxy.app[STORE].close()  # the store stops answering
    async with proxy.session.get(proxy.url("/health")) as resp:
        body = await resp.json()
        assert resp.status == 503
    assert body["status"] == "down" and body["reasons"][0].startswith("store:")


async def test_metrics_are_prometheus_text_with_ytproxy_series(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(600_000)
    googlevideo.add_track(VID, data, title="Counted")
    proxy = await make_proxy(limits={"max_streams": 1})
    for _ in range(2):
        async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
            assert await resp.read() == data
    async with proxy.session.get(proxy.url("/metrics"),
                                 headers={"Accept-Encoding": "identity"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()

    def value(series: str) -> float:
        match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        assert match, f"{series} missing from:\n{text}"
        return float(match.group(1))

    assert value("ytproxy_active_streams") == 0
    assert value('ytproxy_streams_total{outcome="served"}') == 2
    assert value("ytproxy_bytes_sent_total") == 2 * len(data)
    assert value("ytproxy_resolver_calls_total") == 1
    assert value("ytproxy_resolver_cache_hits_total") == 1
    assert value("ytproxy_resolver_duration_seconds_count") == 1
    assert value("ytproxy_time_to_first_byte_seconds_count") == 2
    assert value('ytproxy_breaker_state{name="resolver"}') == 0
    assert value("ytproxy_upstream_requests_total") >= 2
    assert all(line.startswith(("#", "ytproxy_")) for line in text.splitlines() if line)


async def test_status_page_is_self_contained_html(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(2_000_000), title="<script>alert(1)</script>")
    googlevideo.throttle_bytes_per_sec = 300_000
    proxy = await make_proxy()
    resp = await proxy.session.get(proxy.url(f"/proxy/{VID}"))
    await resp.content.readexactly(50_000)
    async with proxy.session.get(proxy.url("/")) as page_resp:
        assert page_resp.status == 200
        assert page_resp.headers["Content-Type"].startswith("text/html")
        page = await page_resp.text()
    resp.close()
    assert '<meta http-equiv="refresh"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert VID in page and ">ok<" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no external assets
