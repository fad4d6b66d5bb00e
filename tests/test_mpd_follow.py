"""MpdFollower against a real MPD: which songs come next, and MPD coming and going.

What MPD 0.23.12 reports in ``status`` (found while writing these tests; they
pin what the follower relies on):

* A fresh queue that has not been played: no ``song`` and no ``nextsong``,
  stopped, whatever random/single/repeat say; ``play`` then starts at the first
  song in play order (src/queue/PlaylistControl.cxx PlayAny: order 0), which is
  position 0 unless random is on.
* Playing or paused: ``song`` is the current song, ``nextsong`` the one after
  it -- in random mode the one MPD has chosen; at the end of the queue without
  repeat there is none; with repeat it is position 0.  Single mode without
  repeat still reports ``nextsong`` (although MPD stops after the current song);
  single (or "oneshot") with repeat reports the current song as ``nextsong``.
* Stopped after playing: ``song`` stays (``play`` starts there again) and
  ``nextsong`` follows in queue order; stopping in random mode reshuffles, and
  ``nextsong`` is the song after ``song`` in the new order (none when ``song``
  came last).  Turning random on or off while stopped forgets ``song``.  The
  state file keeps ``song`` of a stopped MPD across a restart.

A song is made current by playing it from a small aiohttp origin and pausing at
once; the other queued songs are never fetched.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.mpd_harness import MpdInstance, make_test_audio
from tests.ports import free_port
from ytproxy.follower.queue import (
    MpdFollower,
    mpd_address,
    mpd_candidates,
    upcoming_positions,
)

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

LOGGER = "ytproxy.follower.queue"
WAIT = 5.0  # every wait for the follower is bounded by this
OURS = re.compile(r"http://127\.0\.0\.1:\d+/proxy/([A-Za-z0-9_-]{11})")
PASSWORD = "secret"


def vid(i: int) -> str:
    return f"mpdFollow{i:02d}"


def track_of(uri: str) -> str | None:
    m = OURS.fullmatch(uri)
    return m.group(1) if m else None


class Wants:
    """A ``want`` callback that records its calls and lets a test wait for one."""

    def __init__(self, *, raises: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.raises = raises
        self._called = asyncio.Event()

    def __call__(self, ids: list[str]) -> None:
        self.calls.append(ids)
        self._called.set()
        if self.raises:
            raise RuntimeError("want is broken")

    async def until(self, check: Callable[[list[str]], bool], what: str) -> list[str]:
        """The latest call once ``check`` holds for it (AssertionError after WAIT s)."""
        try:
            async with asyncio.timeout(WAIT):
                while not (self.calls and check(self.calls[-1])):
                    self._called.clear()
                    await self._called.wait()
        except TimeoutError:
            raise AssertionError(f"want never got {what} in {WAIT}s; calls: {self.calls}") from None
        return self.calls[-1]

    async def got(self, expected: list[str]) -> None:
        await self.until(lambda ids: ids == expected, str(expected))


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def following(
    port: int, want: Wants, *, lookahead: int = 2, password: str | None = None,
    retry_max: float = 0.5,
) -> AsyncIterator[MpdFollower]:
    follower = MpdFollower(host="127.0.0.1", port=port, password=password, lookahead=lookahead,
                           track_of=track_of, want=want, retry_max=retry_max)
    await follower.start()
    try:
        yield follower
    finally:
        await follower.aclose()


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == LOGGER and r.levelno == level and text in r.getMessage()]


# --------------------------------------------------------------------------- MPD


@pytest.fixture(scope="module")
def webm_audio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_test_audio(tmp_path_factory.mktemp("audio") / "song.webm", seconds=60)


@pytest.fixture
async def origin(webm_audio: bytes, aiohttp_server: ServerFactory) -> str:
    """The base URL of songs MPD can play: any /proxy/<id> is the same minute of audio."""

    async def song(request: web.Request) -> web.Response:
        return web.Response(body=webm_audio, content_type="audio/webm",
                            headers={"Accept-Ranges": "bytes"})

    app = web.Application()
    app.router.add_get("/proxy/{vid}", song)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/proxy/"


async def queue(mpd: MpdInstance, *uris: str) -> None:
    for uri in uris:
        await mpd.command_async("add", uri)


async def pause_at(mpd: MpdInstance, pos: int) -> None:
    """Make queue position ``pos`` the current song, paused (MPD fetches only that one)."""
    await mpd.command_async("play", str(pos))
    await mpd.wait_for(lambda s: s.state == "play" and s.raw.get("song") == str(pos), 15,
                       f"MPD playing position {pos}")
    await mpd.command_async("pause", "1")
    await mpd.wait_for(lambda s: s.state == "pause", 5, "MPD paused")


async def stop_mpd(mpd: MpdInstance, sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop the fixture's MPD (SIGTERM saves its state file; SIGKILL does not)."""
    mpd.process.send_signal(sig)
    async with asyncio.timeout(10):
        await mpd.process.wait()


