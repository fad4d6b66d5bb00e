"""``ytproxy doctor`` against loopback servers: healthy, refusing, silent, unknown
names (``.invalid``, which never resolves), a broken config, a real daemon, a
fake MPD.  Nothing here leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.forward_proxy import ForwardProxy
from tests.fakes.local_servers import (
    BlackHole,
    FakeMpd,
    free_port,
    http_server,
    running_daemon,
    write_toml,
)
from tests.test_cli import REPO, cli_env, run_ytproxy
from tests.test_store_damage import damage, make_store, sha
from ytproxy.cli.doctor import (
    Check,
    _check_config,
    _check_cookies,
    _check_daemon,
    _check_js_runtime,
    _check_mpd,
    _check_ytdlp,
    _probe_store,
    check_endpoint,
    format_checks,
    run_checks,
    upstream_targets,
)
from ytproxy.cli.reachability import Target, proxy_for
from ytproxy.config import Config, ResolverConfig, load_config
from ytproxy.follower import queue
from ytproxy.http.app import RESOLVER, STORE
from ytproxy.library.store import SCHEMA_VERSION

VID = "dOcToR_ok_1"


def by_name(checks: list[Check]) -> dict[str, Check]:
    """The first check of each name (upstream may have several)."""
    out: dict[str, Check] = {}
    for c in checks:
        out.setdefault(c.name, c)
    return out


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def mpd() -> AsyncIterator[FakeMpd]:
    server = FakeMpd()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    server = BlackHole()
    await server.start()
    yield server
    await server.close()


def healthy_config(tmp_path: Path, source_port: int, mpd_port: int, **extra: Any) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "server": {"port": free_port()},
        "store": {"path": str(tmp_path / "data" / "tracks.db")},
        "resolver": {"source_url_template": f"http://127.0.0.1:{source_port}/watch?v={{id}}"},
        # A wildcard with no stand-in host: reported as skipped, nothing sent.
        "upstream": {"allowed_hosts": ["*.example.org"]},
        # No look-ahead: the daemon would be a second client of the fake MPD.
        "mpd": {"host": "127.0.0.1", "port": mpd_port, "lookahead": 0},
    }
    for name, table in extra.items():
        sections.setdefault(name, {}).update(table)
    return write_toml(tmp_path / "config.toml", sections)


async def test_a_healthy_setup_passes_and_the_store_is_left_as_it_was(
    tmp_path: Path, mpd: FakeMpd, no_env_proxy: None
) -> None:
    async with http_server() as source_port:
        config_file = healthy_config(tmp_path, source_port, mpd.port)
        async with running_daemon(config_file) as daemon:
            store = daemon.app[STORE]
            await store.upsert_track(VID, "https://example.org/x", title="Kept")
            checks = await run_checks(str(config_file), timeout=2.0)
            assert [t.id for t in await store.list_tracks()] == [VID]

    named = by_name(checks)
    assert named["config"].level == "ok" and str(config_file) in named["config"].detail
    assert named["store"].level == "ok", named["store"]
    assert "1 tracks, writable" in named["store"].detail
    assert named["source"].level == "ok", named["source"]
    assert f"127.0.0.1:{source_port}" in named["source"].detail
    assert "dns" in named["source"].detail and "tcp" in named["source"].detail
    assert "tls" not in named["source"].detail  # http: no TLS step
    assert named["upstream"].level == "skip" and "*.example.org" in named["upstream"].detail
    assert named["daemon"].level == "ok" and "healthy" in named["daemon"].detail
    assert named["mpd"].level == "ok" and named["mpd"].detail == (
        f"MPD 0.23.5 at 127.0.0.1:{mpd.port}")
    assert mpd.connections == 1
    for name in ("yt-dlp", "yt-dlp-ejs", "js runtime"):
        assert named[name].level in ("ok", "warn")
    # The probe's table was rolled back; the schema was not touched.
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "tracks.db")) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "ytproxy_doctor_probe" not in tables
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT title FROM tracks").fetchall() == [("Kept",)]


async def test_refused_unknown_and_absent_are_failures_reported_quickly(
    tmp_path: Path, no_env_proxy: None
) -> None:
    config_file = write_toml(tmp_path / "config.toml", {
        "server": {"port": free_port()},
        "store": {"path": str(tmp_path / "tracks.db")},
        "resolver": {"source_url_template": f"http://127.0.0.1:{free_port()}/w?v={{id}}"},
        "upstream": {"allowed_hosts": ["media.example.invalid"]},
        "mpd": {"host": "127.0.0.1", "port": free_port()},
    })
    started = time.monotonic()
    checks = await run_checks(str(config_file), timeout=5.0)
    # Refused and unknown are answered at once: nothing waits out a timeout.
    assert time.monotonic() - started < 3.0
    named = by_name(checks)
    assert named["source"].level == "fail" and "connection refused" in named["source"].detail
    assert named["upstream"].level == "fail"
    assert "media.example.invalid" in named["upstream"].detail
    assert "no such host name" in named["upstream"].detail
    assert named["daemon"].level == "fail" and "nothing answers" in named["daemon"].detail
    assert "ytproxy serve" in named["daemon"].fix
    assert named["mpd"].level == "fail" and "nothing listens" in named["mpd"].detail
    # The store does not exist yet: fine, and doctor does not create it.
    assert named["store"].level == "ok" and "does not exist yet" in named["store"].detail
    assert not (tmp_path / "tracks.db").exists()
    text = format_checks(checks)
    assert "fail  source" in text and "→ check the network connection" in text
    assert "4 failed" in text


async def test_silent_servers_time_out_instead_of_hanging(
    tmp_path: Path, black_hole: BlackHole, no_env_proxy: None
) -> None:
    config_file = write_toml(tmp_path / "config.toml", {
        "server": {"port": black_hole.port},
        "store": {"path": str(tmp_path / "tracks.db")},
        "resolver": {"source_url_template":
                     f"https://127.0.0.1:{black_hole.port}/watch?v={{id}}"},
        "upstream": {"allowed_hosts": ["*.example.org"]},
        "mpd": {"host": "127.0.0.1", "port": black_hole.port},
    })
    started = time.monotonic()
    checks = await run_checks(str(config_file), timeout=0.5)
    assert time.monotonic() - started < 2.5
    named = by_name(checks)
    assert named["source"].level == "fail"
    assert "TLS handshake with 127.0.0.1 took over 0.5 s" in named["source"].detail
    assert named["daemon"].level == "fail" and "no answer in time" in named["daemon"].detail
    assert named["mpd"].level == "fail" and "within 0.5 s" in named["mpd"].detail


async def test_broken_config_fails_with_every_error_and_exit_1(tmp_path: Path) -> None:
    config_file = tmp_path / "broken.toml"
    config_file.write_text('[server]\nport = 99999\n[upstream]\nchunk_sise = 1\n')
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config_file), "doctor")
    assert result.rc == 1, result
    assert "fail  config" in result.out
    assert "server.port must be between 1 and 65535" in result.out
    assert "upstream.chunk_sise" in result.out and "did you mean 'chunk_size'" in result.out
    assert "skip  others" in result.out  # nothing that needs the config ran
    assert "yt-dlp" in result.out  # ...but what does not need it did


async def test_cli_exits_0_when_nothing_fails(
    tmp_path: Path, mpd: FakeMpd, no_env_proxy: None
) -> None:
    async with http_server() as source_port:
        config_file = healthy_config(tmp_path, source_port, mpd.port)
        async with running_daemon(config_file):
            result = await run_ytproxy(cli_env(tmp_path), "--config", str(config_file),
                                       "doctor", "--timeout", "2")
    assert result.rc == 0, result.out + result.err
    assert "ok    daemon" in result.out and "ok    mpd" in result.out
    assert not [line for line in result.out.splitlines() if line.startswith("fail")]


async def test_daemon_line_names_the_player_client_in_use(
    tmp_path: Path, no_env_proxy: None
) -> None:
    config_file = write_toml(tmp_path / "config.toml", {
        "server": {"port": free_port()}, "store": {"path": str(tmp_path / "tracks.db")}})
    config = load_config(str(config_file))
    async with running_daemon(config_file) as daemon:
        fresh = await _check_daemon(config, 2.0)
        # What the resolver sets from the c= of the last URL it resolved.
        daemon.app[RESOLVER].last_client = "VISIONOS"
        using = await _check_daemon(config, 2.0)
    assert fresh.level == "ok" and "player client" not in fresh.detail
    assert using.level == "ok" and using.detail.endswith("; player client in use: VISIONOS")


async def test_the_example_config_is_valid(tmp_path: Path) -> None:
    example = REPO / "config.example.toml"
    config, check = _check_config(str(example))
    assert check.level == "ok" and config is not None, check
    assert config.resolver.js_runtime == "auto" and config.resolver.cookies_file == ""
    assert config.resolver.ytdlp_options == {}
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(example), "check-config")
    assert result.rc == 0, result.err
    assert "max_available_wait" in result.out and "cookies_from_browser" in result.out


async def test_mpd_on_a_unix_socket_and_a_greeting_that_is_not_mpd(tmp_path: Path) -> None:
    greeting = b"OK MPD 0.23.12\n"

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        await reader.readline()
        writer.close()

    path = tmp_path / "mpd.sock"
    server = await asyncio.start_unix_server(greet, str(path))
    try:
        config = Config().replace("mpd", host=str(path))
        check = await _check_mpd(config, 1.0)
        assert check.level == "ok" and check.detail == f"MPD 0.23.12 at {path}"
        greeting = b"SSH-2.0-OpenSSH_9.2\r\n"
        check = await _check_mpd(config, 1.0)
        assert check.level == "fail" and "not like MPD" in check.detail
    finally:
        server.close()


def test_store_problems(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check = _probe_store(blocker / "sub" / "tracks.db", 1.0)
    assert check.level == "fail" and "cannot create the directory" in check.detail

    foreign = tmp_path / "notes.db"
    foreign.write_text("not a database, someone's notes\n")
    check = _probe_store(foreign, 1.0)
    assert check.level == "fail" and "not an SQLite database" in check.detail
    assert foreign.read_text() == "not a database, someone's notes\n"

    newer = tmp_path / "newer.db"
    with contextlib.closing(sqlite3.connect(newer)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    check = _probe_store(newer, 1.0)
    assert check.level == "fail" and check.fix == "upgrade ytproxy"


async def test_a_damaged_store_fails_the_store_check_and_is_not_written(
    tmp_path: Path
) -> None:
    db = tmp_path / "tracks.db"
    await make_store(db)
    damage(db, "random")
    before = sha(db)
    check = _probe_store(db, 1.0)
    assert check.level == "fail" and "is damaged" in check.detail, check
    assert ".recover" in check.fix and "move it aside" in check.fix, check
    assert sha(db) == before


def test_ytdlp_age() -> None:
    import yt_dlp.version

    released = dt.date(*map(int, yt_dlp.version.__version__.split(".")[:3]))
    fresh = _check_ytdlp(released + dt.timedelta(days=10))
    assert fresh.level == "ok" and "(10 days old)" in fresh.detail
    stale = _check_ytdlp(released + dt.timedelta(days=200))
    assert stale.level == "warn" and "200 days old" in stale.detail
    assert "pip install -U 'yt-dlp[default,deno]'" in stale.fix
    assert "systemctl --user restart ytproxy" in stale.fix
    assert _check_ytdlp(released + dt.timedelta(days=59)).level == "ok"
    assert _check_ytdlp(released + dt.timedelta(days=61)).level == "warn"


def first_version_line(executable: str) -> str:
    return subprocess.run([executable, "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def test_js_runtime_the_install_brought_is_ok_with_its_version_and_path() -> None:
    deno = Path(sys.executable).parent / "deno"  # yt-dlp's deno extra put it here
    version = re.match(r"deno (\d+\.\d+\.\d+)", first_version_line(str(deno)))
    assert version
    check = _check_js_runtime("auto")
    assert check.level == "ok", check
    assert check.detail == f"deno {version.group(1)} at {deno} (given to yt-dlp)"


def test_js_runtime_named_in_the_config_is_the_one_reported() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH to name")
    check = _check_js_runtime("node")
    assert check.level == "ok", check
    said = first_version_line(node)  # v22.1.0: node does not say its name
    assert check.detail == f"node {said} at {node} (given to yt-dlp)"


def test_js_runtime_missing_fails_and_says_how_to_get_one() -> None:
    check = _check_js_runtime("auto", find=lambda _: None)
    assert check.level == "fail" and check.detail.startswith("none found")
    assert "pip install --force-reinstall 'yt-dlp[default,deno]'" in check.fix
    assert "deno, node, bun or quickjs" in check.fix and "[resolver] js_runtime" in check.fix
    # Shown as it is printed: a failure with its fix under it.
    text = format_checks([check])
    assert "fail  js runtime  none found" in text and "→ reinstall ytproxy" in text


def test_js_runtime_named_but_not_found_fails_naming_it(tmp_path: Path) -> None:
    absent = _check_js_runtime("/opt/nowhere/bun")
    assert absent.level == "fail"
    assert "resolver.js_runtime = '/opt/nowhere/bun' is not found" in absent.detail
    assert 'set it to "auto"' in absent.fix
    not_executable = tmp_path / "deno"
    not_executable.write_text("#!/bin/sh\necho deno 9.9.9\n")
    not_executable.chmod(0o644)
    check = _check_js_runtime(str(not_executable))
    assert check.level == "fail" and repr(str(not_executable)) in check.detail


async def test_run_checks_asks_for_the_runtime_the_config_names(
    tmp_path: Path, no_env_proxy: None
) -> None:
    config_file = write_toml(tmp_path / "config.toml", {
        "server": {"port": free_port()},
        "store": {"path": str(tmp_path / "tracks.db")},
        "resolver": {"source_url_template": f"http://127.0.0.1:{free_port()}/w?v={{id}}",
                     "js_runtime": str(tmp_path / "gone" / "node")},
        "upstream": {"allowed_hosts": ["*.example.org"]},
    })
    named = by_name(await run_checks(str(config_file), timeout=1.0))
    assert named["js runtime"].level == "fail"
    assert str(tmp_path / "gone" / "node") in named["js runtime"].detail
    assert named["cookies"].level == "ok" and "none given" in named["cookies"].detail


def test_cookies_check(tmp_path: Path) -> None:
    none = _check_cookies(ResolverConfig())
    assert none.level == "ok" and "Sign in to confirm" in none.detail
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n\n"
                       ".youtube.com\tTRUE\t/\tTRUE\t0\tSID\tsecret-1\n"
                       "#HttpOnly_.youtube.com\tTRUE\t/\tTRUE\t0\tHSID\tsecret-2\n")
    cookies.chmod(0o644)
    loose = _check_cookies(ResolverConfig(cookies_file=str(cookies)))
    assert loose.level == "warn" and "2 cookies" in loose.detail
    assert loose.fix == f"chmod 600 {cookies}"
    cookies.chmod(0o600)
    tight = _check_cookies(ResolverConfig(cookies_file=str(cookies),
                                          cookies_from_browser="firefox"))
    assert tight.level == "ok" and "2 cookies, and from firefox" in tight.detail
    for check in (loose, tight):
        assert "secret" not in check.detail + check.fix
    missing = _check_cookies(ResolverConfig(cookies_file=str(tmp_path / "gone.txt")))
    assert missing.level == "fail" and "gone.txt" in missing.detail
    browser = _check_cookies(ResolverConfig(cookies_from_browser="chrome:Work"))
    assert browser.level == "ok" and "chrome:Work" in browser.detail


def test_upstream_hosts_that_can_be_named() -> None:
    config = Config()  # *.googlevideo.com and *.youtube.com; source www.youtube.com
    source = Target("source", "www.youtube.com", 443, True)
    targets = upstream_targets(config, source)
    first, second = targets
    assert isinstance(first, Target) and first.host == "redirector.googlevideo.com"
    assert "stands for *.googlevideo.com" in first.note
    assert isinstance(second, Check) and second.level == "skip"
    assert "www.youtube.com is checked above" in second.detail


def test_proxy_choice(monkeypatch: pytest.MonkeyPatch, no_env_proxy: None) -> None:
    target = Target("upstream", "rr1.googlevideo.com", 443, True)
    assert proxy_for(target, "") is None
    monkeypatch.setenv("https_proxy", "http://proxy.example.invalid:3128")
    assert proxy_for(target, "") == "http://proxy.example.invalid:3128"
    assert proxy_for(target, "http://other.example.invalid:8080") == (
        "http://other.example.invalid:8080")
    monkeypatch.setenv("no_proxy", ".googlevideo.com")
    assert proxy_for(target, "") is None


# --------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    yield cert, key


@pytest.fixture
async def tls_port(certificate: tuple[Path, Path]) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(idle, "127.0.0.1", 0, ssl=context)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def test_tls_is_checked_directly_and_through_a_connect_proxy(
    certificate: tuple[Path, Path], tls_port: int
) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    target = Target("upstream", "127.0.0.1", tls_port, True)

    direct = await check_endpoint(target, seconds=2.0, ssl_context=trusting)
    assert direct.level == "ok", direct
    assert "tls" in direct.detail and "TLSv1." in direct.detail

    untrusted = await check_endpoint(target, seconds=2.0)  # the system's CAs only
    assert untrusted.level == "fail" and "certificate is not trusted" in untrusted.detail

    forward = ForwardProxy()
    await forward.start()
    try:
        tunnelled = await check_endpoint(target, seconds=2.0, ssl_context=trusting,
                                         proxy=forward.connect_url)
    finally:
        await forward.close()
    assert tunnelled.level == "ok", tunnelled
    assert "tunnel HTTP 200" in tunnelled.detail and "TLSv1." in tunnelled.detail
    assert [r.url for r in forward.records] == [f"127.0.0.1:{tls_port}"]


async def test_mpd_with_no_host_is_looked_for_where_mpc_looks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="xdg", dir="/tmp"))  # a short socket path
    try:
        (runtime / "mpd").mkdir()
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        monkeypatch.delenv("MPD_HOST", raising=False)
        monkeypatch.setenv("MPD_PORT", str(free_port()))  # localhost: nothing there
        # Nor at the system socket (a machine's own MPD may listen at /run/mpd/socket).
        monkeypatch.setattr(queue, "SYSTEM_SOCKET", str(runtime / "system.socket"))
        config = Config()
        missing = await _check_mpd(config, 2.0)
        assert missing.level == "warn", missing
        assert f"{runtime}/mpd/socket" in missing.detail and "localhost:" in missing.detail
        assert "[mpd] host" in missing.fix

        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"OK MPD 0.23.5\n")
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_unix_server(greet, path=str(runtime / "mpd" / "socket"))
        try:
            found = await _check_mpd(config, 2.0)
        finally:
            server.close()
            await server.wait_closed()
        assert found.level == "ok", found
        assert found.detail == (f"MPD 0.23.5 at {runtime}/mpd/socket "
                                "(found where mpc looks; no [mpd] host)")
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
