"""/status, /health, /metrics and the page at / — what a person watching the daemon sees."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.conftest import LOOP
from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.tube import FakeTube
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.config import Config
from ytproxy.http.app import STORE
from ytproxy.http.monitoring import redacted_config
from ytproxy.loops import loop_name, resolve_event_loop

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
    assert status["event_loop"] == loop_name() == resolve_event_loop(LOOP)
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
    host = status["upstream"]["hosts"][f"127.0.0.1:{googlevideo.port}"]
    assert host["state"] == "closed" and host["success_rate"] == 1.0
    assert status["config"]["server"]["port"] == proxy.config.server.port
    assert "sig=" not in raw and "expire=" not in raw


def test_secrets_are_masked_in_the_reported_config() -> None:
    config = Config().replace("upstream", proxy="http://user:hunter2@proxy.example:3128")
    shown = redacted_config(config)
    assert shown["upstream"]["proxy"] == "http://user:***@proxy.example:3128"
    assert "hunter2" not in str(shown)
    assert shown["upstream"]["allowed_hosts"] == ["*.googlevideo.com", "*.youtube.com"]


# Secrets in every place a config can hold one, written as a person would.
SECRET_CONFIG = """
[server]
token = "tok-0123456789abcdef"
[upstream]
proxy = "http://user:hunter2@[::1]:3128"
[mpd]
password = "mpd-secret"
[resolver]
pot_provider_url = "http://pot:pot-secret@127.0.0.1:4416"
search_url_template = "https://music.youtube.com/search?q={query}&key=query-secret#songs"
[resolver.ytdlp_options]
geo_verification_proxy = "http://geo:geo-secret@Geo.Example:8080"
username = "me"
Password = "ytdlp-secret"
http_headers = {Cookie = "SID=cookie-secret", X-Signed-In = "SAPISID=sapisid-secret"}
extractor_args = {youtube = {token = ["table-secret"]}}
"""
SECRETS = ("hunter2", "mpd-secret", "pot-secret", "query-secret", "geo-secret", "ytdlp-secret",
           "cookie-secret", "table-secret", "tok-0123456789abcdef", "sapisid-secret")


def _masked_places(value: Any, path: str = "") -> dict[str, Any]:
    """Every value (by its dotted path) that has a mask in it."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in _masked_places(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value)
                for k, v in _masked_places(item, f"{path}[{i}]").items()}
    return {path: value} if isinstance(value, str) and "***" in value else {}


async def test_check_config_and_status_mask_the_same_secrets_the_same_way(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(SECRET_CONFIG)
    printed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ytproxy", "--config", str(path), "check-config"],
        capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    proxy = await make_proxy(**tomllib.loads(SECRET_CONFIG))
    async with proxy.session.get(proxy.url("/status")) as resp:
        raw = await resp.text()
    shown = json.loads(raw)["config"]
    for secret in SECRETS:
        assert secret not in printed.stdout and secret not in raw, secret
    cli = _masked_places(tomllib.loads(printed.stdout))
    assert cli == _masked_places(shown)
    assert cli[".upstream.proxy"] == "http://user:***@[::1]:3128"
    assert cli[".resolver.search_url_template"] == (
        "https://music.youtube.com/search?q={query}&key=***#songs")
    assert cli[".resolver.ytdlp_options.geo_verification_proxy"] == (
        "http://geo:***@Geo.Example:8080")
    assert cli[".resolver.ytdlp_options.http_headers.X-Signed-In"] == "SAPISID=***"
    assert len(cli) == len(SECRETS)
    ytdlp = shown["resolver"]["ytdlp_options"]
    assert ytdlp["username"] == "me"  # only what is secret is masked


async def test_health_ok_degraded_and_down(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    other = "Watched0002"
    googlevideo.add_track(VID, random_audio(1000), title="Fine")
    googlevideo.add_track(other, random_audio(1000), title="Also fine")
    proxy = await make_proxy(breaker={"failures": 2, "reset_after": 60})
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
    # yt-dlp fails for two tracks (one track's failures never stand for the
    # source): the resolver's breaker opens.
    for video_id in (VID, other):
        googlevideo.set_watch_status(video_id, 503)
        async with proxy.session.get(proxy.url(f"/proxy/{video_id}")) as resp:
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


async def get_status(proxy: RunningProxy) -> tuple[dict[str, Any], str]:
    async with proxy.session.get(proxy.url("/status")) as resp:
        assert resp.status == 200
        return await resp.json(), await resp.text()


async def get_page(proxy: RunningProxy) -> str:
    async with proxy.session.get(proxy.url("/")) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_status_and_page_name_the_js_runtime_the_client_and_never_a_cookie(
    faketube: FakeTube, make_tube_proxy: ProxyFactory, tmp_path: Path
) -> None:
    """The real yt-dlp (FakeTube's extractor) resolves with a cookies file: /status
    and the page say which runtime it was given, which player client served,
    and that cookies came from a file — never what the cookies are."""
    secret = "m0nitor-cookie-v4lue"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n"
                       f"127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\t{secret}\n")
    cookies.chmod(0o600)
    data = random_audio(100_000)
    faketube.add_track(VID, data, title="Known Client")
    proxy = await make_tube_proxy(resolver={"cookies_file": str(cookies)})

    before, _ = await get_status(proxy)
    assert before["resolver"]["client"] is None  # nothing resolved yet
    assert "player client — (nothing resolved yet)" in await get_page(proxy)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200 and await resp.read() == data

    status, raw = await get_status(proxy)
    deno = Path(sys.executable).parent / "deno"  # what `pip install` brought
    done = await asyncio.to_thread(subprocess.run, [str(deno), "--version"],
                                   capture_output=True, text=True, check=True)
    said = done.stdout.splitlines()[0]
    resolver = status["resolver"]
    assert resolver["js_runtime"] == {"name": "deno", "path": str(deno), "version": said}
    assert resolver["client"] == "TVHTML5"  # FakeTube's default tv_samsung: c=TVHTML5
    assert resolver["cookies"] == "file"
    assert secret not in raw and "SID" not in raw

    page = await get_page(proxy)
    version = re.match(r"deno (\d+\.\d+\.\d+)", said)
    assert version, said
    assert f"JavaScript runtime deno {version.group(1)} at <code>{deno}</code>" in page
    assert "player client TVHTML5" in page and "cookies file" in page
    assert secret not in page


async def test_status_without_a_runtime_and_with_browser_cookies(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-deno"
    proxy = await make_proxy(resolver={"js_runtime": str(missing),
                                       "cookies_from_browser": "firefox"})
    status, _ = await get_status(proxy)
    assert status["resolver"]["js_runtime"] is None
    assert status["resolver"]["cookies"] == "browser:firefox"
    assert status["resolver"]["client"] is None
    page = await get_page(proxy)
    assert "no JavaScript runtime (run <code>ytproxy doctor</code>)" in page
    assert "cookies browser:firefox" in page
