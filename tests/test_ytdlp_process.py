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
from tests.proxy_fixture import random_audio
from ytproxy.config import ResolverConfig
from ytproxy.errors import ResolverUnavailable
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


async def test_a_worker_killed_mid_call_is_a_503_and_the_next_call_works(
    googlevideo: FakeGooglevideo,
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Survivor")
    googlevideo.watch_delay = 3.0  # the call is in flight while its worker is killed
    resolver = Resolver(ResolverConfig(source_url_template=googlevideo.watch_url_template,
                                       timeout=20.0, workers=3))
    source = resolver.source_url_for(VID)
    others = set(_workers_of_this_process())  # other tests' shared workers: left alone
    call = asyncio.create_task(resolver.resolve(source))
    await _wait_for(lambda: googlevideo.watch_hits[VID] == 1)
    mine = set(_workers_of_this_process()) - others
    assert mine
    for pid in mine:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ResolverUnavailable, match="worker process died"):
        await call
    assert resolver.failures["worker_lost"] == 1
    googlevideo.watch_delay = 0.0
    info = await resolver.resolve(source)
    assert info.title is not None and info.title.startswith("Survivor")
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
