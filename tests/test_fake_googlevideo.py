"""Tests of the fake googlevideo upstream (tests/fakes/googlevideo.py) itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
import yt_dlp
from yt_dlp.utils import DownloadError

from tests.fakes.googlevideo import FakeGooglevideo

VID = "dQw4w9WgXcQ"
DATA = bytes((i * 7 + i // 251) % 256 for i in range(300_000))
TITLE = "Song & <Title>"
YDL_OPTS: dict[str, Any] = {
    "quiet": True,
    "no_warnings": True,
    "format": "bestaudio[acodec=opus]/bestaudio/best",
}


@pytest.fixture
async def gv(googlevideo: FakeGooglevideo) -> FakeGooglevideo:
    googlevideo.add_track(VID, DATA, title=TITLE)
    return googlevideo


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=5)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        yield s


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters replaced (``None`` removes one)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for k, v in changes.items():
        if v is None:
            query.pop(k, None)
        else:
            query[k] = v
    return urlunsplit(parts._replace(query=urlencode(query)))


async def fetch(
    session: aiohttp.ClientSession, url: str, range_header: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Range": range_header} if range_header is not None else {}
    async with session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def extract(url: str) -> dict[str, Any]:
    with yt_dlp.YoutubeDL(YDL_OPTS) as ydl:
        info: dict[str, Any] = ydl.extract_info(url, download=False)
        return info


# --------------------------------------------------------------------- lifecycle


async def test_started_on_loopback_ephemeral_port(gv: FakeGooglevideo) -> None:
    assert gv.host == "127.0.0.1"
    assert gv.base_url.startswith("http://127.0.0.1:")
    assert gv.port > 0
    assert gv.watch_url_template == f"{gv.base_url}/watch?v={{id}}"
    assert "{id}" in gv.watch_url_template
    url = gv.sign(VID)
    q = parse_qs(urlsplit(url).query)
    assert q["id"] == [VID]
    assert q["clen"] == [str(len(DATA))]
    assert q["mime"] == ["audio/webm"]
    assert abs(int(q["expire"][0]) - (time.time() + 6 * 3600)) < 5


async def test_close_cuts_off_open_body(session: aiohttp.ClientSession) -> None:
    fake = FakeGooglevideo(write_size=1024)
    await fake.start()
    fake.add_track(VID, DATA, title=TITLE)
    fake.throttle_bytes_per_sec = 16_384
    resp = await session.get(fake.sign(VID), headers={"Range": "bytes=0-99999"})
    try:
        await resp.content.readexactly(1024)
        assert fake.open_bodies == 1
        t0 = time.monotonic()
        await fake.close()
        assert time.monotonic() - t0 < 1
        assert fake.open_bodies == 0
        assert fake.aborted_bodies == 1
    finally:
        resp.close()


# --------------------------------------------------------------------- success


async def test_header_range_ok(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    status, headers, body = await fetch(session, gv.sign(VID), "bytes=100-199")
    assert status == 206
    assert body == DATA[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"
    assert headers["Content-Length"] == "100"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "audio/webm"
    assert gv.counts["ok"] == 1
    rec = gv.requests[-1]
    assert (rec.method, rec.path, rec.status, rec.kind, rec.video_id) == (
        "GET",
        "/videoplayback",
        206,
        "ok",
        VID,
    )
    assert rec.range_header == "bytes=100-199"
    assert rec.query["id"] == VID
    assert gv.open_bodies == 0
    assert gv.aborted_bodies == 0


async def test_query_param_range_ok(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    status, headers, body = await fetch(session, with_query(gv.sign(VID), range="5000-14999"))
    assert status == 206
    assert body == DATA[5000:15000]
    assert headers["Content-Range"] == f"bytes 5000-14999/{len(DATA)}"
    assert gv.requests[-1].range_header is None
    assert gv.requests[-1].query["range"] == "5000-14999"


async def test_whole_track_in_several_pieces(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    gv.write_size = 10_000
    status, _, body = await fetch(session, gv.sign(VID), f"bytes=0-{len(DATA) - 1}")
    assert status == 206
    assert body == DATA


async def test_end_beyond_length_is_clamped(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    n = len(DATA)
    status, headers, body = await fetch(session, gv.sign(VID), f"bytes={n - 10}-{n + 5000}")
    assert status == 206
    assert body == DATA[-10:]
    assert headers["Content-Range"] == f"bytes {n - 10}-{n - 1}/{n}"
    assert headers["Content-Length"] == "10"


async def test_exactly_max_range_is_served(session: aiohttp.ClientSession) -> None:
    async with FakeGooglevideo(max_range=1000) as fake:
        fake.add_track(VID, DATA, title=TITLE, mime="audio/mp4")
        status, headers, body = await fetch(session, fake.sign(VID), "bytes=1000-1999")
        assert status == 206
        assert body == DATA[1000:2000]
        assert headers["Content-Type"] == "audio/mp4"
        status, _, _ = await fetch(session, fake.sign(VID), "bytes=1000-2000")
        assert status == 403
        assert fake.counts["too_large"] == 1


# --------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("range_header", "query_range", "status", "kind"),
    [
        (None, None, 403, "no_range"),
        ("bytes=100-", None, 403, "open_ended"),
        ("bytes=-100", None, 403, "open_ended"),
        (None, "100-", 403, "open_ended"),
        (None, "-100", 403, "open_ended"),
        ("bytes=0-1048576", None, 403, "too_large"),
        (None, "0-2000000", 403, "too_large"),
        ("bytes=abc", None, 400, "bad_range"),
        ("bytes=0-10,20-30", None, 400, "bad_range"),
        ("items=0-10", None, 400, "bad_range"),
        ("bytes=10-5", None, 400, "bad_range"),
        ("bytes=-", None, 400, "bad_range"),
        (None, "0-10,20-30", 400, "bad_range"),
        (None, "x", 400, "bad_range"),
    ],
)
async def test_range_refusals(
    gv: FakeGooglevideo,
    session: aiohttp.ClientSession,
    range_header: str | None,
    query_range: str | None,
    status: int,
    kind: str,
) -> None:
    url = gv.sign(VID)
    if query_range is not None:
        url = with_query(url, range=query_range)
    got, _, _ = await fetch(session, url, range_header)
    assert got == status
    assert gv.counts == {kind: 1}
    assert gv.requests[-1].kind == kind
    assert gv.requests[-1].status == status
    assert gv.open_bodies == 0


async def test_unsatisfiable_range(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    n = len(DATA)
    status, headers, _ = await fetch(session, gv.sign(VID), f"bytes={n}-{n + 10}")
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{n}"
    assert gv.counts["unsatisfiable"] == 1


async def test_expired(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    status, _, _ = await fetch(session, gv.sign(VID, ttl=-1), "bytes=0-9")
    assert status == 403
    assert gv.counts["expired"] == 1


async def test_clock_can_be_moved(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    url = gv.sign(VID)
    gv.clock = lambda: time.time() + 7 * 3600
    status, _, _ = await fetch(session, url, "bytes=0-9")
    assert status == 403
    assert gv.counts["expired"] == 1
    status, _, _ = await fetch(session, gv.sign(VID), "bytes=0-9")
    assert status == 206


async def test_revoked(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    old = gv.sign(VID)
    assert (await fetch(session, old, "bytes=0-9"))[0] == 206
    gv.revoke(VID)
    status, _, _ = await fetch(session, old, "bytes=0-9")
    assert status == 403
    assert gv.counts["revoked"] == 1
    status, _, body = await fetch(session, gv.sign(VID), "bytes=0-9")
    assert (status, body) == (206, DATA[:10])


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"sig": "0" * 64}, "bad_signature"),
        ({"sig": None}, "bad_signature"),
        ({"clen": "1"}, "bad_signature"),
        ({"expire": str(2**40)}, "bad_signature"),
        ({"gen": "5"}, "bad_signature"),
        ({"expire": "soon"}, "bad_signature"),
        ({"id": "nope"}, "unknown_id"),
        ({"id": None}, "unknown_id"),
    ],
)
async def test_bad_url(
    gv: FakeGooglevideo,
    session: aiohttp.ClientSession,
    changes: dict[str, str | None],
    kind: str,
) -> None:
    status, _, _ = await fetch(session, with_query(gv.sign(VID), **changes), "bytes=0-9")
    assert status == 403
    assert gv.counts == {kind: 1}


async def test_signatures_differ_between_instances(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    async with FakeGooglevideo() as other:
        other.add_track(VID, DATA, title=TITLE)
        foreign = other.sign(VID)
    url = gv.base_url + foreign[len(other.base_url) :]
    status, _, _ = await fetch(session, url, "bytes=0-9")
    assert status == 403
    assert gv.counts["bad_signature"] == 1


async def test_head_refused(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    async with session.head(gv.sign(VID), headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 403
    assert gv.counts == {"head": 1}


async def test_other_path_404(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    status, _, _ = await fetch(session, gv.base_url + "/generate_204")
    assert status == 404
    assert gv.counts == {"not_found": 1}


# --------------------------------------------------------------------- watch page


async def test_watch_page_html(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    async with session.get(gv.watch_url(VID)) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<title>Song &amp; &lt;Title&gt;</title>" in page
    assert "&amp;expire=" in page
    assert gv.watch_hits[VID] == 1
    assert gv.counts == {"watch": 1}
    assert gv.requests[-1].video_id == VID

    status, _, _ = await fetch(session, gv.watch_url("unknown"))
    assert status == 404
    assert gv.watch_hits["unknown"] == 1
    assert gv.requests[-1].kind == "watch"
    assert gv.requests[-1].status == 404


async def test_yt_dlp_resolves_watch_page(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    info = await asyncio.to_thread(extract, gv.watch_url(VID))
    url = info["url"]
    assert url.startswith(gv.base_url + "/videoplayback?")
    assert "&amp;" not in url
    assert info["title"] == TITLE + " (1)"
    assert info["http_headers"]["Referer"] == gv.watch_url(VID)
    assert gv.watch_hits[VID] == 1

    status, _, body = await fetch(session, url, "bytes=1000-1999")
    assert (status, body) == (206, DATA[1000:2000])

    # After a revoke the old URL dies and a new extraction gives a working one.
    gv.revoke(VID)
    assert (await fetch(session, url, "bytes=0-9"))[0] == 403
    info2 = await asyncio.to_thread(extract, gv.watch_url(VID))
    assert gv.watch_hits[VID] == 2
    assert (await fetch(session, info2["url"], "bytes=0-9"))[0] == 206


async def test_yt_dlp_sees_watch_status(gv: FakeGooglevideo) -> None:
    gv.set_watch_status(VID, 404)
    with pytest.raises(DownloadError, match="HTTP Error 404"):
        await asyncio.to_thread(extract, gv.watch_url(VID))
    gv.set_watch_status(VID, 429)
    with pytest.raises(DownloadError, match="HTTP Error 429"):
        await asyncio.to_thread(extract, gv.watch_url(VID))
    gv.set_watch_status(VID, None)
    info = await asyncio.to_thread(extract, gv.watch_url(VID))
    assert info["url"].startswith(gv.base_url)
    assert [r.status for r in gv.requests if r.kind == "watch"] == [404, 429, 200]


async def test_watch_delay_overlaps(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    gv.watch_delay = 0.3
    t0 = time.monotonic()
    results = await asyncio.gather(*(fetch(session, gv.watch_url(VID)) for _ in range(3)))
    elapsed = time.monotonic() - t0
    assert [r[0] for r in results] == [200, 200, 200]
    assert 0.3 <= elapsed < 0.8
    assert gv.watch_hits[VID] == 3


# --------------------------------------------------------------------- bodies


async def test_client_disconnect_mid_body(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    gv.write_size = 4096
    gv.throttle_bytes_per_sec = 65_536  # 200 kB would take ~3 s
    resp = await session.get(gv.sign(VID), headers={"Range": "bytes=0-199999"})
    try:
        assert resp.status == 206
        first = await resp.content.readexactly(4096)
        assert first == DATA[:4096]
        assert gv.open_bodies == 1
    finally:
        resp.close()
    t0 = time.monotonic()
    await gv.wait_no_open_bodies(timeout=3)
    assert time.monotonic() - t0 < 1
    assert gv.open_bodies == 0
    assert gv.aborted_bodies == 1
    assert gv.completed_bodies == 0


async def test_throttle_slows_body(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    gv.write_size = 8192
    gv.throttle_bytes_per_sec = 100_000
    t0 = time.monotonic()
    status, _, body = await fetch(session, gv.sign(VID), "bytes=0-39999")
    elapsed = time.monotonic() - t0
    assert (status, body) == (206, DATA[:40000])
    assert elapsed >= 0.3  # 4 sleeps of 8192/100000 s
    assert gv.completed_bodies == 1
    assert gv.aborted_bodies == 0


async def test_wait_open_bodies(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    gv.write_size = 4096
    gv.throttle_bytes_per_sec = 40_960
    task = asyncio.create_task(fetch(session, gv.sign(VID), "bytes=0-20479"))
    await gv.wait_open_bodies(1, timeout=2)
    assert gv.open_bodies == 1
    await gv.wait_no_open_bodies(timeout=3)
    status, _, body = await task
    assert (status, body) == (206, DATA[:20480])
    with pytest.raises(TimeoutError):
        await gv.wait_for(lambda: gv.counts["ok"] > 1, timeout=0.05)
