"""YouTube's refusals and the hour's call budget, end to end (issue 25): the real
yt-dlp and the FakeTube plugin answering YouTube's own wording after N calls, the
real app with its cache, a real MPD playing a queue with look-ahead on, and a
``cache prefetch`` of 50 ids running meanwhile."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.local_servers import write_toml
from tests.fakes.tube import BOT_CHECK, RATE_LIMITED, FakeTube
from tests.mpd_harness import MpdInstance, make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from tests.test_cli import cli_env, run_ytproxy
from ytproxy.http.app import CACHE, RESOLVER, STORE, TRACKS
from ytproxy.resolve.budget import CallKind
from ytproxy.resolve.resolver import Resolver

CACHED, UNCACHED = "CachedSong1", "NotCached01"
PREFETCH = [f"Prefetch{n:03d}" for n in range(50)]
BUDGET = 10
PAUSE = 6.0
# Short holds: a request held while YouTube refuses is answered after 2 s.
QUICK: dict[str, dict[str, Any]] = {
    "retry": {"base_delay": 0.02, "max_delay": 0.2, "gap_budget": 1.0, "hold_budget": 2.0},
    "breaker": {"reset_after": 0.5},
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 2.0, "connect_timeout": 2.0},
}


def resolver_of(proxy: RunningProxy) -> Resolver:
    resolver: Resolver = proxy.app[RESOLVER]
    return resolver


async def until(predicate: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the daemon's state, nothing to wait on
            await asyncio.sleep(0.05)


def background_calls_in_pauses(faketube: FakeTube, listener_ids: set[str],
                               pause: float) -> list[str]:
    """Calls other than a listener's made within ``pause`` seconds after a refusal."""
    wrong: list[str] = []
    refusals = [r.at for r in faketube.player_requests if r.refused]
    for record in faketube.player_requests:
        if record.video_id in listener_ids:
            continue
        for at in refusals:
            if at < record.at < at + pause * 0.95:
                wrong.append(f"{record.video_id} {record.at - at:.2f} s after a refusal")
    return wrong


async def last_errors(proxy: RunningProxy) -> dict[str, str]:
    """Tracks whose last_error is set (none may be: a refusal is not the track's)."""
    tracks = await proxy.app[STORE].list_tracks()
    return {t.id: t.last_error for t in tracks if t.last_error}


async def test_a_rate_limit_pauses_background_work_and_a_cached_song_plays_in_mpd(
    faketube: FakeTube, make_tube_proxy: ProxyFactory, mpd: MpdInstance, tmp_path: Path,
) -> None:
    require_ffmpeg()
    for track_id in (CACHED, UNCACHED):
        audio = make_test_audio(tmp_path / f"{track_id}.webm", seconds=2.0, kind="webm")
        faketube.add_track(track_id, audio, title=track_id)
    for n, track_id in enumerate(PREFETCH):
        faketube.add_track(track_id, random_audio(20_000, seed=n), title=track_id)
    proxy = await make_tube_proxy(
        cache={"max_size": 64 * 1_048_576},
        mpd={"host": "127.0.0.1", "port": mpd.port, "lookahead": 2},
        resolver={"max_calls_per_hour": BUDGET, "rate_limit_pause": PAUSE, "workers": 1},
        **QUICK)
    resolver = resolver_of(proxy)
    cache = proxy.app[CACHE]
    assert cache is not None

    # The song MPD plays first is on disk already (one listener call).
    async with proxy.session.get(proxy.url(f"/proxy/{CACHED}")) as resp:
        assert resp.status == 200
        await resp.read()
    await until(lambda: cache.complete(CACHED) is not None, within=20)
    # YouTube answers three more calls, then says the session is rate-limited.
    faketube.refuse(RATE_LIMITED, after=3)
    prefetch = asyncio.create_task(proxy.session.post(
        proxy.url("/cache/prefetch"), json={"ids": PREFETCH},
        timeout=aiohttp.ClientTimeout(total=None)))
    try:
        await until(lambda: resolver.refusal.state == "rate_limited", within=60)
        assert len(faketube.player_requests) == 5
        async with proxy.session.get(proxy.url("/health")) as resp:
            health = await resp.json()
        assert resp.status == 503 and health["status"] == "degraded"
        assert any(r.startswith("youtube: rate_limited since ") for r in health["reasons"])

        # MPD plays the queue: the cached song from disk to its end, with no
        # yt-dlp call; the next one gets one try, is held, then skipped.
        for track_id in (CACHED, UNCACHED):
            await mpd.mpc_async("add", proxy.url(f"/proxy/{track_id}"))
        await mpd.mpc_async("play")
        await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 0, 15, "playing")
        await mpd.wait_for(lambda s: s.state == "stop", 30, "the end of the queue")
        log_text = mpd.log_text()
        assert f"played \"{proxy.url(f'/proxy/{CACHED}')}\"" in log_text, log_text[-2000:]
        assert f"Failed to decode {proxy.url(f'/proxy/{CACHED}')}" not in log_text
        cached_calls = [r for r in faketube.player_requests if r.video_id == CACHED]
        assert len(cached_calls) == 1  # the one before the refusal
        uncached = [r for r in faketube.player_requests if r.video_id == UNCACHED]
        assert len(uncached) == 1 and uncached[0].refused  # one try in its hold
        assert background_calls_in_pauses(faketube, {UNCACHED}, PAUSE) == []
        status = await (await proxy.session.get(proxy.url("/status"))).json()
        budget = status["resolver"]["budget"]
        assert budget["max_calls_per_hour"] == BUDGET
        assert budget["waiting_background"] >= 1
        assert status["resolver"]["youtube"]["state"] in ("rate_limited", "ok")

        # YouTube relents; when the pause ends, background work resumes by itself
        # (one trial, then the rest of the hour's budget) and then waits again.
        faketube.relent()
        await faketube.wait_for(lambda: len(faketube.player_requests) >= BUDGET, 60)
        # The hour's budget spent, the next prefetch waits in line (no call).
        await until(lambda: resolver.budget.waiting >= 1 and resolver.budget.left() == 0
                    and cache.snapshot().downloading == (), within=20)
        assert resolver.refusal.state is None
        assert len(faketube.player_requests) == resolver.budget.used() == BUDGET
        assert background_calls_in_pauses(faketube, {UNCACHED}, PAUSE) == []
        async with proxy.session.get(proxy.url("/health")) as resp:
            assert resp.status == 200, await resp.text()

        # A listener's song still plays with the budget spent (listeners go first).
        await mpd.mpc_async("play", "1")
        await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 0, 15, "playing")
        await mpd.wait_for(lambda s: s.state == "stop", 30, "the end of the song")
        assert cache.complete(UNCACHED) is not None
        assert f"Failed to decode {proxy.url(f'/proxy/{UNCACHED}')}" \
            not in mpd.log_text().split("playlist: stop")[-2]
        assert len(faketube.player_requests) == BUDGET + 1
        assert await last_errors(proxy) == {}  # no track marked failed
    finally:
        prefetch.cancel()
        await asyncio.gather(prefetch, return_exceptions=True)


