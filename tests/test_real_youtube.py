"""What real YouTube asks of ytproxy in 2026, against FakeTube on loopback and the
real yt-dlp with a test-only extractor plugin: a JavaScript runtime and the
person's yt-dlp options in every call, cookies, available_at, player-client
failover, and the same file on every resume."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.googlevideo import Fault
from tests.fakes.tube import FakeTube, Format
from tests.proxy_fixture import (
    ProxyFactory,
    RunningProxy,
    random_audio,
)
from ytproxy.http.app import SLOTS, STORE, TRACKS
from ytproxy.models import StreamInfo
from ytproxy.upstream import MAX_CLIENTS_PER_GAP

VID = "TubeTrack01"
SIZE = 1_000_000
PREFIX = 200_000
FAST: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 2.0, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.02, "max_delay": 0.2, "gap_budget": 10.0},
}


@pytest.fixture
def tube_proxy(make_tube_proxy: ProxyFactory) -> ProxyFactory:
    """The real ytproxy app on loopback, resolving through FakeTube, with short waits."""
    async def factory(**sections: dict[str, Any]) -> RunningProxy:
        return await make_tube_proxy(**{**FAST, **sections})

    return factory


async def play(proxy: RunningProxy, track_id: str = VID) -> bytes:
    async with proxy.session.get(proxy.url(f"/proxy/{track_id}")) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_each_call_gets_the_runtime_the_install_brought_and_the_persons_options(
    faketube: FakeTube, tube_proxy: ProxyFactory,
) -> None:
    data = random_audio(100_000)
    faketube.add_track(VID, data, title="Runtime")
    proxy = await tube_proxy(resolver={"ytdlp_options": {
        "ytproxy_test_marker": 7,
        "extractor_args": {"youtube": {"player_client": ["default", "mweb"]}}}})
    assert await play(proxy) == data
    (player,) = faketube.player_requests
    deno = str(Path(sys.executable).parent / "deno")
    assert player.seen["js_runtimes"] == {"deno": {"path": deno}}
    assert player.seen["ytproxy_test_marker"] == 7
    assert player.clients == ["default", "mweb"]
    assert player.served == "tv_samsung"
    assert "[protocol~='^https?$']" in str(player.seen["format"])  # never a manifest
    status = await (await proxy.session.get(proxy.url("/status"))).json()
    assert status["resolver"]["client"] == "TVHTML5"


async def test_cookies_reach_yt_dlp_and_every_range_and_never_the_log(
    faketube: FakeTube, tube_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cret-cookie-v4lue"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n"
                       f"127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\t{secret}\n")
    cookies.chmod(0o600)
    data = random_audio(SIZE, seed=2)
    faketube.add_track(VID, data, title="Signed In")
    faketube.configure(VID, require_cookie=f"SID={secret}")
    caplog.set_level(logging.DEBUG)
    proxy = await tube_proxy(resolver={"cookies_file": str(cookies)})
    assert sha(await play(proxy)) == sha(data)
    assert faketube.player_requests[0].cookie == f"SID={secret}"
    ranges = [m for m in faketube.media if m.kind == "ok"]
    assert len(ranges) >= 4  # a short first range, then 256 KiB each
    assert all(m.cookie == f"SID={secret}" for m in ranges)
    assert not [m for m in faketube.media if m.kind == "no_cookie"]
    status_text = await (await proxy.session.get(proxy.url("/status"))).text()
    assert secret not in status_text
    assert secret not in caplog.text
    assert "resolved in" in caplog.text  # the log did run at DEBUG through the resolve


async def test_without_the_cookies_the_bot_check_is_a_clear_error(
    faketube: FakeTube, tube_proxy: ProxyFactory,
) -> None:
    faketube.add_track(VID, random_audio(1000), title="Signed In")
    faketube.configure(VID, require_cookie="SID=x")
    # The bot check is YouTube refusing the address (issue 25): the request is
    # held (here 2 s) with one yt-dlp try, then told what to do.
    proxy = await tube_proxy(retry={**FAST["retry"], "gap_budget": 1.0, "hold_budget": 2.0})
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        body = await resp.json()
    assert resp.status == 503 and body["error"] == "youtube_refused"
    assert "cookies" in body["message"] and "PO-token provider" in body["message"]
    assert "Sign in to confirm" in body["detail"]
    assert len(faketube.player_requests) == 1


async def test_a_format_available_in_4_s_is_waited_for_not_refused(
    faketube: FakeTube, tube_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    # Reproduction: the first play was answered 410 after 1.6 s (two early 403s).
    data = random_audio(SIZE, seed=3)
    faketube.add_track(VID, data, title="After The Ad")
    faketube.configure(VID, available_in=4)
    caplog.set_level(logging.INFO)
    proxy = await tube_proxy()
    assert sha(await play(proxy)) == sha(data)
    issued_at = faketube._issued
    (available_at,) = {i.available_at for i in issued_at.values()}
    assert available_at is not None
    assert faketube.media and all(m.at >= available_at for m in faketube.media)
    assert not [m for m in faketube.media if m.kind == "not_yet_available"]
    waits = [r.getMessage() for r in caplog.records if "the format is available in" in
             r.getMessage()]
    assert len(waits) == 1 and waits[0].startswith("upstream: TubeTrack01:")


async def test_the_wait_is_bounded_by_max_available_wait_and_403s_before_it_are_waits(
    faketube: FakeTube, tube_proxy: ProxyFactory,
) -> None:
    data = random_audio(100_000, seed=4)
    faketube.add_track(VID, data, title="Long Ad")
    faketube.configure(VID, available_in=3)
    proxy = await tube_proxy(resolver={"max_available_wait": 1.0})
    assert await play(proxy) == data
    early = [m for m in faketube.media if m.kind == "not_yet_available"]
    assert early  # it asked after 1 s, was refused, and waited instead of refreshing
    assert len(faketube.player_requests) == 1  # no refresh for a not-yet-available URL


async def test_a_client_whose_urls_stop_after_a_prefix_fails_over_to_another(
    faketube: FakeTube, tube_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    # Reproduction: cut at byte 32,768 ("403 even with a fresh URL").
    data = random_audio(SIZE, seed=5)
    faketube.add_track(VID, data, title="Prefix Only")
    faketube.configure(VID, prefix_only={"tv_samsung": PREFIX})
    caplog.set_level(logging.INFO)
    proxy = await tube_proxy()
    assert sha(await play(proxy)) == sha(data)
    assert faketube.served_clients(VID) == ["tv_samsung", "tv_samsung", "visionos"]
    failover = [r.getMessage() for r in caplog.records if "asking yt-dlp for another client"
                in r.getMessage()]
    assert len(failover) == 1 and "player client TVHTML5" in failover[0]
    assert "resuming at byte 32768 with player client VISIONOS" in caplog.text
    # The working client is remembered with the track's URL until it expires.
    await proxy.app[TRACKS].drain()  # stored in the background
    track = await proxy.app[STORE].get(VID)
    assert track is not None and track.stream_avoid_clients == ("TVHTML5",)
    assert "c=VISIONOS" in (track.stream_url or "")
    assert sha(await play(proxy)) == sha(data)
    assert len(faketube.player_requests) == 3
    status = await (await proxy.session.get(proxy.url("/status"))).json()
    assert status["resolver"]["client"] == "VISIONOS"


async def test_curl_gets_the_failed_over_track_byte_exact(
    faketube: FakeTube, tube_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    data = random_audio(SIZE, seed=6)
    faketube.add_track(VID, data, title="Prefix Only")
    faketube.configure(VID, prefix_only={"tv_samsung": PREFIX})
    proxy = await tube_proxy()
    out = tmp_path / "track.webm"
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "--max-time", "60", "-o", str(out),
        "-H", "Icy-MetaData: 1", proxy.url(f"/proxy/{VID}"))
    assert await curl.wait() == 0
    digest = await asyncio.create_subprocess_exec(
        "sha256sum", str(out), stdout=asyncio.subprocess.PIPE)
    printed, _ = await digest.communicate()
    assert printed.decode().split()[0] == sha(data)


async def test_failover_stops_after_three_clients_per_gap(
    faketube: FakeTube, tube_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_audio(SIZE, seed=7)
    faketube.add_track(VID, data, title="Blocked Everywhere")
    faketube.configure(VID, prefix_only={c: PREFIX for c in (
        "tv_samsung", "visionos", "mweb", "android_vr", "tv_simply")})
    caplog.set_level(logging.WARNING)
    proxy = await tube_proxy()
    received = b""
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            while piece := await resp.content.read(65536):
                received += piece
    assert received == data[:len(received)]
    served = faketube.served_clients(VID)
    assert len(set(served)) == MAX_CLIENTS_PER_GAP == 3
    assert len(served) == 4  # the first URL, a fresh one, then two other clients
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "from 3 player clients" in errors[0], errors
    assert proxy.app[SLOTS].in_use == 0


async def test_a_refresh_asks_for_the_same_format_so_a_resume_never_splices(
    faketube: FakeTube, tube_proxy: ProxyFactory,
) -> None:
    # Reproduction: after a 403 and a refresh to a different file of the same
    # size, the output was file A up to byte 132,767, then file B.
    first = random_audio(6_000_000, seed=8)
    better = random_audio(6_000_000, seed=9)  # same size, another file
    faketube.add_track(VID, first, title="Two Encodes")
    faketube.configure(VID, formats=[Format("251", first)])
    proxy = await tube_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        head = await resp.content.readexactly(132_768)
        # YouTube now also offers a "better" format; the URL in use is revoked.
        faketube.set_formats(VID, [Format("251", first), Format("774", better, abr=256)])
        faketube.add_fault(VID, Fault("revoke", at_byte=0, times=1))
        faketube.revoke(VID)
        rest = await resp.read()
    assert sha(head + rest) == sha(first)
    assert len(faketube.player_requests) == 2
    # Once the stored URL has expired, a new play (no format to keep) takes the better one.
    await proxy.app[STORE].save_stream(VID, StreamInfo(url="http://127.0.0.1:1/x?expire=1",
                                                       expires_at=1.0))
    assert sha(await play(proxy)) == sha(better)
