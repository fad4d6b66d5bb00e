"""yt-dlp runs in worker processes that exit when idle (the daemon stays small)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.tube import FakeTube
from tests.proxy_fixture import ProxyFactory, random_audio
from ytproxy.config import ResolverConfig
from ytproxy.errors import ResolverUnavailable
from ytproxy.http.app import RESOLVER
from ytproxy.resolve.resolver import Resolver
from ytproxy.resolve.ytdlp_process import ExtractFailed, YtdlpProcesses

VID = "WoRkErPrOc1"
OPTIONS = {"quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
           "socket_timeout": 5}


def _workers_of_this_process() -> list[int]:
    """Our child processes that are yt-dlp workers."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = (task / "children").read_text().split()
        for pid in children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"ytproxy.resolve.ytdlp_process" in cmdline:
                pids.append(int(pid))
    return pids


async def _wait_for(condition: Callable[[], object], within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not so within {within} s")


async def test_a_call_runs_in_a_worker_that_exits_when_idle(
    googlevideo: FakeGooglevideo,
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="In a worker")
    processes = YtdlpProcesses(1, idle_exit=0.5)
    try:
        info = await processes.extract(googlevideo.watch_url(VID), OPTIONS)
        assert info is not None and info["title"].startswith("In a worker")
        assert processes.running == 1 and processes.started == 1
        await _wait_for(lambda: not processes.running)  # idle 0.5 s: it exited
        again = await processes.extract(googlevideo.watch_url(VID), OPTIONS)
        assert again is not None and again["url"]
        assert processes.started == 2  # a new worker for the next call
    finally:
        processes.close()


async def test_a_failure_comes_back_as_plain_data(googlevideo: FakeGooglevideo) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Gone")
    googlevideo.set_watch_status(VID, 404)
    processes = YtdlpProcesses(1)
    try:
        with pytest.raises(ExtractFailed) as caught:
            await processes.extract(googlevideo.watch_url(VID), OPTIONS)
    finally:
        processes.close()
    assert "404" in str(caught.value)


def _busy_pids(resolver: Resolver) -> set[int]:
    """The worker processes in a call now (the pool is shared between tests)."""
    return {w.proc.pid for w in resolver._workers._busy}


async def test_a_worker_killed_mid_call_is_tried_again_and_the_listener_gets_the_audio(
    faketube: FakeTube, make_tube_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_audio(300_000, seed=12)
    faketube.add_track("KilledWork1", data, title="Killed under")
    faketube.player_delay["KilledWork1"] = 60.0  # the call is held while its worker dies
    proxy = await make_tube_proxy()
    resolver = proxy.app[RESOLVER]

    async def listen() -> tuple[int, bytes]:
        async with proxy.session.get(proxy.url("/proxy/KilledWork1")) as resp:
            return resp.status, await resp.read()

    listener = asyncio.ensure_future(listen())
    await faketube.wait_for(lambda: len(faketube.player_requests) == 1, 20)
    (killed,) = _busy_pids(resolver)
    del faketube.player_delay["KilledWork1"]  # the next try is answered at once
    os.kill(killed, signal.SIGKILL)
    status, body = await asyncio.wait_for(listener, 60)
    assert status == 200, body[:300]
    assert body == data
    assert len(faketube.player_requests) == 2  # once more, in a new worker
    assert killed not in _workers_of_this_process()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                  and "worker process died" in r.getMessage()]
    assert "killed by SIGKILL" in warning and "once more" in warning
    assert resolver.failures["worker_lost"] == 0


async def test_a_worker_killed_twice_in_one_call_is_a_503_naming_the_signal(
    faketube: FakeTube,
) -> None:
    faketube.add_track(VID, random_audio(1000), title="Survivor")
    faketube.player_delay[VID] = 60.0
    resolver = Resolver(ResolverConfig(source_url_template=faketube.watch_url_template,
                                       timeout=60.0, workers=2, max_calls_per_minute=6000))
    try:
        call = asyncio.ensure_future(resolver.resolve(resolver.source_url_for(VID)))
        for n in (1, 2):
            await faketube.wait_for(lambda n=n: len(faketube.player_requests) == n, 20)
            await _wait_for(lambda: len(_busy_pids(resolver)) == 1)
            (pid,) = _busy_pids(resolver)
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ResolverUnavailable, match="worker process died") as raised:
            await asyncio.wait_for(call, 30)
        assert str(raised.value).count("killed by SIGKILL") == 2, raised.value
        assert resolver.failures["worker_lost"] == 1
        # The pool replaced the dead: the next call works.
        del faketube.player_delay[VID]
        info = await resolver.resolve(resolver.source_url_for(VID))
        assert info.title == "Survivor"
    finally:
        await resolver.close()


