"""A track's name as players see it: bounded and free of control characters in
``icy-name``, in M3U ``#EXTINF`` lines and in ICY ``StreamTitle`` metadata.

The hostile title comes the real way: FakeTube's player answer, read by the
real yt-dlp (with the test-only extractor plugin) and kept in the real store.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.tube import FakeTube
from tests.mpd_harness import MpdInstance, make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.http.app import STORE
from ytproxy.http.icy import metadata_block, parse_icy_stream
from ytproxy.models import MAX_NAME_LENGTH, safe_display_name

VID = "LongTitle01"
DATA = random_audio(60_000, seed=31)
METAINT = 8192
# 150 KB of title, with what a header, an M3U line and an ICY block must not carry.
HOSTILE_TITLE = ("Evil\r\nSet-Cookie: owned=1\r\n\x00\x07\x1b[31m\x85\u2028 it's; "
                 "StreamTitle='pwned';" + "é" * 75_000)


def _clean(text: str) -> bool:
    return not any(ch < " " or "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029" for ch in text)


def test_safe_display_name() -> None:
    assert safe_display_name("Artist - Title") == "Artist - Title"
    assert safe_display_name("a\r\nb\x00c\td\x85e\u2028f\ud800g") == "a b c d e f g"
    assert safe_display_name("  spaced   out  ") == "spaced out"
    cut = safe_display_name("x" * 150_000)
    assert len(cut) == MAX_NAME_LENGTH and cut.endswith("…")
    assert safe_display_name("é" * MAX_NAME_LENGTH) == "é" * MAX_NAME_LENGTH  # whole
    assert len(safe_display_name(HOSTILE_TITLE).encode()) <= 4 * MAX_NAME_LENGTH


def test_stream_title_quotes_neither_a_quote_nor_a_semicolon() -> None:
    block = metadata_block("it's; StreamTitle='x';\x00end")
    text = block[1:].rstrip(b"\0").decode()
    assert text == "StreamTitle='it’s； StreamTitle=’x’； end';"
    assert len(block) - 1 == block[0] * 16


@pytest.fixture
async def proxy(faketube: FakeTube, make_tube_proxy: ProxyFactory) -> RunningProxy:
    faketube.add_track(VID, DATA, title=HOSTILE_TITLE)
    running = await make_tube_proxy(icy={"inline_metadata": True, "metaint": METAINT})
    # Added on first play, as `mpc add http://…/proxy/<id>` would.
    assert (await _head_of(running, method="HEAD")).startswith(b"HTTP/1.1 200 ")
    track = await running.app[STORE].get(VID)
    assert track is not None and track.title is not None and len(track.title) > 75_000
    assert "\r\n" in track.title and "\x00" in track.title  # stored as the source gave it
    return running


async def _head_of(proxy: RunningProxy, *headers: str, method: str = "GET") -> bytes:
    """The response head of GET (or HEAD) /proxy as a raw client reads it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    try:
        lines = [f"{method} /proxy/{VID} HTTP/1.1", f"Host: 127.0.0.1:{proxy.server.port}",
                 "Connection: close", *headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(20):
            try:
                return await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:  # a head over 64 KiB
                return await reader.read(1 << 20)
    finally:
        writer.close()


async def test_icy_name_is_bounded_and_injects_no_header(proxy: RunningProxy) -> None:
    for headers in ((), ("Icy-MetaData: 1",)):
        head = await _head_of(proxy, *headers)
        assert len(head) < 2000, len(head)
        fields = dict(line.split(": ", 1) for line in
                      head.decode("utf-8").split("\r\n")[1:] if line)
        assert "Set-Cookie" not in fields
        name = fields["icy-name"]
        assert name.startswith("FakeTube Artist - Evil Set-Cookie: owned=1 ")
        assert len(name) <= MAX_NAME_LENGTH and _clean(name), name[:80]
    # What a real client makes of it (aiohttp's parser refuses fields over 8 KiB).
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        assert await resp.read() == DATA


async def test_extinf_is_one_bounded_line(proxy: RunningProxy) -> None:
    async with proxy.session.get(proxy.url("/playlist.m3u")) as resp:
        assert resp.status == 200
        text = await resp.text()
    lines = text.split("\n")
    assert lines[0] == "#EXTM3U" and lines[-1] == "", lines[:4]
    assert len(lines) == 4, [line[:80] for line in lines]  # header, EXTINF, URL
    assert lines[1].startswith("#EXTINF:60,FakeTube Artist - Evil Set-Cookie")
    assert len(lines[1]) <= len("#EXTINF:60,") + MAX_NAME_LENGTH and _clean(lines[1])
    assert lines[2].endswith(f"/proxy/{VID}")


async def test_stream_title_is_bounded_and_well_quoted(proxy: RunningProxy) -> None:
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"),
                                 headers={"Icy-MetaData": "1"}) as resp:
        assert resp.status == 200
        assert resp.headers["icy-metaint"] == str(METAINT)
        body = await resp.read()
    audio, metas = parse_icy_stream(body, METAINT)
    assert audio == DATA
    assert metas, "no StreamTitle was sent"
    title = metas[0]
    assert title.startswith("StreamTitle='FakeTube Artist - Evil Set-Cookie")
    assert title.endswith("';") and title.count("'") == 2 and title.count(";") == 1, title[:120]
    assert _clean(title) and len(title) <= len("StreamTitle='';") + MAX_NAME_LENGTH


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_plays_it(proxy: RunningProxy) -> None:
    """MPD reads streams through libcurl: a 150 KB header was curl's exit 27
    ("Out of memory"), and MPD skipped the song."""
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
        "-H", "Icy-MetaData: 1", "-H", "User-Agent: Music Player Daemon 0.23.12",
        proxy.url(f"/proxy/{VID}"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await curl.communicate()
    assert curl.returncode == 0, (curl.returncode, err.decode()[:300])
    code, size = out.decode().split()
    assert code == "200" and int(size) > len(DATA)  # the audio and its metadata blocks


@pytest.mark.mpd
async def test_mpd_plays_it_and_shows_the_bounded_name(
    mpd: MpdInstance, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    """Before: MPD logged "CURL failed: Out of memory" and skipped the song."""
    require_ffmpeg()
    vid = "MpdLongName"
    audio = make_test_audio(tmp_path / "t.webm", seconds=20.0, kind="webm")
    googlevideo.add_track(vid, audio, title="Long", mime="audio/webm")
    proxy = await make_proxy()
    await proxy.app[STORE].upsert_track(vid, googlevideo.watch_url(vid), title=HOSTILE_TITLE,
                                        artist="Artist")
    await mpd.mpc_async("add", proxy.url(f"/proxy/{vid}"))
    await mpd.mpc_async("play")
    status = await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 1.0, 20,
                                "MPD playing past 1 s")
    assert status.error is None, mpd.log_tail()
    name = (await mpd.current_song_async()).get("Name", "")
    assert name.startswith("Artist - Evil Set-Cookie: owned=1 "), name[:80]
    assert len(name) <= MAX_NAME_LENGTH and _clean(name)
    await mpd.mpc_async("stop")
