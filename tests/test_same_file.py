"""A resume never splices two files: the size a listener was promised is the
size of every URL the stream is resumed from, and a body never ends clean and
short of what was promised."""

from __future__ import annotations

import logging
import time

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, random_audio
from ytproxy.http.app import SLOTS, STORE
from ytproxy.models import StreamInfo

FAST = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 0.5, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.02, "max_delay": 0.2, "gap_budget": 10.0},
}
VID = "SameFile_01"


async def test_a_wrong_stored_size_is_answered_with_upstreams_size(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    # Reproduction: a stored size of 100,000 and an upstream file of 90,000 gave
    # Content-Length: 100000, 90,000 bytes, and a connection left open.
    data = random_audio(90_000, seed=3)
    googlevideo.add_track(VID, data, title="Shorter")
    proxy = await make_proxy(**FAST)
    store = proxy.app[STORE]
    await store.upsert_track(VID, googlevideo.watch_url(VID), title="Shorter")
    await store.save_stream(VID, StreamInfo(url=googlevideo.sign(VID),
                                            expires_at=time.time() + 3600, size=100_000))
    caplog.set_level(logging.WARNING)
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "90000"
        body = await resp.read()
    assert body == data
    assert "stored size (100000 bytes) is not upstream's (90000)" in caplog.text
    # A seek near the end is answered within upstream's file, exactly.
    async with proxy.session.get(proxy.url(f"/proxy/{VID}"),
                                 headers={"Range": "bytes=80000-"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == "bytes 80000-89999/90000"
        assert await resp.read() == data[80_000:]
    track = await store.get(VID)
    assert track is not None and track.stream_size == 90_000


async def test_a_refresh_to_a_file_of_another_size_is_never_resumed_from(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    first = random_audio(6_000_000, seed=4)  # beyond socket buffers: the swap lands mid-way
    other = random_audio(5_900_000, seed=5)  # another encode of the same video
    googlevideo.add_track(VID, first, title="Changing")
    proxy = await make_proxy(**FAST)
    caplog.set_level(logging.WARNING)
    received = b""
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.headers["Content-Length"] == str(len(first))
        received = await resp.content.readexactly(100_000)
        googlevideo.add_track(VID, other, title="Changing")
        googlevideo.revoke(VID)  # the next range needs a fresh URL: the other file's
        with pytest.raises(aiohttp.ClientPayloadError):
            while piece := await resp.content.read(65536):
                received += piece
    assert len(received) < len(first)
    assert received == first[:len(received)]  # no byte of the other file
    assert googlevideo.watch_hits[VID] >= 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "not the 6000000 bytes of this stream" in errors[0], errors
    assert proxy.app[SLOTS].in_use == 0
