"""/proxy behaviour beyond the bytes: cap, disconnects, lazy add, refresh, errors, ICY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.http.app import SLOTS, STORE, TRACKS
from ytproxy.http.icy import parse_icy_stream

VID = "Zx9_-Zx9_-A"


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a condition on the daemon's state, bounded in time."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_cap_rejects_exactly_the_excess_fast_and_before_any_work(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(2_000_000), title="Capped")
    googlevideo.throttle_bytes_per_sec = 200_000  # keep the admitted streams open
    proxy = await make_proxy(limits={"max_streams": 3})
    # Warm the store so admitted streams do not all wait on the resolver.
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    watch_before = googlevideo.watch_hits[VID]

    async def one() -> tuple[int, float, str | None]:
        started = time.monotonic()
        resp = await proxy.session.get(proxy.url(f"/proxy/{VID}"))
        status = resp.status
        elapsed = time.monotonic() - started
        retry = resp.headers.get("Retry-After")
        if status == 503:
            body = await resp.json()
            assert body["error"] == "at_capacity" and "max_streams" in body["message"]
        resp.close()
        return status, elapsed, retry

    results = await asyncio.gather(*(one() for _ in range(3 + 5)))
    rejected = [r for r in results if r[0] == 503]
    assert len(rejected) == 5
    assert sum(1 for r in results if r[0] == 200) == 3
    assert all(r[2] is not None and int(r[2]) > 0 for r in rejected)
    assert max(r[1] for r in rejected) < 2.0
    assert googlevideo.watch_hits[VID] == watch_before
    await until(lambda: proxy.app[SLOTS].in_use == 0)
    assert proxy.app[SLOTS].rejected == 5


async def test_client_disconnect_frees_the_slot_and_closes_upstream(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(3_000_000), title="Leaving")
    googlevideo.throttle_bytes_per_sec = 300_000
    proxy = await make_proxy()
    resp = await proxy.session.get(proxy.url(f"/proxy/{VID}"))
    assert resp.status == 200
    await resp.content.readexactly(100_000)
    assert proxy.app[SLOTS].in_use == 1
    resp.close()  # the listener goes away mid-song
    await googlevideo.wait_no_open_bodies(timeout=5)
    assert googlevideo.aborted_bodies >= 1
    await until(lambda: proxy.app[SLOTS].in_use == 0)
    # The daemon keeps serving.
    googlevideo.throttle_bytes_per_sec = None
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"),
                                 headers={"Range": "bytes=0-9"}) as again:
        assert again.status == 206


async def test_unknown_valid_id_is_added_on_first_play(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(400_000)
    googlevideo.add_track(VID, data, title="First Play")
    proxy = await make_proxy()
    assert await proxy.app[STORE].get(VID) is None
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    track = await proxy.app[STORE].get(VID)
    assert track is not None and track.title is not None
    assert track.title.startswith("First Play")
    # Plays are counted in the background, a second's worth at a time.
    for _ in range(60):
        track = await proxy.app[STORE].get(VID)
        assert track is not None
        if track.play_count:
            break
        await asyncio.sleep(0.05)
    assert track.play_count == 1
    async with proxy.session.get(proxy.url("/tracks")) as listing:
        assert [t["id"] for t in (await listing.json())["tracks"]] == [VID]
    # A second play uses the stored, unexpired URL: no second extraction.
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert await resp.read() == data
    assert googlevideo.watch_hits[VID] == 1


async def test_an_expiring_stored_url_is_re_resolved(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(300_000)
    googlevideo.add_track(VID, data, title="Short Lived")
    googlevideo.url_ttl = 60  # inside the default 300 s safety margin
    proxy = await make_proxy()
    for expected_hits in (1, 2, 3):
        async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
            assert await resp.read() == data
        assert googlevideo.watch_hits[VID] == expected_hits
    assert googlevideo.counts["expired"] == 0


async def test_a_revoked_url_mid_stream_is_refreshed_and_resumed(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(1_500_000, seed=7)
    googlevideo.add_track(VID, data, title="Revoked")
    googlevideo.throttle_bytes_per_sec = 2_000_000
    proxy = await make_proxy(upstream={"chunk_size": 65536})
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        head = await resp.content.readexactly(200_000)
        googlevideo.revoke(VID)  # e.g. the URL was bound to an IP that changed
        rest = await resp.read()
    assert head + rest == data
    assert googlevideo.counts["revoked"] >= 1
    assert googlevideo.watch_hits[VID] == 2


async def test_stored_track_that_is_gone_answers_410(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(10_000), title="Soon Gone")
    googlevideo.url_ttl = 60
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        await resp.read()
    googlevideo.set_watch_status(VID, 404)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 410
        body = await resp.json()
    assert body["error"] == "gone"
    await proxy.app[TRACKS].drain()  # the failure is recorded in the background
    track = await proxy.app[STORE].get(VID)
    assert track is not None and track.title is not None  # metadata survives the failure
    assert track.last_error and "gone" in track.last_error


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/proxy/short", 400, "bad_id"),
        ("/proxy/has%20space!!", 400, "bad_id"),
        ("/proxy/waytoolongid12345", 400, "bad_id"),
        ("/proxy/NotThere123", 404, "not_found"),
        ("/nowhere", 404, "not_found"),
    ],
)
async def test_errors_are_json_with_the_right_status(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, path: str, status: int, code: str
) -> None:
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(path)) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"] == code
    assert body["message"]


async def test_resolver_rate_limited_is_503_with_retry_after(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Busy")
    googlevideo.set_watch_status(VID, 429)
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        assert (await resp.json())["error"] == "resolver_unavailable"


async def test_hosts_outside_allowed_hosts_are_never_fetched(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(100_000), title="Elsewhere")
    googlevideo.add_track("Elsewhere01", random_audio(100_000), title="Elsewhere")
    proxy = await make_proxy(upstream={"allowed_hosts": ("*.googlevideo.com",)})
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["error"] == "upstream_host_not_allowed"
    assert "127.0.0.1" in body["message"]
    assert googlevideo.counts["ok"] == 0
    assert not [r for r in googlevideo.requests if r.path == "/videoplayback"]


async def _icy_get(proxy: RunningProxy, headers: dict[str, str]) -> aiohttp.ClientResponse:
    return await proxy.session.get(proxy.url(f"/proxy/{VID}"), headers=headers)


async def test_icy_inline_metadata_only_when_enabled_and_asked(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    data = random_audio(100_000, seed=3)
    googlevideo.add_track(VID, data, title="Framed")
    proxy = await make_proxy(icy={"inline_metadata": True, "metaint": 8192})
    resp = await _icy_get(proxy, {"Icy-MetaData": "1"})
    body = await resp.read()
    assert resp.headers["icy-metaint"] == "8192"
    assert "Accept-Ranges" not in resp.headers
    audio, metas = parse_icy_stream(body, 8192)
    assert audio == data
    assert metas and metas[0].startswith("StreamTitle='Framed")
    resp = await _icy_get(proxy, {})
    assert await resp.read() == data
    assert "icy-metaint" not in resp.headers

    # inline_metadata off (the default): never framed.  A store of its own: the
    # first daemon's is locked while it runs.
    plain = await make_proxy(store={"path": str(tmp_path / "plain.db")})
    resp = await plain.session.get(plain.url(f"/proxy/{VID}"), headers={"Icy-MetaData": "1"})
    assert await resp.read() == data
    assert "icy-metaint" not in resp.headers
    assert resp.headers["icy-name"].startswith("Framed")


async def test_icy_range_gets_a_206_framed_from_its_own_first_byte(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    # A client that restarts its metadata count on each answer (ffmpeg, mpv)
    # seeks exactly; before, the Range was ignored and the body began at 0.
    data = random_audio(100_000, seed=4)
    googlevideo.add_track(VID, data, title="Framed")
    proxy = await make_proxy(icy={"inline_metadata": True, "metaint": 8192})
    resp = await _icy_get(proxy, {"Icy-MetaData": "1", "Range": "bytes=50000-"})
    body = await resp.read()
    assert resp.status == 206
    assert resp.headers["Content-Range"] == "bytes 50000-99999/100000"
    assert resp.headers["icy-metaint"] == "8192"
    audio, metas = parse_icy_stream(body, 8192)
    assert audio == data[50000:]
    assert metas and metas[0].startswith("StreamTitle='Framed")


async def test_tracks_api(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Via API")
    proxy = await make_proxy()
    async with proxy.session.post(proxy.url("/tracks"), json={"id": VID}) as resp:
        assert resp.status == 201
        assert (await resp.json())["id"] == VID
    async with proxy.session.get(proxy.url(f"/tracks/{VID}")) as resp:
        assert (await resp.json())["title"].startswith("Via API")
    async with proxy.session.get(proxy.url("/playlist.m3u")) as resp:
        text = await resp.text()
    assert text.startswith("#EXTM3U\n") and f"/proxy/{VID}" in text
    async with proxy.session.post(proxy.url("/tracks"), data=b"{nope",
                                  headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "bad_json"
    async with proxy.session.post(proxy.url("/tracks"), json={"id": "bad id"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "bad_id"
    async with proxy.session.post(proxy.url("/tracks"), json={"colour": "red"}) as resp:
        assert resp.status == 400
    async with proxy.session.delete(proxy.url(f"/tracks/{VID}")) as resp:
        assert resp.status == 200
    async with proxy.session.delete(proxy.url(f"/tracks/{VID}")) as resp:
        assert resp.status == 404
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with proxy.session.get(proxy.url("/status")) as resp:
        status = await resp.json()
    assert status["slots"]["capacity"] == proxy.config.limits.max_streams
    assert "sig=" not in str(status)