async def _greets(port: int) -> bool:
    try:
        async with asyncio.timeout(1):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return (await reader.readline()).startswith(b"OK MPD ")
            finally:
                writer.close()
    except OSError:  # TimeoutError included
        return False


@asynccontextmanager
async def mpd_again(mpd: MpdInstance) -> AsyncIterator[MpdInstance]:
    """Start MPD again from ``mpd``'s config: the same port, music, state file."""
    proc = await asyncio.create_subprocess_exec(
        "mpd", "--no-daemon", str(mpd.conf_path),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    again = MpdInstance(port=mpd.port, root=mpd.root, process=proc)
    try:
        deadline = time.monotonic() + 10
        while not await _greets(mpd.port):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"MPD did not come back on port {mpd.port}\n"
                                     f"{again.log_tail()}")
            await asyncio.sleep(0.05)
        yield again
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def nextsong_tracks(mpd: MpdInstance) -> list[str | None]:
    """The track of the song MPD's status names as ``nextsongid``, if it names one."""
    status = await mpd.status_async()
    next_id = status.raw.get("nextsongid")
    if next_id is None:
        return []
    lines = await mpd.command_async("playlistid", next_id)
    files = [line.removeprefix("file: ") for line in lines if line.startswith("file: ")]
    assert len(files) == 1, lines
    return [track_of(files[0])]


# --------------------------------------------------------------------------- what comes next


@pytest.mark.mpd
async def test_hands_the_next_songs_in_queue_order(mpd: MpdInstance, origin: str) -> None:
    await queue(mpd, *(origin + vid(i) for i in range(5)))
    want = Wants()
    async with following(mpd.port, want, lookahead=2) as follower:
        # Stopped, never played: MPD names no song, and `play` starts at the first
        # (a queue just loaded: `mpc clear; mpc load X`).
        await want.got([vid(0), vid(1)])
        assert follower.connected
        assert follower.mpd_version is not None and follower.mpd_version.startswith("0.")
        await pause_at(mpd, 1)
        await want.got([vid(2), vid(3)])
        assert follower.upcoming == [vid(2), vid(3)]
        assert follower.report() == {
            "following": True, "address": f"127.0.0.1:{mpd.port}", "connected": True,
            "mpd_version": follower.mpd_version, "lookahead": 2, "upcoming": [vid(2), vid(3)]}
        await mpd.command_async("stop")  # stopped: play starts at `song` again
        await want.got([vid(1), vid(2)])
    assert not follower.connected
    await follower.aclose()  # idempotent


@pytest.mark.mpd
async def test_queue_changes_are_followed(mpd: MpdInstance, origin: str) -> None:
    await queue(mpd, *(origin + vid(i) for i in range(4)))
    await pause_at(mpd, 0)
    want = Wants()
    async with following(mpd.port, want, lookahead=2):
        await want.got([vid(1), vid(2)])
        await mpd.command_async("move", "3", "1")
        await want.got([vid(3), vid(1)])
        await mpd.command_async("delete", "1")
        await want.got([vid(1), vid(2)])
        await mpd.command_async("addid", origin + vid(9), "1")
        await want.got([vid(9), vid(1)])


