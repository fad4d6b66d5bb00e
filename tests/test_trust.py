"""What a web page can do to the daemon: cross-site writes, DNS rebinding, and
the players that must keep working (ytproxy.http.origin).

The rule is tested on its own (``Hosts``, ``refusal``) and over real sockets,
with the headers a browser sends: a no-cors ``fetch`` posts ``text/plain``
with an ``Origin``; a rebound page's requests carry its own name as ``Host``
and ``Sec-Fetch-Site: same-origin``; an ``<audio>`` element of another site
sends ``Sec-Fetch-Site: cross-site`` and no Origin.  MPD sends none of them.
"""

from __future__ import annotations

import json

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from tests.test_hostile import RawResponse, send_raw
from ytproxy.config import Config, ConfigError, config_from_mapping
from ytproxy.http.app import PLAYER_PATHS, STORE, create_app
from ytproxy.http.origin import Asked, Hosts, refusal

STORED = "TrustStored"
NEW = "TrustNewTrk"
DATA = random_audio(30_000, seed=23)
TOKEN = "trust-token-0123456789abcdef"


# --------------------------------------------------------------------- the rule itself


@pytest.mark.parametrize(("listen", "allowed", "host", "accepted"), [
    ("127.0.0.1", (), "127.0.0.1", True),
    ("127.0.0.1", (), "127.0.0.1:6602", True),
    ("127.0.0.1", (), "127.0.0.1:1", True),  # the port is not the daemon's business
    ("127.0.0.1", (), "localhost", True),
    ("127.0.0.1", (), "LocalHost.:6602", True),
    ("127.0.0.1", (), "[::1]:6602", True),
    ("127.0.0.1", (), "127.0.0.2", True),  # loopback literals cannot be rebound
    ("127.0.0.1", (), "evil.example", False),
    ("127.0.0.1", (), "evil.example:6602", False),
    ("127.0.0.1", (), "127.0.0.1.evil.example", False),
    ("127.0.0.1", (), "localhost.evil.example", False),
    ("127.0.0.1", (), "192.168.1.5", False),
    ("127.0.0.1", (), "", False),
    ("127.0.0.1", ("music.example",), "Music.Example:443", True),
    ("127.0.0.1", ("music.example",), "other.example", False),
    ("0.0.0.0", (), "192.168.1.5:6602", True),  # a LAN player by address
    ("0.0.0.0", (), "[fe80::1]:6602", True),
    ("0.0.0.0", (), "localhost", True),
    ("0.0.0.0", (), "mybox.lan:6602", False),  # a name: rebinding needs no more
    ("0.0.0.0", ("mybox.lan",), "mybox.lan:6602", True),
    ("::", (), "10.1.2.3", True),
    ("::1", (), "[0:0::1]:6602", True),
    ("192.168.1.5", (), "192.168.1.5:6602", True),
    ("192.168.1.5", (), "10.0.0.1", False),
    ("myhost.lan", (), "MYHOST.LAN.:6602", True),
    ("myhost.lan", (), "otherhost.lan", False),
])
def test_the_host_names_the_daemon_answers_to(
    listen: str, allowed: tuple[str, ...], host: str, accepted: bool
) -> None:
    assert Hosts(listen, frozenset(allowed)).accepts(host) is accepted


@pytest.mark.parametrize(("origin", "foreign"), [
    (None, False),
    ("http://127.0.0.1:6602", False),
    ("http://localhost:3000", False),
    ("http://[::1]:8080", False),
    ("null", True),  # a sandboxed frame, a file:// page, a redirect
    ("https://evil.example", True),
    ("http://127.0.0.1.evil.example", True),
    ("garbage", True),
    ("http://[zz", True),
])
def test_which_origins_are_foreign(origin: str | None, foreign: bool) -> None:
    assert Hosts("127.0.0.1").foreign_origin(origin) is foreign


HOSTS = Hosts("127.0.0.1")


