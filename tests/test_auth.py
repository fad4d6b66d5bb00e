"""Bind and token policy, and secrets kept out of what ytproxy shows.

``serve`` runs as a real subprocess where its refusal or warning is the claim;
the token rules are checked against the real app on a loopback port.  Nothing
here sends a byte anywhere but 127.0.0.1 (one test binds 0.0.0.0 for a moment
and talks to it over loopback only).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.local_servers import free_port, write_toml
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from tests.test_cli import REPO, cli_env, run_ytproxy
from tests.test_service import NotifySocket, child_env, short_dir
from ytproxy.config import Config, ServerConfig
from ytproxy.errors import ResolverFailed, UpstreamFailed
from ytproxy.http.app import FETCHER, STORE, error_response
from ytproxy.http.auth import bind_refusal, bind_warning, is_loopback_host
from ytproxy.redact import RedactingFilter, redact_urls

TOKEN = "tok-3Xq9VbA7mZ2pLkW8rT5yN1cD"  # 28 characters of the bearer alphabet
VID = "AuthTest_01"
SIGNED = ("https://rr3---sn-abc.googlevideo.com/videoplayback?expire=1999999999&id=o-AB"
          "&ip=203.0.113.9&sig=SECRETSIGNATURE&lsig=SECRETLSIG")


# ------------------------------------------------------------------ bind policy


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LocalHost.", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.10", False),
    ("10.0.0.1", False), ("fe80::1", False), ("myhost.lan", False),
    ("localhost.example.com", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_bind_policy_combinations() -> None:
    assert bind_refusal(ServerConfig()) is None and bind_warning(ServerConfig()) is None
    wild = ServerConfig(host="0.0.0.0")
    assert bind_refusal(wild) is not None
    assert bind_refusal(ServerConfig(host="0.0.0.0", token=TOKEN)) is None
    assert bind_warning(ServerConfig(host="0.0.0.0", token=TOKEN)) is None
    allowed = ServerConfig(host="0.0.0.0", allow_unauthenticated=True)
    assert bind_refusal(allowed) is None
    warning = bind_warning(allowed)
    assert warning is not None and "WITHOUT AUTHENTICATION" in warning


def serve_config(tmp_path: Path, port: int, **server: Any) -> Path:
    return write_toml(tmp_path / "serve.toml", {
        "server": {"port": port, "shutdown_timeout": 0.5, **server},
        "store": {"path": str(tmp_path / "data" / "tracks.db")},
    })


async def nothing_listens(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.mark.parametrize(("server", "args", "env", "shown"), [
    ({"host": "0.0.0.0"}, (), {}, "0.0.0.0"),
    ({}, ("--host", "::"), {}, "::"),
    ({}, (), {"YTPROXY_SERVER_HOST": "192.168.1.10"}, "192.168.1.10"),
    ({"host": "0.0.0.0", "allow_unauthenticated": False}, (), {}, "0.0.0.0"),
])
async def test_serve_refuses_a_non_loopback_host_without_a_token(
    tmp_path: Path, server: dict[str, Any], args: tuple[str, ...], env: dict[str, str],
    shown: str,
) -> None:
    port = free_port()
    config = serve_config(tmp_path, port, **server)
    result = await run_ytproxy({**cli_env(tmp_path), **env}, "--config", str(config),
                               "serve", *args)
    assert result.rc == 1, result.err
    assert f"refusing to listen on {shown}:{port} without a token" in result.err
    assert "[server] token" in result.err and "allow_unauthenticated = true" in result.err
    assert "Traceback" not in result.err
    assert await nothing_listens(port)
    assert not (tmp_path / "data").exists()  # refused before the store was touched


async def test_serve_with_allow_unauthenticated_starts_with_a_loud_warning(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = serve_config(tmp_path, port, host="0.0.0.0", allow_unauthenticated=True)
    stderr_path = tmp_path / "stderr.log"
    with short_dir(tmp_path) as sockets:
        notify = NotifySocket(sockets / "notify")
        notify.start()
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ytproxy", "--config", str(config), "serve",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr, cwd=REPO,
                env=child_env(tmp_path, NOTIFY_SOCKET=str(notify.path)),
            )
        try:
            async with asyncio.timeout(30):
                while not notify.values("READY") and proc.returncode is None:
                    waiter = asyncio.ensure_future(notify.changed())
                    exited = asyncio.ensure_future(proc.wait())
                    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    exited.cancel()
            log = stderr_path.read_text()
            assert notify.values("READY"), log
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/health") as resp:
                assert resp.status == 200
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await notify.close()
    log = stderr_path.read_text()
    warnings = [line for line in log.splitlines() if "WITHOUT AUTHENTICATION" in line]
    assert len(warnings) == 1, log
    assert " WARNING " in warnings[0] and f"0.0.0.0:{port}" in warnings[0]
    assert "set [server] token" in warnings[0]


# ------------------------------------------------------------------ the token


@pytest.fixture
async def guarded(make_proxy: ProxyFactory, googlevideo: FakeGooglevideo) -> RunningProxy:
    googlevideo.add_track(VID, random_audio(40_000), title="Guarded")
    return await make_proxy(server={"token": TOKEN})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def answer(proxy: RunningProxy, method: str, path: str, **kwargs: Any
                 ) -> tuple[int, dict[str, str], str]:
    async with proxy.session.request(method, proxy.url(path), **kwargs) as resp:
        # The fixture's session does not decompress (/metrics may come deflated).
        return resp.status, dict(resp.headers), (await resp.read()).decode("utf-8", "replace")


@pytest.mark.parametrize("headers", [
    {},
    bearer("wrong-token-but-well-formed"),
    bearer(TOKEN[:-1]),
    bearer(TOKEN + "x"),
    {"Authorization": TOKEN},  # no scheme
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer \u00e9t\u00e9-non-ascii"},
])
async def test_writes_without_the_right_token_get_401(
    guarded: RunningProxy, googlevideo: FakeGooglevideo, headers: dict[str, str]
) -> None:
    status, got, text = await answer(guarded, "POST", "/tracks", json={"id": VID},
                                     headers=headers)
    assert status == 401, text
    assert got["WWW-Authenticate"].startswith('Bearer realm="ytproxy"')
    assert got["Content-Type"].startswith("application/json")
    assert '"error": "unauthorized"' in text and TOKEN not in text
    assert googlevideo.requests == []  # nothing was resolved
    await guarded.app[STORE].upsert_track(VID, googlevideo.watch_url(VID))
    status, got, text = await answer(guarded, "DELETE", f"/tracks/{VID}", headers=headers)
    assert status == 401 and "WWW-Authenticate" in got
    assert await guarded.app[STORE].get(VID) is not None  # still there


async def test_a_wrong_token_is_told_apart_from_a_missing_one(guarded: RunningProxy) -> None:
    _, missing, _ = await answer(guarded, "POST", "/tracks", json={"id": VID})
    _, wrong, _ = await answer(guarded, "POST", "/tracks", json={"id": VID},
                               headers=bearer("x" * 30))
    assert missing["WWW-Authenticate"] == 'Bearer realm="ytproxy"'
    assert wrong["WWW-Authenticate"] == 'Bearer realm="ytproxy", error="invalid_token"'


async def test_writes_with_the_token_succeed(guarded: RunningProxy) -> None:
    status, _, text = await answer(guarded, "POST", "/tracks", json={"id": VID},
                                   headers=bearer(TOKEN))
    assert status == 201, text
    status, _, text = await answer(guarded, "DELETE", f"/tracks/{VID}",
                                   headers={"authorization": f"bearer  {TOKEN} "})
    assert status == 200 and VID in text


async def test_proxy_and_reads_stay_open_with_a_token(guarded: RunningProxy) -> None:
    # MPD cannot send a token: /proxy must work without one (and adds on first play).
    async with guarded.session.get(guarded.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == 40_000
    async with guarded.session.head(guarded.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    for path in ("/status", "/health", "/metrics", "/", "/tracks", f"/tracks/{VID}",
                 "/playlist.m3u", "/playlists"):
        status, _, text = await answer(guarded, "GET", path)
        assert status == 200, (path, text)


async def test_unknown_routes_and_methods_keep_their_404_and_405(
    guarded: RunningProxy,
) -> None:
    status, _, _ = await answer(guarded, "POST", "/nowhere")
    assert status == 404
    status, got, _ = await answer(guarded, "PUT", "/tracks")
    assert status == 405 and "POST" in got.get("Allow", "")


async def test_without_a_token_writes_are_open_on_loopback(
    make_proxy: ProxyFactory, googlevideo: FakeGooglevideo
) -> None:
    googlevideo.add_track(VID, random_audio(10_000), title="Open")
    proxy = await make_proxy()
    status, _, text = await answer(proxy, "POST", "/tracks", json={"id": VID})
    assert status == 201, text


# ------------------------------------------------------------ the token is a secret


async def test_token_is_masked_in_status_and_the_page(guarded: RunningProxy) -> None:
    status, _, text = await answer(guarded, "GET", "/status")
    assert status == 200 and TOKEN not in text
    async with guarded.session.get(guarded.url("/status")) as resp:
        shown = await resp.json()
    assert shown["config"]["server"]["token"] == "***"
    _, _, page = await answer(guarded, "GET", "/")
    assert TOKEN not in page


async def test_token_is_masked_by_check_config(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "c.toml", {
        "server": {"token": TOKEN},
        "upstream": {"proxy": "http://me:hunter2secret@127.0.0.1:3128"},
    })
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "check-config")
    assert result.rc == 0, result.err
    assert 'token = "***"' in result.out
    assert 'proxy = "http://me:***@127.0.0.1:3128"' in result.out
    assert TOKEN not in result.out + result.err and "hunter2secret" not in result.out


@pytest.mark.parametrize("token", ["tooShortTok", "has spaces in it but long", "tök" * 8])
async def test_a_bad_token_is_reported_without_echoing_it(tmp_path: Path, token: str) -> None:
    config = write_toml(tmp_path / "c.toml", {"server": {"token": token}})
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "check-config")
    assert result.rc == 1
    assert "server.token must be at least 16 characters" in result.err
    assert token not in result.err + result.out


async def test_a_token_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\ntoken = 12345678901234567890\n", encoding="utf-8")
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "check-config")
    assert result.rc == 1 and "server.token must be a string" in result.err
    assert "12345678901234567890" not in result.err


@pytest.fixture
async def recording_daemon() -> AsyncIterator[tuple[int, list[str | None]]]:
    """A stand-in daemon that answers /status and /health and records Authorization."""
    seen: list[str | None] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"version": "9.9", "uptime_seconds": 1, "streams": []})

    async def health(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1]), seen
    finally:
        await runner.cleanup()


async def test_status_and_doctor_send_the_configured_token(
    tmp_path: Path, recording_daemon: tuple[int, list[str | None]]
) -> None:
    port, seen = recording_daemon
    config = write_toml(tmp_path / "c.toml", {"server": {"port": port, "token": TOKEN}})
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "status", "--json")
    assert result.rc == 0, result.err
    assert seen == [f"Bearer {TOKEN}"] * 2
    plain = write_toml(tmp_path / "p.toml", {"server": {"port": port}})
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(plain), "status", "--json")
    assert result.rc == 0 and seen[2:] == [None, None]


# ---------------------------------------------------- signed URLs in errors and logs


def test_error_bodies_redact_urls_in_messages() -> None:
    response = error_response(UpstreamFailed(f"upstream failed for {SIGNED}: reset"))
    assert response.text is not None
    assert "SECRETSIGNATURE" not in response.text and "203.0.113.9" not in response.text
    assert "rr3---sn-abc.googlevideo.com/videoplayback?expire=***" in response.text
    page = error_response(ResolverFailed(
        "yt-dlp does not know how to read https://www.youtube.com/watch?v=dQw4w9WgXcQ&si=abc"))
    assert page.text is not None and "watch?v=dQw4w9WgXcQ&si=***" in page.text


async def test_status_and_tracks_never_show_a_signed_query(guarded: RunningProxy) -> None:
    # Breakers keep other code's error text; a track keeps the resolver's last error.
    guarded.app[FETCHER].record_failure("rr3---sn-abc.googlevideo.com",
                                        OSError(f"lost {SIGNED}"))
    store = guarded.app[STORE]
    await store.upsert_track(VID, f"https://www.youtube.com/watch?v={VID}")
    await store.record_error(VID, f"the source refused {SIGNED}")
    for path in ("/status", "/", "/tracks", f"/tracks/{VID}"):
        status, _, text = await answer(guarded, "GET", path)
        assert status == 200
        assert "SECRETSIGNATURE" not in text and "SECRETLSIG" not in text, path
    async with guarded.session.get(guarded.url("/status")) as resp:
        hosts = (await resp.json())["upstream"]["hosts"]
    assert "sig=***" in hosts["rr3---sn-abc.googlevideo.com"]["last_error"]


def test_the_log_filter_redacts_every_line(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("ytproxy.x", logging.DEBUG, __file__, 1,
                               "yt-dlp: [debug] Invoking downloader on %r", (SIGNED,), None)
    assert RedactingFilter().filter(record)
    message = record.getMessage()
    assert "SECRETSIGNATURE" not in message and "sig=***" in message
    assert redact_urls("no url here") == "no url here"


def test_redaction_keeps_page_ids_and_sentence_punctuation() -> None:
    text = redact_urls(f"see https://www.youtube.com/playlist?list=PL123&si=x. Or ({SIGNED}).")
    assert "playlist?list=PL123&si=***. Or (" in text
    assert text.endswith("&sig=***&lsig=***).")
    assert redact_urls("http://u:pw@h:3128/x") == "http://u:***@h:3128/x"


def test_config_default_binds_loopback() -> None:
    assert Config().server.host == "127.0.0.1"
    assert Config().server.token == "" and Config().server.allow_unauthenticated is False
    assert Config().resolver.allow_private_sources is False
