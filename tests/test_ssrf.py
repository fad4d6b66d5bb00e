"""No server-side request forgery: one test per rule.

Every refusal is checked the same way: a loopback *trap* listener stands where
the forbidden request would go, and its log of connections must stay empty;
addresses that are not on this machine (10.0.0.1, 169.254.169.254 …) must be
refused before yt-dlp is even asked (``resolver.calls == 0``), so nothing ever
leaves 127.0.0.1.  Each rule also has a control showing the trap does see
requests when the rule allows them, so these tests can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from tests.test_cli import cli_env, run_ytproxy
from ytproxy.config import ResolverConfig
from ytproxy.errors import InvalidTrackId, SourceNotAllowed
from ytproxy.http.app import RESOLVER, STORE, TRACKS
from ytproxy.library.store import Store
from ytproxy.library.tracks import Tracks
from ytproxy.models import PlaylistEntry, StreamInfo
from ytproxy.resolve.resolver import Resolver
from ytproxy.resolve.sources import address_refusal

VID = "Ss_rf-Test1"
OTHER = "dQw4w9WgXcQ"


class Trap:
    """A loopback listener that records every connection and request line.

    It answers ``404`` and closes, so a client that does reach it fails fast.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.request_lines: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            line = await reader.readline()
            self.request_lines.append(line.decode("latin-1").strip())
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    @property
    def untouched(self) -> bool:
        return self.connections == 0 and not self.request_lines

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    listener = Trap()
    await listener.start()
    yield listener
    await listener.close()


async def post_track(proxy: RunningProxy, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with proxy.session.post(proxy.url("/tracks"), json=body) as resp:
        return resp.status, await resp.json()


# -------------------------------------------------------------- sources: only http(s)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "ftp://127.0.0.1:{port}/song.mp3",
    "data:text/html,<audio><source src='http://127.0.0.1:{port}/x'></audio>",
    "gopher://127.0.0.1:{port}/_GET",
])
async def test_post_tracks_refuses_non_http_sources_naming_the_value(
    make_proxy: ProxyFactory, trap: Trap, url: str
) -> None:
    url = url.format(port=trap.port)
    # Even with private sources allowed, the scheme rule stands on its own.
    proxy = await make_proxy(resolver={"allow_private_sources": True})
    status, body = await post_track(proxy, {"url": url})
    assert status == 400, body
    assert body["error"] == "bad_id"
    assert 'field "url"' in body["message"]
    assert url.split("?")[0][:20] in body["message"]
    assert "http" in body["message"]
    assert proxy.app[RESOLVER].calls == 0
    assert trap.untouched


async def test_import_refuses_non_http_playlist_urls(
    make_proxy: ProxyFactory, trap: Trap
) -> None:
    proxy = await make_proxy(resolver={"allow_private_sources": True})
    for url in ("file:///etc/passwd", f"ftp://127.0.0.1:{trap.port}/list"):
        with pytest.raises(SourceNotAllowed) as info:
            await proxy.app[TRACKS].import_playlist(url)
        assert repr(url) in str(info.value) and "http" in str(info.value)
    assert proxy.app[RESOLVER].calls == 0
    assert trap.untouched


# ------------------------------------------- sources: no loopback / private addresses


