"""A googlevideo URL is fetched over the address family of the address it was
made for (``ip=``): an IPv4 URL fetched over IPv6 (or the reverse) is a 403."""

from __future__ import annotations

import socket
import time

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import random_audio
from ytproxy.config import RetryConfig, UpstreamConfig
from ytproxy.errors import UpstreamFailed
from ytproxy.models import StreamInfo
from ytproxy.upstream import RangeStream, StreamSource, UpstreamFetcher, address_family

VID = "FamilyTrk01"


@pytest.mark.parametrize(("url", "family"), [
    ("https://h/videoplayback?ip=203.0.113.7&expire=1", socket.AF_INET),
    ("https://h/videoplayback?ip=2001%3Adb8%3A%3A1&expire=1", socket.AF_INET6),
    ("https://h/videoplayback?ip=2001:db8::1", socket.AF_INET6),
    ("https://h/videoplayback?expire=1", None),
    ("https://h/videoplayback?ip=not-an-address", None),
])
def test_address_family_from_ip(url: str, family: socket.AddressFamily | None) -> None:
    assert address_family(url) == family


async def read_all(fetcher: UpstreamFetcher, info: StreamInfo, size: int) -> bytes:
    async def no_refresh(*_: object) -> StreamInfo:
        raise AssertionError("not expected to refresh")

    # A connection that cannot be made is the network's failure, held for
    # hold_budget (120 s by default) before it is given up: held 1 s here.
    policy = RetryConfig(base_delay=0.01, max_delay=0.05, gap_budget=0.5, attempts=2,
                         hold_budget=1.0)
    body = b""
    async with RangeStream(StreamSource(fetcher, no_refresh, policy), info, 0,
                           size - 1) as stream:
        while (piece := await stream.next_piece()) is not None:
            body += piece
    return body


async def test_each_url_goes_over_its_own_family(googlevideo: FakeGooglevideo) -> None:
    data = random_audio(100_000)
    googlevideo.add_track(VID, data, title="Family")
    # The same fake, also on ::1 (googlevideo hosts answer on both).
    assert googlevideo._runner is not None
    site6 = web.TCPSite(googlevideo._runner, "::1", 0)
    await site6.start()
    port6 = site6._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    signed = googlevideo.sign(VID)
    v4 = StreamInfo(url=signed + "&ip=127.0.0.1", expires_at=time.time() + 60)
    v6 = StreamInfo(url=signed.replace(f"127.0.0.1:{googlevideo.port}", f"[::1]:{port6}")
                    + "&ip=%3A%3A1", expires_at=time.time() + 60)
    # An IPv6 URL on a host name that has only an IPv4 address here: fetched
    # over IPv6 it cannot connect, where an IPv4 fetch would have worked.
    v6_on_v4 = StreamInfo(url=signed + "&ip=::1", expires_at=time.time() + 60)
    config = UpstreamConfig(allowed_hosts=("127.0.0.1", "::1"), chunk_size=64 * 1024,
                            connect_timeout=1.0)
    async with aiohttp.ClientSession() as session:
        fetcher = UpstreamFetcher(config, session)
        try:
            assert await read_all(fetcher, v4, len(data)) == data
            assert await read_all(fetcher, v6, len(data)) == data
            before = len(googlevideo.requests)
            with pytest.raises(UpstreamFailed):
                await read_all(fetcher, v6_on_v4, len(data))
            assert len(googlevideo.requests) == before  # never sent over IPv4
        finally:
            await fetcher.aclose()