async def test_yt_dlp_messages_reach_the_daemon_log_at_debug(
    googlevideo: FakeGooglevideo, caplog: pytest.LogCaptureFixture,
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Chatty")
    processes = YtdlpProcesses(1)
    try:
        with caplog.at_level(logging.INFO, logger="ytproxy.resolve.ytdlp_process"):
            await processes.extract(googlevideo.watch_url(VID), OPTIONS)
        assert not [r for r in caplog.records if r.getMessage().startswith("yt-dlp: ")]
        with caplog.at_level(logging.DEBUG, logger="ytproxy.resolve.ytdlp_process"):
            await processes.extract(googlevideo.watch_url(VID), OPTIONS)
    finally:
        processes.close()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("yt-dlp: ")]
    assert any(VID in line for line in said), said


async def test_a_stuck_call_kills_its_worker_and_the_next_call_still_runs(
    faketube: FakeTube,
) -> None:
    # Reproduction: with workers = 1, call 1 timed out at 4 s and call 2 timed
    # out at 4 s without having run; a stop waited for the stuck call.
    faketube.add_track("StuckTrack1", random_audio(1000), title="Stuck")
    faketube.add_track("NextTrack01", random_audio(1000), title="Next")
    faketube.player_delay["StuckTrack1"] = 60.0
    resolver = Resolver(ResolverConfig(source_url_template=faketube.watch_url_template,
                                       workers=1, timeout=3.0, max_calls_per_minute=6000,
                                       # yt-dlp's own socket timeout past ours: stuck.
                                       ytdlp_options={"socket_timeout": 120}))
    try:
        stuck = asyncio.ensure_future(resolver.resolve(resolver.source_url_for("StuckTrack1")))
        await faketube.wait_for(lambda: faketube.player_requests != [], 10)
        stuck_pids = {w.proc.pid for w in resolver._workers._busy}
        queued = asyncio.ensure_future(resolver.resolve(resolver.source_url_for("NextTrack01")))
        with pytest.raises(ResolverUnavailable, match="longer than 3 s"):
            await stuck
        info = await queued  # it ran, in a fresh worker, after the stuck one was killed
        assert info.title == "Next"
        alive = set(_workers_of_this_process())
        assert stuck_pids and not stuck_pids & alive, (stuck_pids, alive)
    finally:
        await resolver.close()


async def test_closing_the_resolver_kills_a_call_in_flight(faketube: FakeTube) -> None:
    faketube.add_track("StuckTrack1", random_audio(1000), title="Stuck")
    faketube.player_delay["StuckTrack1"] = 60.0
    resolver = Resolver(ResolverConfig(source_url_template=faketube.watch_url_template,
                                       workers=1, timeout=60.0, max_calls_per_minute=6000,
                                       ytdlp_options={"socket_timeout": 120}))
    stuck = asyncio.ensure_future(resolver.resolve(resolver.source_url_for("StuckTrack1")))
    await faketube.wait_for(lambda: faketube.player_requests != [], 10)
    before = {w.proc.pid for w in resolver._workers._busy}
    assert len(before) == 1
    await asyncio.wait_for(resolver.close(), 10)  # not the 60 s the call would take
    with pytest.raises(asyncio.CancelledError):
        await stuck
    await _wait_for(lambda: not (before & set(_workers_of_this_process())))
