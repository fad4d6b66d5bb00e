"""Upstream connections on the warm path: a listener who leaves at once costs one
short range, and the next stream's first range reuses its connection."""

from __future__ import annotations

import asyncio
import hashlib

from tests.fakes.googlevideo import FakeGooglevideo, RequestRecord
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.http.app import REGISTRY
from ytproxy.upstream import FIRST_RANGE

VID = "CoNnEcTiOn1"
MPD = "User-Agent: Music Player Daemon 0.23.12\r\nIcy-MetaData: 1\r\n"


async def leave_after_first_bytes(proxy: RunningProxy) -> bytes:
    """What MPD does on a seek or a probe: read the first bytes and hang up."""
    port = proxy.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /proxy/{VID} HTTP/1.1\r\nHost: 127.0.0.1\r\n{MPD}"
                     "Connection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return await reader.read(1024)
    finally:
        writer.close()


def media(googlevideo: FakeGooglevideo) -> list[RequestRecord]:
    return [r for r in googlevideo.requests if r.kind == "ok"]


async def settle(proxy: RunningProxy, googlevideo: FakeGooglevideo) -> None:
    """Until no stream is open on either side (bounded)."""
    for _ in range(250):
        if not (proxy.app[REGISTRY].active() or googlevideo.open_bodies):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("streams still open after 5 s")
    await asyncio.sleep(0.1)  # past the pause before a second range


async def test_a_listener_who_leaves_at_once_costs_one_short_range(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(3 * 1024 * 1024), title="Probe")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    assert await leave_after_first_bytes(proxy)
    await settle(proxy, googlevideo)
    assert [r.range_header for r in media(googlevideo)] == [f"bytes=0-{FIRST_RANGE - 1}"]


async def test_the_next_stream_starts_on_the_same_connection(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, random_audio(3 * 1024 * 1024), title="Seek")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    for _ in range(3):
        assert await leave_after_first_bytes(proxy)
        await settle(proxy, googlevideo)
    ports = [r.client_port for r in media(googlevideo)]
    assert len(ports) == 3 and ports[0] is not None
    assert len(set(ports)) == 1, ports  # one TCP (and, upstream, TLS) set-up for three starts


async def test_a_listener_who_stays_gets_every_byte_after_the_short_first_range(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    data = random_audio(3 * 1024 * 1024 + 5)
    googlevideo.add_track(VID, data, title="Whole")
    proxy = await make_proxy(upstream={"chunk_size": 1_048_576})
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    first, *rest = [r.range_header for r in media(googlevideo)]
    assert first == f"bytes=0-{FIRST_RANGE - 1}"
    assert rest[0] == f"bytes={FIRST_RANGE}-{FIRST_RANGE + 1_048_575}"