# URLs whose host is, or resolves to, an address ytproxy must not read from.
# {port} is the trap's, so a leak to this machine would be seen.
PRIVATE_SOURCES = [
    ("http://127.0.0.1:{port}/watch?v=x", "loopback"),
    ("http://127.7.7.7:{port}/page", "loopback"),
    ("http://localhost:{port}/page", "loopback"),  # a name that resolves to loopback
    ("http://LOCALHOST.:{port}/page", "loopback"),
    ("http://2130706433:{port}/page", "loopback"),  # 127.0.0.1 written as one number
    ("http://0x7f.1:{port}/page", "loopback"),  # and in inet_aton's hex shorthand
    ("http://[::1]:{port}/page", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/page", "loopback"),  # IPv4-mapped IPv6
    ("https://user@127.0.0.1:{port}/page", "loopback"),  # userinfo is not the host
    ("http://0.0.0.0:{port}/page", "unspecified"),
    ("http://[::]:{port}/page", "unspecified"),
    ("http://10.0.0.1/page", "private"),
    ("http://172.16.5.4/page", "private"),
    ("http://192.168.1.1/page", "private"),
    ("http://[fd00::1]/page", "private"),  # ULA fc00::/7
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://[fe80::1]/page", "link-local"),
    ("http://224.0.0.1/page", "multicast"),
    ("http://[ff02::1]/page", "multicast"),
    ("http://100.64.0.1/page", "not a public"),  # carrier-grade NAT
]


@pytest.mark.parametrize(("url", "kind"), PRIVATE_SOURCES)
async def test_post_tracks_refuses_private_sources_before_any_request(
    make_proxy: ProxyFactory, trap: Trap, googlevideo: FakeGooglevideo, url: str, kind: str
) -> None:
    url = url.format(port=trap.port)
    proxy = await make_proxy()
    status, body = await post_track(proxy, {"url": url})
    assert status == 400, body
    assert body["error"] == "source_not_allowed"
    assert kind in body["message"]
    assert "allow_private_sources" in body["message"]
    assert url in body["message"]  # names the value (no query to redact here)
    # Refused before yt-dlp was asked: nothing was sent anywhere.
    assert proxy.app[RESOLVER].calls == 0
    assert trap.untouched
    assert googlevideo.requests == []
    assert await proxy.app[STORE].list_tracks() == []


async def test_allow_private_sources_lets_a_loopback_page_be_read(
    make_proxy: ProxyFactory, trap: Trap
) -> None:
    """The control: with the allowance, the same request does reach the trap."""
    proxy = await make_proxy(resolver={"allow_private_sources": True})
    url = f"http://localhost:{trap.port}/page"
    status, body = await post_track(proxy, {"url": url})
    assert status >= 400  # the trap answers 404; what matters is that it was asked
    assert body["error"] != "source_not_allowed"
    assert trap.request_lines and trap.request_lines[0].startswith("GET /page ")


async def test_import_refuses_a_private_playlist_url(
    make_proxy: ProxyFactory, trap: Trap
) -> None:
    proxy = await make_proxy()
    url = f"http://localhost:{trap.port}/list.html"
    with pytest.raises(SourceNotAllowed) as info:
        await proxy.app[TRACKS].import_playlist(url, "x")
    assert "loopback" in str(info.value) and url in str(info.value)
    assert proxy.app[RESOLVER].calls == 0
    assert trap.untouched
    assert await proxy.app[STORE].list_playlists() == []


class ListingResolver(Resolver):
    """A resolver whose playlist listing is given, as a hostile page could list it."""

    def __init__(self, entries: list[PlaylistEntry]) -> None:
        super().__init__(ResolverConfig(timeout=5.0))
        self.entries = entries
        self.listed: list[str] = []

    async def list_playlist(self, url: str) -> tuple[str | None, list[PlaylistEntry]]:
        self.listed.append(url)
        return "Hostile", list(self.entries)


async def test_playlist_entries_pointing_inward_are_skipped(tmp_path: Path, trap: Trap) -> None:
    """A public playlist page must not smuggle loopback or private URLs into the store."""
    entries = [
        PlaylistEntry(OTHER, f"https://www.youtube.com/watch?v={OTHER}", "Fine"),
        PlaylistEntry(None, f"http://127.0.0.1:{trap.port}/a", "Inward 1"),
        PlaylistEntry(None, f"http://localhost:{trap.port}/b", "Inward 2"),
        PlaylistEntry(None, "http://10.0.0.1/c", "Private"),
        PlaylistEntry(None, "file:///etc/passwd", "Not http"),
    ]
    resolver = ListingResolver(entries)
    store = await Store.open(tmp_path / "tracks.db")
    try:
        tracks = Tracks(store, resolver, ResolverConfig(timeout=5.0))
        # A public IP literal: checked without a DNS look-up, never contacted here.
        summary = await tracks.import_playlist("https://93.184.215.14/list", "hostile")
        assert summary.track_ids == (OTHER,)
        assert (summary.added, summary.skipped) == (1, 4)
        assert [t.id for t in await store.list_tracks()] == [OTHER]
    finally:
        await store.close()
        await resolver.close()
    assert resolver.listed == ["https://93.184.215.14/list"]
    assert trap.untouched


async def test_cli_add_and_import_refuse_with_exit_1_naming_the_value(
    tmp_path: Path, trap: Trap
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "tracks.db"}"\n', encoding="utf-8")
    env = cli_env(tmp_path)
    inward = f"http://localhost:{trap.port}/page"
    result = await run_ytproxy(env, "--config", str(config), "add", "file:///etc/passwd",
                               inward)
    assert result.rc == 1
    assert "'file:///etc/passwd'" in result.err and "http" in result.err
    assert inward in result.err and "allow_private_sources" in result.err
    assert "Traceback" not in result.err
    result = await run_ytproxy(env, "--config", str(config), "import", inward + "/list")
    assert result.rc == 1
    assert inward + "/list" in result.err and "loopback" in result.err
    assert "Traceback" not in result.err
    assert trap.untouched


# ------------------------------------------------------------ ids into the template


@pytest.mark.parametrize("value", [
    "../../admin?",  # would change the template's path
    "x@10.0.0.1/a",  # would change its host
    "dQw4w9WgXcQ#",  # one character too many
    "dQw4w9WgXc%",
])
async def test_ids_are_validated_before_they_go_into_the_template(
    make_proxy: ProxyFactory, googlevideo: FakeGooglevideo, value: str
) -> None:
    proxy = await make_proxy()
    status, body = await post_track(proxy, {"id": value})
    assert status == 400 and body["error"] == "bad_id", body
    with pytest.raises(InvalidTrackId):
        proxy.app[RESOLVER].source_url_for(value)
    async with proxy.session.get(proxy.url(f"/proxy/{quote(value, safe='')}")) as resp:
        assert resp.status in (400, 404)
    assert googlevideo.requests == []
    assert proxy.app[RESOLVER].calls == 0


# ------------------------------------------------- upstream: only the resolver's URLs


async def plant_stream(proxy: RunningProxy, url: str, size: int = 50_000) -> None:
    """Store ``url`` as the track's fresh stream URL, as if the resolver had produced it."""
    store = proxy.app[STORE]
    await store.upsert_track(VID, f"https://www.youtube.com/watch?v={VID}", title="Planted")
    await store.save_stream(VID, StreamInfo(url=url, expires_at=time.time() + 3600,
                                            mime="audio/webm", size=size))


async def get_proxy(proxy: RunningProxy) -> tuple[int, bytes, dict[str, Any] | None]:
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        data = await resp.read()
        body = await resp.json(content_type=None) if resp.status >= 400 else None
        return resp.status, data, body


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "ftp://127.0.0.1:{port}/videoplayback",
    "http://localhost:{port}/videoplayback?sig=SECRETSIG",  # a host not in allowed_hosts
    "http://10.0.0.1/videoplayback",
])
async def test_upstream_fetches_only_http_from_allowed_hosts(
    make_proxy: ProxyFactory, trap: Trap, url: str
) -> None:
    proxy = await make_proxy()  # upstream.allowed_hosts = ["127.0.0.1"]
    await plant_stream(proxy, url.format(port=trap.port))
    status, _, body = await get_proxy(proxy)
    assert status == 502 and body is not None
    assert body["error"] == "upstream_host_not_allowed"
    assert "SECRETSIG" not in body["message"]
    assert proxy.app[RESOLVER].calls == 0  # no refresh: a refused host is not an expiry
    assert trap.untouched