@pytest.mark.parametrize(("asked", "code"), [
    # the API: an accepted Host, or none at all (HTTP/1.0)
    (Asked("GET", False, host="127.0.0.1:6602"), None),
    (Asked("GET", False), None),
    (Asked("GET", False, host="evil.example:6602"), "forbidden_host"),
    (Asked("HEAD", False, host="evil.example"), "forbidden_host"),
    (Asked("DELETE", False, host="evil.example:6602"), "forbidden_host"),
    # writes: no other site's page, and JSON bodies
    (Asked("DELETE", False, host="127.0.0.1"), None),
    (Asked("POST", False, host="127.0.0.1", has_body=True, content_type="application/json"),
     None),
    (Asked("POST", False, host="127.0.0.1", has_body=True, content_type="text/plain"),
     "unsupported_media_type"),
    (Asked("POST", False, host="127.0.0.1", has_body=True), "unsupported_media_type"),
    (Asked("POST", False, host="127.0.0.1", origin="https://evil.example", has_body=True,
           content_type="application/json"), "cross_site_request"),
    (Asked("DELETE", False, host="127.0.0.1", origin="null"), "cross_site_request"),
    (Asked("DELETE", False, host="127.0.0.1", fetch_site="cross-site"), "cross_site_request"),
    (Asked("DELETE", False, host="127.0.0.1", origin="http://localhost:8080",
           fetch_site="same-site"), None),
    # reads of the API by another site's page: it cannot read the answer
    (Asked("GET", False, host="127.0.0.1", origin="https://evil.example",
           fetch_site="cross-site"), None),
    # players: any Host, as long as no page under that name is asking
    (Asked("GET", True, host="evil.example:6602"), None),
    (Asked("HEAD", True, host="mybox.lan"), None),
    (Asked("GET", True, host="mybox.lan", fetch_site="none"), None),  # a typed address
    (Asked("GET", True, host="evil.example", fetch_site="same-origin"), "forbidden_host"),
    (Asked("GET", True, host="evil.example", fetch_site="cross-site"), "forbidden_host"),
    (Asked("GET", True, host="127.0.0.1", origin="https://evil.example",
           fetch_site="cross-site"), None),  # played, but adds nothing (see below)
])
def test_refusal(asked: Asked, code: str | None) -> None:
    refused = refusal(HOSTS, asked)
    assert (None if refused is None else refused.code) == code
    if refused is not None and refused.code == "forbidden_host":
        assert "[server] allowed_hosts" in str(refused)


def test_allowed_hosts_is_checked_like_any_key() -> None:
    config = config_from_mapping({"server": {"allowed_hosts": ["music.example", "[::1]"]}})
    assert config.server.allowed_hosts == ("music.example", "[::1]")
    assert config_from_mapping({}).server.allowed_hosts == ()
    for bad in (["http://music.example"], ["music.example:443"], ["*.example"], [""],
                ["a b"]):
        with pytest.raises(ConfigError) as caught:
            config_from_mapping({"server": {"allowed_hosts": bad}})
        assert "server.allowed_hosts" in str(caught.value), bad
    with pytest.raises(ConfigError, match=r"server\.allowed_hosts must be an array of strings"):
        config_from_mapping({"server": {"allowed_hosts": "music.example"}})


# ----------------------------------------------------------------- over real sockets