async def test_a_bot_check_holds_once_names_the_fix_and_ends_with_a_success(
    faketube: FakeTube, make_tube_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    data = random_audio(50_000)
    faketube.add_track(UNCACHED, data, title="Not A Bot")
    proxy = await make_tube_proxy(
        resolver={"max_calls_per_hour": BUDGET, "rate_limit_pause": 60.0}, **QUICK)
    faketube.refuse(BOT_CHECK)
    async with proxy.session.get(proxy.url(f"/proxy/{UNCACHED}")) as resp:
        body = await resp.json()
    # Held for retry.hold_budget with one yt-dlp try, then told why and what to do.
    assert resp.status == 503 and body["error"] == "youtube_refused"
    assert len(faketube.player_requests) == 1
    message = body["message"]
    assert "not a bot" in message and "cookies" in message and "PO-token provider" in message
    assert "--cookies" not in message and len(message) < 200
    assert "Sign in to confirm you\u2019re not a bot" in body["detail"]  # yt-dlp's own words

    status = await (await proxy.session.get(proxy.url("/status"))).json()
    youtube = status["resolver"]["youtube"]
    assert youtube["state"] == "bot_check" and youtube["message"] == message
    assert status["resolver"]["budget"]["calls_last_hour"] == 1
    metrics = await (await proxy.session.get(proxy.url("/metrics"), headers={
        "Accept-Encoding": "identity"})).text()
    assert 'ytproxy_youtube_refusing{state="bot_check"} 1.0' in metrics
    assert 'ytproxy_resolver_calls_last_hour{budget="videos"} 1.0' in metrics
    page = await (await proxy.session.get(proxy.url("/"))).text()
    assert f"yt-dlp calls in the last hour: 1 of {BUDGET}" in page and "bot_check" in page
    async with proxy.session.get(proxy.url("/health")) as resp:
        health = await resp.json()
    assert health["status"] == "degraded"
    assert any("bot_check" in r and "PO-token provider" in r for r in health["reasons"])

    # The CLI: doctor fails on one line naming both fixes; status says the same.
    config_file = write_toml(tmp_path / "config.toml", {
        "server": {"port": proxy.config.server.port},
        "store": {"path": str(tmp_path / "doctor.db")},
        "resolver": {"source_url_template": faketube.watch_url_template}})
    env = cli_env(tmp_path)
    doctor = await run_ytproxy(env, "--config", str(config_file), "doctor")
    assert doctor.rc != 0
    (line,) = [x for x in doctor.out.splitlines() if " youtube " in f" {x} "]
    assert line.startswith("fail") and "bot_check since" in line
    assert "cookies" in line and "PO-token provider" in line
    shown = await run_ytproxy(env, "--config", str(config_file), "status")
    assert shown.rc == 1 and "youtube: bot_check since" in shown.out
    assert f"calls 1 of {BUDGET} in the last hour, 0 background waiting" in shown.out
    assert "YouTube bot_check" in shown.out
    assert "--cookies" not in shown.out
    as_json = await run_ytproxy(env, "--config", str(config_file), "status", "--json")
    assert json.loads(as_json.out)["resolver"]["youtube"]["state"] == "bot_check"

    # YouTube lets the address through again: the next listener plays, the state
    # ends with that success, and the track was never marked failed.
    faketube.relent()
    async with proxy.session.get(proxy.url(f"/proxy/{UNCACHED}")) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.read() == data
    assert resolver_of(proxy).refusal.state is None
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200
    assert await last_errors(proxy) == {}


async def test_a_listing_past_its_budget_is_refused_with_the_time_it_may_go(
    faketube: FakeTube, make_tube_proxy: ProxyFactory,
) -> None:
    proxy = await make_tube_proxy(resolver={"max_listings_per_hour": 1})
    resolver = resolver_of(proxy)
    assert resolver.budget.take_listing() == 0.0  # the hour's one listing
    with pytest.raises(Exception) as refused:
        await resolver.list_playlist(faketube.watch_url_template.replace("{id}", UNCACHED))
    assert "max_listings_per_hour" in str(refused.value)
    assert faketube.player_requests == []


# yt-dlp 2026.11's words with no DNS (the requests handler, urllib3's
# NameResolutionError): the host named, then all of it again in "caused by".
NO_DNS = ("Unable to download API page: HTTPSConnection(host='www.youtube.com', port=443): "
          "Failed to resolve 'www.youtube.com' ([Errno -2] Name or service not known) (caused "
          "by TransportError(\"HTTPSConnection(host='www.youtube.com', port=443): Failed to "
          "resolve 'www.youtube.com' ([Errno -2] Name or service not known)\"))")


async def test_the_cli_says_a_dns_failure_in_one_short_sentence(
    faketube: FakeTube, tmp_path: Path,
) -> None:
    # Reproduction: `ytproxy add` printed yt-dlp's 300-character line four times
    # (twice in the WARNING line, twice in the error), the "caused by" included.
    faketube.add_track(UNCACHED, random_audio(1000), title="Offline")
    faketube.refuse(NO_DNS)
    config_file = write_toml(tmp_path / "config.toml", {
        "store": {"path": str(tmp_path / "tracks.db")},
        "resolver": {"source_url_template": faketube.watch_url_template}})
    added = await run_ytproxy(cli_env(tmp_path), "--config", str(config_file), "add", UNCACHED)
    assert added.rc != 0
    assert "Failed to resolve" not in added.err and "caused by" not in added.err
    (error,) = [line for line in added.err.splitlines() if line.startswith("ytproxy:")]
    assert error == (f"ytproxy: cannot add {UNCACHED!r}: cannot look up www.youtube.com (no "
                     "network or no DNS): check this machine's connection; tracks play when "
                     "it is back")
    assert added.err.count("cannot look up") <= 2  # the log's WARNING line and the error


async def test_a_listener_waiting_for_a_track_in_the_background_line_gets_it_at_once(
    faketube: FakeTube, make_tube_proxy: ProxyFactory,
) -> None:
    first, waiting = PREFETCH[0], PREFETCH[1]
    for track_id in (first, waiting):
        faketube.add_track(track_id, random_audio(20_000), title=track_id)
    proxy = await make_tube_proxy(resolver={"max_calls_per_hour": 1})
    resolver = resolver_of(proxy)
    tracks = proxy.app[TRACKS]
    await tracks.stream_for(first)  # a listener's call: the hour's one is spent
    background = asyncio.create_task(tracks.stream_for(waiting, kind=CallKind.BACKGROUND))
    await until(lambda: resolver.budget.waiting == 1, within=10)
    assert len(faketube.player_requests) == 1  # it waits its turn, without a call
    # A listener asks for the same track: the waiting call goes now, as its.
    _, info = await tracks.stream_for(waiting)
    assert (await background)[1] == info
    assert len(faketube.player_requests) == 2 and resolver.budget.waiting == 0
    assert resolver.budget.listener_calls == 2 and resolver.budget.background_calls == 0


async def test_a_playing_stream_whose_url_dies_during_a_refusal_tries_yt_dlp_once(
    faketube: FakeTube, make_tube_proxy: ProxyFactory,
) -> None:
    data = random_audio(4 * 1_048_576, seed=5)
    faketube.add_track(UNCACHED, data, title="Mid Song")
    proxy = await make_tube_proxy(resolver={"rate_limit_pause": 60.0}, **QUICK)
    async with proxy.session.get(proxy.url(f"/proxy/{UNCACHED}")) as resp:
        assert resp.status == 200
        first = await resp.content.readexactly(100_000)
        # YouTube rate-limits the address, and the stream's URL stops working.
        faketube.refuse(RATE_LIMITED)
        faketube.revoke(UNCACHED)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # held for retry.hold_budget, then cut: never a clean end
    assert first == data[:100_000]
    calls = faketube.player_requests
    # The play's own call, then one refused try in the hold: no retry loop of calls.
    assert len(calls) == 2 and calls[1].refused
    assert await last_errors(proxy) == {}