async def test_an_allowed_upstream_url_is_fetched(
    make_proxy: ProxyFactory, googlevideo: FakeGooglevideo
) -> None:
    """The control for the rule above: the same planting, on an allowed host, plays."""
    data = random_audio(50_000)
    googlevideo.add_track(VID, data, title="Planted")
    proxy = await make_proxy()
    await plant_stream(proxy, googlevideo.sign(VID))
    status, received, _ = await get_proxy(proxy)
    assert status == 200 and received == data


# ------------------------------------------------------- upstream: redirects stay inside


async def test_redirect_within_allowed_hosts_is_followed(
    make_proxy: ProxyFactory, googlevideo: FakeGooglevideo
) -> None:
    data = random_audio(50_000)
    googlevideo.add_track(VID, data, title="Redirected")
    proxy = await make_proxy()
    await plant_stream(proxy, googlevideo.redirect_url(googlevideo.sign(VID), 302))
    status, received, _ = await get_proxy(proxy)
    assert status == 200 and received == data
    assert googlevideo.counts["redirect"] >= 1 and googlevideo.counts["ok"] >= 1


@pytest.mark.parametrize(("target", "phrase"), [
    ("http://localhost:{port}/videoplayback?sig=SECRETSIG", "not in upstream.allowed_hosts"),
    ("http://127.0.0.1:{port}/videoplayback?sig=SECRETSIG", "port"),  # same host, other port
    ("file:///etc/passwd", "not in upstream.allowed_hosts"),
    ("http://10.0.0.1/videoplayback", "not in upstream.allowed_hosts"),
])
@pytest.mark.parametrize("code", [302, 307])
async def test_redirect_elsewhere_is_not_followed(
    make_proxy: ProxyFactory, googlevideo: FakeGooglevideo, trap: Trap,
    target: str, phrase: str, code: int,
) -> None:
    googlevideo.add_track(VID, random_audio(50_000), title="Redirected")
    proxy = await make_proxy()
    await plant_stream(proxy, googlevideo.redirect_url(target.format(port=trap.port), code))
    status, _, body = await get_proxy(proxy)
    assert status == 502 and body is not None
    assert body["error"] == "upstream_host_not_allowed"
    assert phrase in body["message"] and "redirected" in body["message"]
    assert "SECRETSIG" not in body["message"]
    assert googlevideo.counts["redirect"] == 1  # asked once: no retry, no refresh
    assert proxy.app[RESOLVER].calls == 0
    assert trap.untouched


def test_address_classification() -> None:
    assert address_refusal("8.8.8.8") is None
    assert address_refusal("2606:4700:4700::1111") is None
    assert address_refusal("::ffff:8.8.8.8") is None
    assert address_refusal("127.0.0.1") == "a loopback address"
    assert address_refusal("fe80::1%eth0") == "a link-local address"
    assert address_refusal("64:ff9b::a00:1") == "a private address"  # NAT64 of 10.0.0.1
    assert address_refusal("2002:7f00:1::") == "a loopback address"  # 6to4 of 127.0.0.1
    assert address_refusal("nonsense") == "not an IP address"
