"""Tests of the fake googlevideo upstream (tests/fakes/googlevideo.py) itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
import yt_dlp
from yt_dlp.utils import DownloadError

from tests.fakes.googlevideo import FakeGooglevideo, Fault

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


# --------------------------------------------------------------------- faults


async def read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Read the body chunk by chunk; what arrived, and the error that ended it."""
    got = bytearray()
    try:
        async for chunk in resp.content.iter_any():
            got += chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        return bytes(got), exc
    return bytes(got), None


def assert_no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert bad == []


async def raw_get(port: int, target: str, range_header: str) -> tuple[bytes, str]:
    """GET over a bare socket; the raw bytes and how the stream ended
    (``"eof"`` or ``"reset"``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nRange: {range_header}\r\n\r\n".encode())
    got = bytearray()
    try:
        while chunk := await reader.read(65536):
            got += chunk
        how = "eof"
    except ConnectionResetError:
        how = "reset"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(got), how


def test_fault_kind_checked() -> None:
    with pytest.raises(ValueError, match="bogus"):
        Fault("bogus")


async def test_status_fault_with_retry_after(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    fault = gv.add_fault(VID, Fault("status", status=503, retry_after="1", times=2))
    url = gv.sign(VID)
    for _ in range(2):
        status, headers, body = await fetch(session, url, "bytes=0-9")
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert b"fault_status" in body
    assert (fault.times, fault.fired) == (0, 2)
    status, headers, body = await fetch(session, url, "bytes=0-9")
    assert (status, body) == (206, DATA[:10])
    assert "Retry-After" not in headers
    assert [r.kind for r in gv.requests] == ["fault_status", "fault_status", "ok"]
    assert [r.status for r in gv.requests] == [503, 503, 206]
    assert gv.counts == {"fault_status": 2, "ok": 1}
    assert gv.fault_log == [(VID, "status", 503), (VID, "status", 503)]
    assert gv.open_bodies == 0


async def test_status_faults_in_order_after_the_rules(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    first = gv.add_fault(VID, Fault("status", status=429, retry_after=date))
    second = gv.add_fault(VID, Fault("status", status=500))
    # A request the googlevideo rules refuse never reaches the faults.
    assert (await fetch(session, gv.sign(VID)))[0] == 403  # no range
    assert (await fetch(session, gv.sign(VID, ttl=-1), "bytes=0-9"))[0] == 403
    assert (first.fired, second.fired) == (0, 0)
    status, headers, _ = await fetch(session, gv.sign(VID), "bytes=0-9")
    assert (status, headers["Retry-After"]) == (429, date)
    status, headers, _ = await fetch(session, gv.sign(VID), "bytes=0-9")
    assert status == 500
    assert "Retry-After" not in headers
    assert (await fetch(session, gv.sign(VID), "bytes=0-9"))[0] == 206
    assert gv.fault_log == [(VID, "status", 429), (VID, "status", 500)]


async def test_reset_fault(
    gv: FakeGooglevideo, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gv.write_size = 16_384
    fault = gv.add_fault(VID, Fault("reset", at_byte=150_000))
    url = gv.sign(VID)
    async with session.get(url, headers={"Range": "bytes=100000-199999"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Length"] == "100000"
        got, exc = await read_until_error(resp)
    assert isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError)
    assert got == DATA[100_000:150_000]
    assert (fault.times, fault.fired) == (0, 1)
    assert gv.fault_log == [(VID, "reset", 150_000)]
    assert gv.counts == {"ok": 1, "fault_reset": 1}
    await gv.wait_no_open_bodies(timeout=1)
    assert (gv.aborted_bodies, gv.completed_bodies) == (1, 0)
    # Used up: the same range is served whole now.
    status, _, body = await fetch(session, url, "bytes=100000-199999")
    assert (status, body) == (206, DATA[100_000:200_000])
    assert gv.completed_bodies == 1
    assert_no_server_errors(caplog)


async def test_reset_at_range_start_sends_headers_only(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    gv.add_fault(VID, Fault("reset", at_byte=500))
    async with session.get(gv.sign(VID), headers={"Range": "bytes=500-999"}) as resp:
        assert resp.status == 206
        got, exc = await read_until_error(resp)
    assert got == b""
    assert isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError)


@pytest.mark.parametrize(("kind", "how"), [("reset", "reset"), ("truncate", "eof")])
async def test_reset_is_rst_truncate_is_fin(gv: FakeGooglevideo, kind: str, how: str) -> None:
    gv.add_fault(VID, Fault(kind, at_byte=1500))
    target = gv.sign(VID)[len(gv.base_url) :]
    raw, ended = await raw_get(gv.port, target, "bytes=1000-1999")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert b"Content-Length: 1000" in head
    assert body == DATA[1000:1500]
    assert ended == how
    await gv.wait_no_open_bodies(timeout=1)
    assert gv.aborted_bodies == 1


async def test_truncate_fault(
    gv: FakeGooglevideo, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fault = gv.add_fault(VID, Fault("truncate", at_byte=20_000))
    async with session.get(gv.sign(VID), headers={"Range": "bytes=0-99999"}) as resp:
        assert resp.headers["Content-Length"] == "100000"
        got, exc = await read_until_error(resp)
    assert isinstance(exc, aiohttp.ClientPayloadError)
    assert got == DATA[:20_000]
    assert fault.fired == 1
    assert gv.counts == {"ok": 1, "fault_truncate": 1}
    assert gv.fault_log == [(VID, "truncate", 20_000)]
    await gv.wait_no_open_bodies(timeout=1)
    assert (gv.aborted_bodies, gv.completed_bodies) == (1, 0)
    assert_no_server_errors(caplog)


async def test_stall_fault_client_read_timeout(
    gv: FakeGooglevideo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fault = gv.add_fault(VID, Fault("stall", at_byte=30_000, stall_seconds=2))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        t0 = time.monotonic()
        async with s.get(gv.sign(VID), headers={"Range": "bytes=10000-59999"}) as resp:
            assert resp.status == 206
            got, exc = await read_until_error(resp)
        assert isinstance(exc, TimeoutError)
        assert got == DATA[10_000:30_000]
        assert 0.3 <= time.monotonic() - t0 < 1.5
    assert gv.fault_log == [(VID, "stall", 30_000)]
    assert gv.counts["fault_stall"] == 1
    assert fault.fired == 1
    # The client left: the stalled handler ends well before stall_seconds.
    await gv.wait_no_open_bodies(timeout=1)
    assert time.monotonic() - t0 < 1.5
    assert (gv.aborted_bodies, gv.completed_bodies) == (1, 0)
    assert_no_server_errors(caplog)


async def test_stall_then_abort(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    gv.add_fault(VID, Fault("stall", at_byte=5000, stall_seconds=0.3))
    t0 = time.monotonic()
    async with session.get(gv.sign(VID), headers={"Range": "bytes=0-9999"}) as resp:
        got, exc = await read_until_error(resp)
    assert time.monotonic() - t0 >= 0.3
    assert got == DATA[:5000]
    assert isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError)
    await gv.wait_no_open_bodies(timeout=1)
    assert gv.aborted_bodies == 1


async def test_close_during_stall(session: aiohttp.ClientSession) -> None:
    fake = FakeGooglevideo()
    await fake.start()
    fake.add_track(VID, DATA, title=TITLE)
    fake.add_fault(VID, Fault("stall", at_byte=1000, stall_seconds=60))
    resp = await session.get(fake.sign(VID), headers={"Range": "bytes=0-9999"})
    try:
        assert await resp.content.readexactly(1000) == DATA[:1000]
        await fake.wait_for(lambda: fake.open_bodies == 1, timeout=1)
        t0 = time.monotonic()
        await fake.close()
        assert time.monotonic() - t0 < 1
        assert (fake.open_bodies, fake.aborted_bodies) == (0, 1)
    finally:
        resp.close()


async def test_revoke_fault(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    fault = gv.add_fault(VID, Fault("revoke", at_byte=5000))
    old = gv.sign(VID)
    assert (await fetch(session, old, "bytes=0-4999"))[0] == 206  # does not cover 5000
    assert fault.fired == 0
    status, _, body = await fetch(session, old, "bytes=5000-9999")
    assert (status, body) == (206, DATA[5000:10000])  # served normally
    assert (fault.times, fault.fired) == (0, 1)
    status, _, body = await fetch(session, old, "bytes=10000-10999")
    assert (status, body) == (403, b"403 revoked\n")
    assert gv.requests[-1].kind == "revoked"
    assert (await fetch(session, gv.sign(VID), "bytes=5000-5999"))[0] == 206
    assert gv.fault_log == [(VID, "revoke", 5000)]
    assert gv.counts == {"ok": 3, "fault_revoke": 1, "revoked": 1}
    assert (gv.completed_bodies, gv.aborted_bodies) == (3, 0)


async def test_out_of_range_fault_not_consumed(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    fault = gv.add_fault(VID, Fault("truncate", at_byte=50_000))
    url = gv.sign(VID)
    for rng, want in [("bytes=0-49999", DATA[:50_000]), ("bytes=50001-50100", DATA[50_001:50_101])]:
        status, _, body = await fetch(session, url, rng)
        assert (status, body) == (206, want)
    assert (fault.times, fault.fired) == (1, 0)
    assert gv.fault_log == []
    async with session.get(url, headers={"Range": "bytes=50000-50100"}) as resp:
        got, exc = await read_until_error(resp)
    assert (got, isinstance(exc, aiohttp.ClientPayloadError)) == (b"", True)
    assert (fault.times, fault.fired) == (0, 1)


async def test_one_cut_per_body_first_added_wins(
    gv: FakeGooglevideo, session: aiohttp.ClientSession
) -> None:
    first = gv.add_fault(VID, Fault("truncate", at_byte=800))
    second = gv.add_fault(VID, Fault("reset", at_byte=300))
    async with session.get(gv.sign(VID), headers={"Range": "bytes=0-999"}) as resp:
        got, _ = await read_until_error(resp)
    assert got == DATA[:800]
    assert (first.fired, second.fired, second.times) == (1, 0, 1)
    async with session.get(gv.sign(VID), headers={"Range": "bytes=0-999"}) as resp:
        got, _ = await read_until_error(resp)
    assert got == DATA[:300]
    assert gv.fault_log == [(VID, "truncate", 800), (VID, "reset", 300)]


async def test_clear_faults(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    gv.add_track("other", DATA[:100], title="o")
    gv.add_fault(VID, Fault("status"))
    gv.add_fault("other", Fault("status"))
    gv.set_watch_faults(VID, [500])
    gv.clear_faults(VID)
    assert (await fetch(session, gv.sign(VID), "bytes=0-9"))[0] == 206
    assert (await fetch(session, gv.watch_url(VID)))[0] == 200
    assert (await fetch(session, gv.sign("other"), "bytes=0-9"))[0] == 503
    gv.add_fault("other", Fault("status"))
    gv.clear_faults()
    assert (await fetch(session, gv.sign("other"), "bytes=0-9"))[0] == 206


async def test_watch_faults_sequence(gv: FakeGooglevideo, session: aiohttp.ClientSession) -> None:
    gv.set_watch_faults(VID, [500, 429])
    statuses = [(await fetch(session, gv.watch_url(VID)))[0] for _ in range(3)]
    assert statuses == [500, 429, 200]
    assert gv.fault_log == [(VID, "watch", 500), (VID, "watch", 429)]
    assert gv.watch_hits[VID] == 3
    assert [(r.kind, r.status) for r in gv.requests] == [
        ("watch", 500),
        ("watch", 429),
        ("watch", 200),
    ]
    # Independent of set_watch_status: the queue goes first, the forced status stays.
    gv.set_watch_status(VID, 404)
    gv.set_watch_faults(VID, [503])
    statuses = [(await fetch(session, gv.watch_url(VID)))[0] for _ in range(2)]
    assert statuses == [503, 404]
    gv.set_watch_status(VID, None)
    assert (await fetch(session, gv.watch_url(VID)))[0] == 200


async def test_yt_dlp_sees_watch_faults(gv: FakeGooglevideo) -> None:
    gv.set_watch_faults(VID, [500])
    with pytest.raises(DownloadError, match="HTTP Error 500"):
        await asyncio.to_thread(extract, gv.watch_url(VID))
    info = await asyncio.to_thread(extract, gv.watch_url(VID))
    assert info["url"].startswith(gv.base_url)