@pytest.mark.mpd
async def test_random_mode_hands_only_the_song_mpd_chose(mpd: MpdInstance, origin: str) -> None:
    await queue(mpd, *(origin + vid(i) for i in range(8)))
    await pause_at(mpd, 0)
    # With repeat, queue order from any song MPD picks runs on for three songs: a
    # follower that read on after nextsong would show it, wherever nextsong is.
    await mpd.command_async("repeat", "1")
    want = Wants()
    async with following(mpd.port, want, lookahead=3):
        await want.got([vid(1), vid(2), vid(3)])
        await mpd.command_async("random", "1")
        got = await want.until(lambda ids: len(ids) == 1, "one track")
        assert got == await nextsong_tracks(mpd)
        # Stopped: play starts at `song`; stopping reshuffled, and MPD names the song
        # after it in its new order.
        await mpd.command_async("stop")
        got = await want.until(lambda ids: ids[:1] == [vid(0)], "the current song first")
        following_song = await nextsong_tracks(mpd)
        assert len(following_song) == 1
        assert got == [vid(0), *following_song]


@pytest.mark.mpd
async def test_single_mode(mpd: MpdInstance, origin: str) -> None:
    await queue(mpd, *(origin + vid(i) for i in range(4)))
    await pause_at(mpd, 1)
    want = Wants()
    async with following(mpd.port, want, lookahead=2):
        await want.got([vid(2), vid(3)])
        await mpd.command_async("single", "1")  # MPD stops after the current song
        await want.got([])
        await mpd.command_async("repeat", "1")  # ... or plays it again
        await want.got([vid(1)])
        await mpd.command_async("repeat", "0")
        await want.got([])
        await mpd.command_async("single", "oneshot")
        await mpd.command_async("repeat", "1")
        await want.got([vid(1)])
        await mpd.command_async("repeat", "0")
        await want.got([])
        await mpd.command_async("stop")  # play would start at the current song, then stop
        await want.got([vid(1)])


@pytest.mark.mpd
async def test_songs_not_ours_are_skipped_and_none_twice(mpd: MpdInstance, origin: str) -> None:
    await queue(mpd, origin + vid(0), "http://127.0.0.1:6602/elsewhere/song.ogg",
                origin + vid(1), origin + "short", origin + vid(1), origin + vid(2))
    await pause_at(mpd, 0)
    wide, narrow = Wants(), Wants()
    async with following(mpd.port, wide, lookahead=5), following(mpd.port, narrow, lookahead=2):
        await wide.got([vid(1), vid(2)])
        # The next two songs are one not ours and vid(1): look-ahead counts songs.
        await narrow.got([vid(1)])


@pytest.mark.mpd
async def test_repeat_wraps_around(mpd: MpdInstance, origin: str) -> None:
    await queue(mpd, *(origin + vid(i) for i in range(4)))
    await pause_at(mpd, 2)
    want = Wants()
    async with following(mpd.port, want, lookahead=3):
        await want.got([vid(3)])  # the end of the queue
        await mpd.command_async("repeat", "1")
        await want.got([vid(3), vid(0), vid(1)])
        await pause_at(mpd, 3)
        await want.got([vid(0), vid(1), vid(2)])
        await mpd.command_async("repeat", "0")
        await want.got([])  # the last song: nothing comes next


