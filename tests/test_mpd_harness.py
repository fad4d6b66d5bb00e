"""Prove the MPD harness and pin the real MPD behaviour that ytproxy relies on.

A small aiohttp app serves generated Opus/WebM audio the way a well-behaved
origin would (Range, icy-name, Accept-Ranges, Content-Length) and records every
request MPD makes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.mpd_harness import MpdInstance, MpdStatus, make_test_audio

pytestmark = pytest.mark.mpd

ICY_NAME = "Test Artist - Test Title"
SECONDS = 120.0
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)$")

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class Recorded:
    path: str
    headers: CIMultiDict[str]

    @property
    def range_start(self) -> int | None:
        value = self.headers.get("Range")
        if value is None:
            return None
        m = _RANGE_RE.match(value)
        assert m, f"unexpected Range header {value!r}"
        return int(m.group(1))


@dataclass
class AudioOrigin:
    """Serves ``data`` at any path; ``status`` != 200 answers every request with it."""

    data: bytes
    content_type: str = "audio/webm"
    status: int = 200
    requests: list[Recorded] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(request.path, CIMultiDict(request.headers)))
        if self.status != 200:
            return web.Response(status=self.status, text="Forbidden\n")
        total = len(self.data)
        headers = {
            "icy-name": ICY_NAME,
            "Accept-Ranges": "bytes",
            "Content-Type": self.content_type,
        }
        value = request.headers.get("Range")
        if value is None:
            return web.Response(body=self.data, headers=headers)
        m = _RANGE_RE.match(value)
        if m is None:
            return web.Response(status=400, text=f"bad Range {value!r}\n")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else total - 1
        if start >= total or end < start:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        end = min(end, total - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        return web.Response(status=206, body=self.data[start : end + 1], headers=headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app


@pytest.fixture(scope="session")
def webm_audio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_test_audio(
        tmp_path_factory.mktemp("audio") / "track.webm", seconds=SECONDS, kind="webm"
    )


def _playing_past(seconds: float) -> Callable[[MpdStatus], bool]:
    return lambda s: s.state == "play" and s.elapsed > seconds


async def test_plays_names_and_seeks_with_range(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory
) -> None:
    assert len(webm_audio) > 512 * 1024 * 2  # well beyond MPD's 512 KiB read-ahead
    origin = AudioOrigin(webm_audio)
    server = await aiohttp_server(origin.app())
    url = f"http://127.0.0.1:{server.port}/track"

    # Async variants throughout: the origin runs on this event loop.
    await mpd.mpc_async("add", url)
    await mpd.mpc_async("play")
    st = await mpd.wait_for(_playing_past(1.0), 15, "playback past 1 s")
    assert st.error is None

    first = origin.requests[0]
    assert "Range" not in first.headers
    assert first.headers.get("Icy-MetaData") == "1"
    assert first.headers.get("User-Agent", "").startswith("Music Player Daemon")

    song = await mpd.current_song_async()
    assert song["file"] == url
    assert song.get("Name") == ICY_NAME
    assert ICY_NAME in await mpd.mpc_async("current")

    duration = st.duration if st.duration is not None else SECONDS
    assert duration == pytest.approx(SECONDS, abs=1.0)

    n_before = len(origin.requests)
    await mpd.mpc_async("seek", "75%")
    st = await mpd.wait_for(
        lambda s: s.state == "play" and s.elapsed >= 0.7 * duration, 10, "elapsed >= 70% after seek"
    )
    after_seek = st.elapsed
    st = await mpd.wait_for(_playing_past(after_seek + 0.5), 5, "playback advancing after seek")
    assert st.error is None

    seeks = [r for r in origin.requests[n_before:] if (r.range_start or 0) > 0]
    assert seeks, [dict(r.headers) for r in origin.requests]
    # Open-ended range, roughly 75 % into the file, and still asking for ICY metadata.
    assert re.fullmatch(r"bytes=\d+-", seeks[0].headers["Range"])
    assert 0.6 * len(webm_audio) < (seeks[0].range_start or 0) < 0.9 * len(webm_audio)
    assert seeks[0].headers.get("Icy-MetaData") == "1"


async def test_origin_403_is_an_error_and_mpd_moves_on(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory
) -> None:
    """Why ytproxy exists: MPD gives up on a failing URL at once and never retries."""
    bad = AudioOrigin(webm_audio, status=403)
    good = AudioOrigin(webm_audio)
    bad_server = await aiohttp_server(bad.app())
    good_server = await aiohttp_server(good.app())
    bad_url = f"http://127.0.0.1:{bad_server.port}/track"
    good_url = f"http://127.0.0.1:{good_server.port}/track"

    await mpd.mpc_async("add", bad_url)
    await mpd.mpc_async("add", good_url)
    await mpd.mpc_async("play", check=False)
    st = await mpd.wait_for(
        lambda s: s.file == good_url and s.state == "play" and s.elapsed > 0.2,
        15,
        "MPD to skip the 403 track and play the next one",
    )
    assert len(bad.requests) == 1  # one try, no retry
    assert st.error is not None and "Failed to decode" in st.error, st
    assert bad_url in st.error
    assert "403" in mpd.log_text()


async def test_origin_403_alone_stops(
    mpd: MpdInstance, webm_audio: bytes, aiohttp_server: ServerFactory
) -> None:
    bad = AudioOrigin(webm_audio, status=403)
    server = await aiohttp_server(bad.app())
    await mpd.mpc_async("add", f"http://127.0.0.1:{server.port}/track")
    await mpd.mpc_async("play", check=False)
    st = await mpd.wait_for(
        lambda s: bool(bad.requests) and s.state == "stop" and s.error is not None,
        10,
        "MPD to stop with an error after the 403",
    )
    assert "Failed to decode" in (st.error or "")
    assert len(bad.requests) == 1
