"""The relay: exact bytes, every Range form, HEAD, bounded upstream requests."""

from __future__ import annotations

import hashlib

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, random_audio

VID = "dQw4w9WgXcQ"
SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of any chunk size used here


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_only_bounded_ranges(googlevideo: FakeGooglevideo, chunk_size: int) -> None:
    media = [r for r in googlevideo.requests if r.path == "/videoplayback"]
    assert media, "the proxy never fetched from upstream"
    for record in media:
        assert record.method == "GET"
        assert record.range_header is not None
        first, last = record.range_header.removeprefix("bytes=").split("-")
        assert first and last, record.range_header
        assert int(last) - int(first) + 1 <= chunk_size
    bad = {"no_range", "open_ended", "too_large", "head", "bad_range"}
    assert not (bad & set(googlevideo.counts)), googlevideo.counts


@pytest.mark.parametrize("chunk_size", [65536, 100_000, 262_144, 1_048_576])
async def test_whole_track_is_byte_identical(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, chunk_size: int
) -> None:
    data = random_audio(SIZE)
    googlevideo.add_track(VID, data, title="Song", mime="audio/webm")
    proxy = await make_proxy(upstream={"chunk_size": chunk_size})
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        body = await resp.read()
        assert resp.headers["Content-Length"] == str(SIZE)
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Content-Type"] == "audio/webm"
        assert resp.headers["icy-name"].startswith("Song")
    assert sha(body) == sha(data)
    assert_only_bounded_ranges(googlevideo, chunk_size)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-", 0, SIZE - 1),
        ("bytes=1000000-", 1_000_000, SIZE - 1),
        ("bytes=5-9", 5, 9),
        ("bytes=300000-2999999", 300_000, 2_999_999),
        ("bytes=-1000", SIZE - 1000, SIZE - 1),
        ("bytes=-99999999", 0, SIZE - 1),
        ("bytes=100-99999999", 100, SIZE - 1),
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
    ],
)
async def test_range_forms(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, header: str, start: int, end: int
) -> None:
    data = random_audio(SIZE, seed=2)
    googlevideo.add_track(VID, data, title="Song")
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"), headers={"Range": header}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
        assert resp.headers["Content-Length"] == str(end - start + 1)
        body = await resp.read()
    assert body == data[start : end + 1]
    assert_only_bounded_ranges(googlevideo, proxy.config.upstream.chunk_size)


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}",
                                    "bytes=-0", "bytes=9-5", "bytes=abc", "bytes=-"])
async def test_unsatisfiable_or_malformed_range_is_416(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, header: str
) -> None:
    googlevideo.add_track(VID, random_audio(SIZE), title="Song")
    proxy = await make_proxy()
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"), headers={"Range": header}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
        body = await resp.json()
    assert body["error"] == "bad_range"
    assert body["message"]


async def test_other_units_and_multi_range_get_the_whole_body(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(300_000)
    googlevideo.add_track(VID, data, title="Song")
    proxy = await make_proxy()
    for header in ("items=0-5", "bytes=0-5,10-20"):
        async with proxy.session.get(proxy.url(f"/proxy/{VID}"),
                                     headers={"Range": header}) as resp:
            assert resp.status == 200
            assert await resp.read() == data


async def test_head_answers_headers_without_fetching_the_body(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(SIZE), title="Song")
    proxy = await make_proxy()
    async with proxy.session.head(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Content-Type"] == "audio/webm"
    # clen= in the signed URL gave the size: the body was never asked for.
    assert googlevideo.counts["ok"] == 0
    assert googlevideo.counts["head"] == 0


async def test_icy_clients_get_a_chunked_whole_body_so_mpd_keeps_the_name(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    # MPD drops icy-name for a seekable stream of known size (see test_mpd_harness).
    data = random_audio(SIZE)
    googlevideo.add_track(VID, data, title="Song")
    proxy = await make_proxy()
    icy = {"Icy-MetaData": "1", "User-Agent": "Music Player Daemon 0.23.12"}
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"), headers=icy) as resp:
        assert resp.status == 200
        assert "Content-Length" not in resp.headers
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert await resp.read() == data
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"),
                                 headers={**icy, "Range": "bytes=1000-"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Length"] == str(SIZE - 1000)
        assert await resp.read() == data[1000:]
    async with proxy.session.head(proxy.url(f"/proxy/{VID}"), headers=icy) as resp:
        assert resp.status == 200
        assert "Content-Length" not in resp.headers