@pytest.mark.mpd
async def test_a_want_that_raises_is_logged_and_following_goes_on(
    mpd: MpdInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    want = Wants(raises=True)
    async with following(mpd.port, want) as follower:
        await want.until(lambda ids: True, "a first call")
        await mpd.mpc_async("add", "http://127.0.0.1:6602/proxy/AAAAAAAAAAA")
        await eventually(lambda: len(want.calls) >= 2, "want called again after a queue change")
        assert follower.connected
    failures = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(failures) == len(want.calls) >= 2
    for failure in failures:
        assert failure.getMessage().startswith("mpd: handing the next tracks")
        assert failure.exc_info and "want is broken" in str(failure.exc_info[1])
    # The same connection throughout: a broken `want` is no reason to reconnect.
    assert len(records(caplog, logging.INFO, "mpd: following the queue")) == 1


# --------------------------------------------------------------------------- MPD comes and goes


@pytest.mark.mpd
async def test_no_mpd_then_it_starts(mpd: MpdInstance, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    await stop_mpd(mpd)
    want = Wants()
    async with following(mpd.port, want, retry_max=0.5) as follower:
        await eventually(lambda: len(records(caplog, logging.DEBUG, "retrying")) >= 2,
                         "two quiet retries")
        down = records(caplog, logging.INFO, "")
        assert len(down) == 1, [r.getMessage() for r in down]
        assert down[0].getMessage().startswith(
            f"mpd: no MPD at 127.0.0.1:{mpd.port} (Connection refused); look-ahead is off")
        assert not follower.connected
        assert want.calls == []
        async with mpd_again(mpd):
            await eventually(lambda: follower.connected, "the follower connecting")
            await want.got([])
            assert records(caplog, logging.INFO, "mpd: following the queue of MPD 0.")


@pytest.mark.mpd
async def test_reconnects_when_mpd_restarts(
    mpd: MpdInstance, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    want = Wants()
    async with following(mpd.port, want, retry_max=0.5) as follower:
        await want.got([])
        await stop_mpd(mpd, signal.SIGKILL)
        await eventually(lambda: not follower.connected, "the follower noticing")
        assert records(caplog, logging.INFO, f"mpd: lost MPD at 127.0.0.1:{mpd.port} (")
        async with mpd_again(mpd) as again:
            await eventually(lambda: follower.connected, "the follower reconnecting")
            await queue(again, *(origin + vid(i) for i in range(3)))
            await pause_at(again, 0)
            await want.got([vid(1), vid(2)])
    assert len(records(caplog, logging.INFO, "mpd: following the queue")) == 2
    assert len(records(caplog, logging.INFO, "mpd: no MPD")) == 0  # after "lost": quiet
    # python-mpd2 re-raises the lost connection in a callback; nothing logs it as an error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.mpd
async def test_password(mpd: MpdInstance, origin: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    await queue(mpd, *(origin + vid(i) for i in range(4)))
    await mpd.command_async("play", "1")
    await mpd.wait_for(lambda s: s.state == "play", 15, "MPD playing")
    await mpd.command_async("stop")  # the state file keeps song 1 for the restart
    await stop_mpd(mpd)
    with mpd.conf_path.open("a") as conf:
        conf.write(f'password "{PASSWORD}@read,add,control,admin"\ndefault_permissions ""\n')
    async with mpd_again(mpd):
        for password, refused in ((None, "us without a password"), ("wrong", "the password")):
            caplog.clear()
            want = Wants()
            async with following(mpd.port, want, password=password, retry_max=0.3) as follower:
                await eventually(lambda: len(records(caplog, logging.DEBUG, "retrying")) >= 2,
                                 "two refused retries")
                assert not follower.connected
                assert want.calls == []
            ours = [r for r in caplog.records if r.name == LOGGER and r.levelno > logging.DEBUG]
            assert len(ours) == 1, caplog.text  # one warning, the retries quiet
            assert ours[0].levelno == logging.WARNING
            assert ours[0].getMessage().startswith(
                f"mpd: MPD at 127.0.0.1:{mpd.port} refused {refused} (")
            assert "[mpd] password" in ours[0].getMessage()
            assert "MPD_HOST" in ours[0].getMessage()

        want = Wants()
        async with following(mpd.port, want, password=PASSWORD) as follower:
            await want.got([vid(1), vid(2)])
            assert follower.connected


# --------------------------------------------------------------------------- no MPD needed


def test_mpd_address() -> None:
    env = {"MPD_HOST": "pw@elsewhere", "MPD_PORT": "6700"}
    assert mpd_address("mpd.lan", 6601, env) == ("mpd.lan", 6601, None)  # the config wins
    assert mpd_address("", 6600, env) == ("elsewhere", 6700, "pw")
    assert mpd_address("", 6601, {"MPD_HOST": "box"}) == ("box", 6601, None)
    assert mpd_address("", 6600, {"MPD_HOST": "/run/mpd/socket"}) == (
        "/run/mpd/socket", 6600, None)
    assert mpd_address("", 6600, {"MPD_HOST": "@mpd"}) == ("@mpd", 6600, None)
    assert mpd_address("", 6600, {"MPD_HOST": "pw@@mpd"}) == ("@mpd", 6600, "pw")
    assert mpd_address("", 6600, {}) is None
    assert mpd_address("", 6600, {"MPD_PORT": "6600"}) is None
    assert mpd_address("", 6600, {"MPD_HOST": ""}) is None
    for bad in ("http", "0", "65536", "-1", "66 00"):
        with pytest.raises(ValueError, match=re.escape(f"MPD_PORT={bad!r}")):
            mpd_address("", 6600, {"MPD_HOST": "box", "MPD_PORT": bad})
    # A bad MPD_PORT that is not used is no error.
    assert mpd_address("mpd.lan", 6600, {"MPD_PORT": "http"}) == ("mpd.lan", 6600, None)


def test_upcoming_positions_with_consume() -> None:
    status = {"state": "play", "playlistlength": "3", "song": "1", "nextsong": "2",
              "repeat": "1", "random": "0", "single": "0", "consume": "1"}
    # The current song leaves the queue once played: it does not come round again.
    assert upcoming_positions(status, 5) == [2, 0]
    assert upcoming_positions({**status, "consume": "0"}, 5) == [2, 0, 1]
    assert upcoming_positions(status, 0) == []



def test_upcoming_positions_of_a_queue_never_played() -> None:
    # `mpc clear; mpc load X`: stopped, no current song; `play` starts at order 0.
    status = {"state": "stop", "playlistlength": "3", "repeat": "0", "random": "0",
              "single": "0", "consume": "0"}
    assert upcoming_positions(status, 2) == [0, 1]
    assert upcoming_positions(status, 5) == [0, 1, 2]
    assert upcoming_positions({**status, "single": "1"}, 2) == [0]
    # Random: order 0 is a position MPD does not tell.
    assert upcoming_positions({**status, "random": "1"}, 2) == []
    assert upcoming_positions({**status, "playlistlength": "0"}, 2) == []


def test_mpd_candidates_are_where_mpc_looks() -> None:
    # Told where: only there.
    assert mpd_candidates("mpd.lan", 6601, {"XDG_RUNTIME_DIR": "/run/user/1"}) == [
        ("mpd.lan", 6601, None)]
    assert mpd_candidates("", 6600, {"MPD_HOST": "pw@box", "XDG_RUNTIME_DIR": "/r"}) == [
        ("box", 6600, "pw")]
    # Not told: MPD's doc/client.rst order.
    assert mpd_candidates("", 6600, {"XDG_RUNTIME_DIR": "/run/user/1000"}) == [
        ("/run/user/1000/mpd/socket", 6600, None), ("/run/mpd/socket", 6600, None),
        ("localhost", 6600, None)]
    assert mpd_candidates("", 6600, {"MPD_PORT": "6700"}) == [
        ("/run/mpd/socket", 6700, None), ("localhost", 6700, None)]
    # A relative XDG_RUNTIME_DIR is invalid, and ignored (the XDG base directory spec).
    assert mpd_candidates("", 6600, {"XDG_RUNTIME_DIR": "run"})[0] == (
        "/run/mpd/socket", 6600, None)
    with pytest.raises(ValueError, match=re.escape("MPD_PORT='x'")):
        mpd_candidates("", 6600, {"MPD_PORT": "x"})


async def test_none_of_the_places_answers_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    missing = str(tmp_path / "no-mpd.socket")
    port = free_port()  # nothing listens there
    want = Wants()
    follower = MpdFollower(host=missing, port=port, password=None, lookahead=2,
                           track_of=track_of, want=want, retry_max=0.2,
                           alternatives=[("127.0.0.1", port)])
    await follower.start()
    try:
        await eventually(lambda: len(records(caplog, logging.DEBUG, "retrying")) >= 2,
                         "two quiet retries")
    finally:
        await follower.aclose()
    told = records(caplog, logging.INFO, "")
    assert [r.getMessage() for r in told] == [
        f"mpd: no MPD at {missing} (No such file or directory) or 127.0.0.1:{port} "
        "(Connection refused); look-ahead is off until one answers (or set [mpd] host)"]
    assert follower.report()["tries"] == [missing, f"127.0.0.1:{port}"]
    assert want.calls == []