def raw(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    """A request with exactly these headers (Host among them, or none)."""
    lines = [f"{method} {target} HTTP/1.1", "Connection: close", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def ask(proxy: RunningProxy, method: str, target: str, *headers: str,
              body: bytes = b"") -> RawResponse:
    port = proxy.server.port
    assert port is not None
    return await send_raw(port, raw(method, target, *headers, body=body))


def refused_with(answer: RawResponse, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]


@pytest.fixture
async def proxy(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory) -> RunningProxy:
    googlevideo.add_track(STORED, DATA, title="Stored")
    googlevideo.add_track(NEW, DATA, title="New")
    running = await make_proxy(cache={"max_size": 10_000_000})
    async with running.session.get(running.url(f"/proxy/{STORED}")) as resp:
        assert resp.status == 200 and await resp.read() == DATA
    return running


def own_host(proxy: RunningProxy) -> str:
    return f"Host: 127.0.0.1:{proxy.server.port}"


async def test_a_no_cors_post_of_text_plain_is_refused_and_adds_nothing(
    proxy: RunningProxy, googlevideo: FakeGooglevideo
) -> None:
    """What `fetch(url, {mode: "no-cors", method: "POST", body})` sends; curl showed 201."""
    body = json.dumps({"id": NEW}).encode()
    answer = await ask(proxy, "POST", "/tracks", own_host(proxy),
                       "Content-Type: text/plain;charset=UTF-8", body=body)
    refused_with(answer, 415, "unsupported_media_type")
    assert "application/json" in str(answer.json()["message"])
    prefetch = await ask(proxy, "POST", "/cache/prefetch", own_host(proxy),
                         "Content-Type: text/plain", body=json.dumps({"ids": [NEW]}).encode())
    refused_with(prefetch, 415, "unsupported_media_type")
    # The same with an Origin, as a browser sends it: refused for the site first.
    page = await ask(proxy, "POST", "/tracks", own_host(proxy), "Origin: https://evil.example",
                     "Sec-Fetch-Site: cross-site", "Content-Type: text/plain", body=body)
    refused_with(page, 403, "cross_site_request")
    assert await proxy.app[STORE].get(NEW) is None
    assert not [r for r in googlevideo.requests if r.video_id == NEW]  # nothing resolved
    # The program's way still works.
    ok = await ask(proxy, "POST", "/tracks", own_host(proxy), "Content-Type: application/json",
                   body=body)
    assert ok.status == 201, ok.body
    assert await proxy.app[STORE].get(NEW) is not None


async def test_writes_from_another_sites_page_are_refused(proxy: RunningProxy) -> None:
    body = json.dumps({"id": NEW}).encode()
    for headers in (["Origin: https://evil.example"], ["Origin: null"],
                    ["Sec-Fetch-Site: cross-site"],
                    [f"Origin: http://127.0.0.1.evil.example:{proxy.server.port}"]):
        answer = await ask(proxy, "POST", "/tracks", own_host(proxy), *headers,
                           "Content-Type: application/json", body=body)
        refused_with(answer, 403, "cross_site_request")
        delete = await ask(proxy, "DELETE", f"/tracks/{STORED}", own_host(proxy), *headers)
        refused_with(delete, 403, "cross_site_request")
    assert await proxy.app[STORE].get(NEW) is None
    assert await proxy.app[STORE].get(STORED) is not None
    # The daemon's own page (or a local one on another port) may write.
    mine = await ask(proxy, "POST", "/tracks", own_host(proxy),
                     f"Origin: http://127.0.0.1:{proxy.server.port}",
                     "Sec-Fetch-Site: same-origin", "Content-Type: application/json", body=body)
    assert mine.status == 201, mine.body


async def test_a_foreign_host_cannot_delete_or_read_the_api(proxy: RunningProxy) -> None:
    """DNS rebinding: a page on evil.example, rebound to 127.0.0.1, is same-origin
    to the browser; only its Host tells it apart."""
    for method, target in (("DELETE", f"/tracks/{STORED}"), ("DELETE", "/cache")):
        answer = await ask(proxy, method, target, f"Host: evil.example:{proxy.server.port}")
        refused_with(answer, 403, "forbidden_host")
        assert "[server] allowed_hosts" in str(answer.json()["message"])
    assert await proxy.app[STORE].get(STORED) is not None
    async with proxy.session.get(proxy.url("/cache")) as resp:
        assert [t["id"] for t in (await resp.json())["tracks"]] == [STORED]  # not cleared
    for target in ("/status", "/tracks", f"/tracks/{STORED}", "/", "/cache", "/playlists",
                   "/metrics", "/health"):
        answer = await ask(proxy, "GET", target, "Host: evil.example",
                           "Sec-Fetch-Site: same-origin")
        refused_with(answer, 403, "forbidden_host")
        assert STORED.encode() not in answer.body
    # Its own names still read and write.
    for host in (own_host(proxy), f"Host: localhost:{proxy.server.port}", "Host: [::1]"):
        status = await ask(proxy, "GET", "/status", host)
        assert status.status == 200, (host, status.body[:200])
    gone = await ask(proxy, "DELETE", f"/tracks/{STORED}", f"Host: localhost:{proxy.server.port}")
    assert gone.status == 200, gone.body


async def test_players_keep_any_host_but_a_rebound_page_does_not(
    proxy: RunningProxy,
) -> None:
    # MPD, VLC, mpv: the Host the person typed, no Origin, no Sec-Fetch-*.
    for target in (f"/proxy/{STORED}", "/playlist.m3u"):
        answer = await ask(proxy, "GET", target, "Host: mybox.lan:6602",
                           "User-Agent: Music Player Daemon 0.23.12", "Icy-MetaData: 1")
        assert answer.status == 200, (target, answer.body[:200])
    played = await ask(proxy, "GET", f"/proxy/{STORED}", "Host: mybox.lan")
    assert played.body == DATA
    typed = await ask(proxy, "GET", "/playlist.m3u", "Host: mybox.lan", "Sec-Fetch-Site: none")
    assert typed.status == 200 and STORED.encode() in typed.body
    # The same routes fetched by a page under a foreign name.
    for target in (f"/proxy/{STORED}", "/playlist.m3u", f"/proxy/{NEW}"):
        answer = await ask(proxy, "GET", target, "Host: evil.example:6602",
                           "Sec-Fetch-Site: same-origin", "Sec-Fetch-Mode: cors")
        refused_with(answer, 403, "forbidden_host")
        assert STORED.encode() not in answer.body
    assert await proxy.app[STORE].get(NEW) is None


async def test_another_sites_page_plays_stored_tracks_but_adds_none(
    proxy: RunningProxy, googlevideo: FakeGooglevideo
) -> None:
    """`<audio src="http://127.0.0.1:6602/proxy/ID">` on another site."""
    audio = ("Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors", "Sec-Fetch-Dest: audio")
    played = await ask(proxy, "GET", f"/proxy/{STORED}", own_host(proxy), *audio)
    assert played.status == 200 and played.body == DATA
    for headers in (audio, ("Origin: https://evil.example",), ("Origin: null",)):
        for method in ("GET", "HEAD"):
            answer = await ask(proxy, method, f"/proxy/{NEW}", own_host(proxy), *headers)
            assert answer.status == 403, (headers, answer.status)
            if method == "GET":
                refused_with(answer, 403, "cross_site_request")
                assert f"ytproxy add {NEW}" in str(answer.json()["message"])
    assert await proxy.app[STORE].get(NEW) is None
    assert not [r for r in googlevideo.requests if r.video_id == NEW]
    # A player adds it on first play, as ever.
    added = await ask(proxy, "GET", f"/proxy/{NEW}", own_host(proxy),
                      "User-Agent: Music Player Daemon 0.23.12")
    assert added.status == 200 and added.body == DATA
    assert await proxy.app[STORE].get(NEW) is not None


async def test_a_wildcard_bind_answers_to_ip_addresses_and_allowed_names(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    # The policy reads server.host; the test server itself listens on 127.0.0.1.
    proxy = await make_proxy(server={"host": "0.0.0.0", "allowed_hosts": ("mybox.lan",)})
    for host, status in (("192.168.1.5:6602", 200), ("[fe80::1]", 200), ("mybox.lan", 200),
                         ("MyBox.Lan.:6602", 200), ("evil.example", 403)):
        answer = await ask(proxy, "GET", "/tracks", f"Host: {host}")
        assert answer.status == status, (host, answer.body[:200])
    body = json.dumps({"id": "AAAAAAAAAAA", "nope": 1}).encode()
    answer = await ask(proxy, "POST", "/tracks", "Host: mybox.lan",
                       "Origin: http://mybox.lan:6602", "Content-Type: application/json",
                       body=body)
    assert answer.status == 400  # past the trust rules, to the body's own check


async def test_the_token_still_applies_after_these_rules(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(NEW, DATA, title="New")
    proxy = await make_proxy(server={"token": TOKEN})
    body = json.dumps({"id": NEW}).encode()
    missing = await ask(proxy, "POST", "/tracks", own_host(proxy),
                        "Content-Type: application/json", body=body)
    refused_with(missing, 401, "unauthorized")
    plain = await ask(proxy, "POST", "/tracks", own_host(proxy), f"Authorization: Bearer {TOKEN}",
                      "Content-Type: text/plain", body=body)
    refused_with(plain, 415, "unsupported_media_type")
    foreign = await ask(proxy, "DELETE", f"/tracks/{NEW}", "Host: evil.example",
                        f"Authorization: Bearer {TOKEN}")
    refused_with(foreign, 403, "forbidden_host")
    ok = await ask(proxy, "POST", "/tracks", own_host(proxy), f"Authorization: Bearer {TOKEN}",
                   "Content-Type: application/json; charset=utf-8", body=body)
    assert ok.status == 201, ok.body


def test_the_player_paths_are_routes_of_the_app() -> None:
    app = create_app(Config())
    canonical = {route.resource.canonical for route in app.router.routes()
                 if route.resource is not None}
    assert set(PLAYER_PATHS) <= canonical
