"""ytproxy as a service: sd_notify, the watchdog, graceful shutdown, logging, the unit file.

The daemon runs as a real subprocess (``python -m ytproxy serve``) on a free
loopback port, with ``NOTIFY_SOCKET`` pointing at a real datagram socket the
test reads.  The fake googlevideo runs in the test's event loop, so the child
is started with asyncio and nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import LOOP
from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.ports import free_port
from tests.proxy_fixture import random_audio
from ytproxy.loops import resolve_event_loop
from ytproxy.systemd import Notifier, sd_notify, watchdog_interval

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "ytproxy.service"
POT_UNIT = REPO / "systemd" / "bgutil-pot-provider.service"
VID = "Sv5_-Sv5_-Q"
START_TIMEOUT = 30.0
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
# Under journald: a syslog priority prefix (journald strips it), then no timestamp.
JOURNAL_LINE = re.compile(r"^<(?P<priority>[2-7])>(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                          r"[\w.]+: ")
PRIORITIES = {"CRITICAL": "2", "ERROR": "3", "WARNING": "4", "INFO": "6", "DEBUG": "7"}


# --------------------------------------------------------------------- helpers


@contextlib.contextmanager
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose socket paths fit sun_path (108 bytes); tmp_path when it does."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="ytp") as name:
        yield Path(name)


class NotifySocket:
    """The manager's end of ``$NOTIFY_SOCKET``: every datagram, with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.datagrams: list[tuple[float, str]] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.datagrams.append((loop.time(), data.decode()))
            self._changed.set()

    def values(self, key: str) -> list[tuple[float, str]]:
        """``(arrival, value)`` of every ``KEY=value`` line sent so far."""
        found = []
        for at, text in self.datagrams:
            for line in text.split("\n"):
                name, _, value = line.partition("=")
                if name == key:
                    found.append((at, value))
        return found

    async def changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.sock.close()


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    port: int
    stderr_path: Path
    notify: NotifySocket
    config: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def wait_for(self, key: str, count: int = 1, within: float = START_TIMEOUT
                       ) -> list[tuple[float, str]]:
        """Wait until ``KEY=`` has been sent ``count`` times; fail early if the daemon dies."""
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            async with asyncio.timeout(within):
                while len(self.notify.values(key)) < count:
                    changed = asyncio.ensure_future(self.notify.changed())
                    await asyncio.wait({changed, exited}, return_when=asyncio.FIRST_COMPLETED)
                    changed.cancel()
                    if exited.done() and len(self.notify.values(key)) < count:
                        raise AssertionError(
                            f"daemon exited ({self.proc.returncode}) before {key}= "
                            f"x{count}:\n{self.stderr()}")
        except TimeoutError:
            raise AssertionError(f"no {key}= x{count} within {within} s; got "
                                 f"{self.notify.datagrams}\n{self.stderr()}") from None
        finally:
            exited.cancel()
        return self.notify.values(key)

    async def stop(self, within: float, sig: int = signal.SIGTERM) -> tuple[int, float]:
        """SIGTERM (or ``sig``); the exit code and how long the exit took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.proc.send_signal(sig)
        return await self.exited(started, within)

    async def exited(self, since: float, within: float) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                code = await self.proc.wait()
        except TimeoutError:
            raise AssertionError(f"daemon still running {within} s after SIGTERM:\n"
                                 f"{self.stderr()}") from None
        return code, loop.time() - since


StartDaemon = Callable[..., Awaitable[Daemon]]


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment minus anything a real service manager would have set for us."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("YTPROXY_") and k not in drop}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_CACHE_HOME"] = str(home / ".cache")  # the daemon's cache, this test's own
    env["YTPROXY_SERVER_EVENT_LOOP"] = LOOP  # the loop this test run is on
    env.update(extra)
    return env


def write_config(path: Path, port: int, store: Path, *, shutdown_timeout: float = 1.0,
                 googlevideo: FakeGooglevideo | None = None, server: str = "") -> Path:
    text = (f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
            f'shutdown_timeout = {shutdown_timeout}\nlog_level = "info"\n{server}'
            f'[store]\npath = "{store}"\n')
    if googlevideo is not None:
        text += (f'[resolver]\nsource_url_template = "{googlevideo.watch_url_template}"\n'
                 "timeout = 20.0\nmax_calls_per_minute = 6000\n"
                 f'[upstream]\nallowed_hosts = ["{googlevideo.host}"]\nchunk_size = 262144\n')
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    started: list[Daemon] = []
    with short_dir(tmp_path) as sockets:

        async def start(*, shutdown_timeout: float = 1.0,
                        googlevideo: FakeGooglevideo | None = None, server: str = "",
                        journal: bool = False, **env: str) -> Daemon:
            n = len(started)
            port = free_port()
            config = write_config(tmp_path / f"config{n}.toml", port,
                                  tmp_path / "data" / "tracks.db",
                                  shutdown_timeout=shutdown_timeout,
                                  googlevideo=googlevideo, server=server)
            notify = NotifySocket(sockets / f"notify{n}")
            notify.start()
            stderr_path = tmp_path / f"stderr{n}.log"
            with stderr_path.open("wb") as stderr:
                if journal:  # what systemd sets when it connects stderr to the journal
                    st = os.fstat(stderr.fileno())
                    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "ytproxy", "--config", str(config), "serve",
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=stderr, cwd=REPO,
                    env=child_env(tmp_path, NOTIFY_SOCKET=str(notify.path), **env),
                )
            daemon = Daemon(proc, port, stderr_path, notify, config)
            started.append(daemon)
            return daemon

        try:
            yield start
        finally:
            for daemon in started:
                if daemon.proc.returncode is None:
                    daemon.proc.kill()
                    await daemon.proc.wait()
                await daemon.notify.close()


async def refused(port: int, within: float = 3.0) -> None:
    """Poll until nothing accepts connections on ``port`` any more."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        await writer.wait_closed()
        if loop.time() > deadline:
            raise AssertionError(f"port {port} still accepts connections")
        await asyncio.sleep(0.02)


def assert_clean(stderr: str) -> None:
    """No traceback, and nothing at WARNING or above: a clean stop is not a problem."""
    assert "Traceback" not in stderr, stderr
    assert not re.search(r"(^|[ >])(WARNING|ERROR|CRITICAL) ", stderr, re.MULTILINE), stderr


# ------------------------------------------------------------ sd_notify itself


def test_sd_notify_without_a_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    assert Notifier.from_environment().enabled is False


def test_sd_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ytproxy-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STATUS=hello") is True
        assert manager.recv(4096) == b"STATUS=hello"


def test_sd_notify_survives_a_vanished_socket(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    with short_dir(tmp_path) as where:
        path = where / "gone"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
            manager.bind(str(path))
        path.unlink()
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("WATCHDOG=1") is False
        monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
        assert sd_notify("WATCHDOG=1") is False


async def test_notifier_ready_once_refreshes_status_and_goes_quiet_when_stopping(
    tmp_path: Path
) -> None:
    with short_dir(tmp_path) as where:
        manager = NotifySocket(where / "notifier")
        manager.start()
        calls = 0
        called = asyncio.Event()

        async def summary() -> str:
            nonlocal calls
            calls += 1
            called.set()
            return f"summary\n{calls - 1}"  # one line, always: newlines would split it

        notifier = Notifier(str(manager.path), watchdog=None, status_every=0.05)
        try:
            await notifier.start(summary)
            notifier.ready()
            notifier.ready()
            async with asyncio.timeout(5):
                while len(manager.values("STATUS")) < 3:
                    await manager.changed()
            assert [v for _, v in manager.values("READY")] == ["1"]
            assert [v for _, v in manager.values("STATUS")][:3] == [
                "summary 0", "summary 1", "summary 2"]
            notifier.stopping("stopping: done")
            async with asyncio.timeout(5):
                while not manager.values("STOPPING"):
                    await manager.changed()
            sent, seen = len(manager.datagrams), calls
            # Refreshes after STOPPING=1 would hide the stopping status.
            async with asyncio.timeout(5):
                while calls < seen + 2:
                    called.clear()
                    await called.wait()
            await notifier.stop()
            assert len(manager.datagrams) == sent
            assert manager.values("STATUS")[-1][1] == "stopping: done"
        finally:
            await notifier.stop()
            await manager.close()


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    (None, None, None),
    ("1000000", None, 0.5),
    ("30000000", "self", 15.0),
    ("1000000", "1", None),  # meant for another process (we inherited it)
    ("0", None, None),
    ("soon", None, None),
])
def test_watchdog_interval_is_half_the_period_for_this_process(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected


# --------------------------------------------------------- the daemon, for real


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_ready_once_serving_then_status_then_stopping_and_exit_0(
    start_daemon: StartDaemon, sig: int
) -> None:
    # A JOURNAL_STREAM inherited from elsewhere (not our stderr) changes nothing.
    daemon = await start_daemon(JOURNAL_STREAM="1:1")
    await daemon.wait_for("READY")
    # READY=1 means it serves: the port answers right now, no retrying.
    async with aiohttp.ClientSession() as session, \
            session.get(daemon.base_url + "/health") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    status = [value for _, value in daemon.notify.values("STATUS")]
    assert status[0] == f"serving on {daemon.base_url} — 0 streams, 0 tracks"

    code, took = await daemon.stop(within=10, sig=sig)
    assert code == 0
    assert took < 5
    assert daemon.notify.values("STOPPING") and daemon.notify.values("READY") == [
        (daemon.notify.values("READY")[0][0], "1")]
    stderr = daemon.stderr()
    assert_clean(stderr)
    lines = stderr.splitlines()
    assert lines and all(TIMESTAMP.match(line) for line in lines), stderr
    assert "listening on " + daemon.base_url in stderr
    # The loop the daemon runs on is named: the one this test run asked for.
    assert f"(event loop: {resolve_event_loop(LOOP)})" in stderr
    assert "shutdown: no streams left open" in stderr
    assert "aiohttp.access" not in stderr  # access log is off by default


async def test_watchdog_pings_every_half_period_from_the_loop(
    start_daemon: StartDaemon
) -> None:
    daemon = await start_daemon(WATCHDOG_USEC="1000000")  # 1 s: a ping every 0.5 s
    await daemon.wait_for("READY")
    seen = len(daemon.notify.values("WATCHDOG"))
    pings = await daemon.wait_for("WATCHDOG", count=seen + 5, within=6)
    times = [at for at, value in pings[seen:] if value == "1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Four gaps of 0.5 s; a loaded machine may stretch one, never shrink it much.
    assert 1.6 <= times[-1] - times[0] <= 3.0, gaps
    assert min(gaps) >= 0.3, gaps
    code, _ = await daemon.stop(within=10)
    assert code == 0


async def test_without_watchdog_usec_there_are_no_pings(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(WATCHDOG_USEC="1000000", WATCHDOG_PID="1")
    await daemon.wait_for("READY")
    code, _ = await daemon.stop(within=10)
    assert code == 0
    assert daemon.notify.values("WATCHDOG") == []


async def test_sigterm_mid_stream_gives_grace_then_closes_it_and_exits_0(
    start_daemon: StartDaemon, googlevideo: FakeGooglevideo
) -> None:
    data = random_audio(3_000_000, seed=7)
    googlevideo.add_track(VID, data, title="Long Song")
    googlevideo.throttle_bytes_per_sec = 300_000  # ten seconds of song: still playing
    grace = 1.0
    daemon = await start_daemon(googlevideo=googlevideo, shutdown_timeout=grace)
    await daemon.wait_for("READY")
    loop = asyncio.get_running_loop()
    received = bytearray()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        resp = await session.get(f"{daemon.base_url}/proxy/{VID}")
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(data)
        received += await resp.content.readexactly(100_000)

        daemon.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        await daemon.wait_for("STOPPING", within=5)
        await refused(daemon.port)  # no new listeners...
        at_stop = len(received)
        cut_short = False
        try:
            while chunk := await resp.content.read(65536):  # ...but this one plays on
                received += chunk
        except aiohttp.ClientPayloadError:
            cut_short = True
        ended = loop.time() - signalled
        resp.close()

    code, took = await daemon.exited(signalled, within=grace + 8)
    assert code == 0
    assert took < grace + 4, took
    # It played on through the grace period, then the body was cut (not ended
    # cleanly: a short body tells the client the song is incomplete).
    assert len(received) > at_stop
    assert grace * 0.8 <= ended < grace + 3, ended
    assert cut_short and len(received) < len(data)
    assert bytes(received) == data[:len(received)]
    stderr = daemon.stderr()
    assert_clean(stderr)
    assert "closed 1 stream(s) and 0 other request(s) still open after the 1 s grace" in stderr
    await googlevideo.wait_no_open_bodies(timeout=5)


async def test_a_stream_waiting_on_a_stalled_upstream_is_cut_at_the_deadline(
    start_daemon: StartDaemon, googlevideo: FakeGooglevideo
) -> None:
    # The relay is not writing (so a closed socket alone would not stop it) but
    # waiting on upstream, which would keep it for upstream.read_timeout (10 s).
    data = random_audio(1_000_000, seed=9)
    googlevideo.add_track(VID, data, title="Stalled Song")
    googlevideo.add_fault(VID, Fault("stall", at_byte=300_000, stall_seconds=60))
    grace = 1.0
    daemon = await start_daemon(googlevideo=googlevideo, shutdown_timeout=grace)
    await daemon.wait_for("READY")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(f"{daemon.base_url}/proxy/{VID}") as resp:
        assert resp.status == 200
        head = await resp.content.readexactly(200_000)
        await googlevideo.wait_for(lambda: googlevideo.counts["fault_stall"] == 1, timeout=10)
        daemon.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert head == data[:200_000]
    code, took = await daemon.exited(signalled, within=grace + 8)
    assert code == 0
    assert took < grace + 4, took
    stderr = daemon.stderr()
    assert_clean(stderr)
    assert "closed 1 stream(s)" in stderr


async def test_a_stream_that_ends_within_grace_is_played_out(
    start_daemon: StartDaemon, googlevideo: FakeGooglevideo
) -> None:
    data = random_audio(400_000, seed=8)
    googlevideo.add_track(VID, data, title="Short Song")
    googlevideo.throttle_bytes_per_sec = 400_000  # about a second in all
    grace = 10.0
    daemon = await start_daemon(googlevideo=googlevideo, shutdown_timeout=grace)
    await daemon.wait_for("READY")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(f"{daemon.base_url}/proxy/{VID}") as resp:
        assert resp.status == 200
        head = await resp.content.readexactly(50_000)
        daemon.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        body = head + await resp.read()
    assert body == data
    code, took = await daemon.exited(signalled, within=grace + 5)
    assert code == 0
    assert took < grace / 2, "exits as soon as the last stream ends, not after the grace"
    stderr = daemon.stderr()
    assert_clean(stderr)
    assert "waiting up to 10 s for 1 stream(s)" in stderr
    assert "shutdown: no streams left open" in stderr


async def test_under_journald_lines_carry_no_timestamp_and_access_log_is_opt_in(
    start_daemon: StartDaemon
) -> None:
    daemon = await start_daemon(journal=True, server="access_log = true\n")
    await daemon.wait_for("READY")
    async with aiohttp.ClientSession() as session, \
            session.get(daemon.base_url + "/health") as resp:
        assert resp.status == 200
    code, _ = await daemon.stop(within=10)
    assert code == 0
    stderr = daemon.stderr()
    lines = stderr.splitlines()
    matches = [JOURNAL_LINE.match(line) for line in lines]
    assert lines and all(matches), stderr
    assert all(PRIORITIES[m["level"]] == m["priority"] for m in matches if m), stderr
    assert any(line.startswith("<6>INFO aiohttp.access: ") and "GET /health" in line
               for line in lines), stderr


# ------------------------------------------------------------------- unit file


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_is_a_notify_service_with_a_watchdog_and_user_unit_hardening() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"] and s["WatchdogSec"] == ["30"]
    assert s["ExecStart"] == ["%h/.local/bin/ytproxy serve"]
    # Room for the default 5 s server.shutdown_timeout.
    assert int(s["TimeoutStopSec"][0]) > 5
    assert "AF_UNIX" in s["RestrictAddressFamilies"][0].split()  # sd_notify needs it
    assert "MemoryDenyWriteExecute" not in s  # would break yt-dlp's JavaScript runtime
    # Needs a mount namespace, which a user unit does not get without PrivateUsers=.
    assert not {"ProtectSystem", "ProtectHome", "PrivateTmp"} & set(s)


# ExecStart must exist for verify to pass: the installed program, or this Python.
@pytest.mark.parametrize(("unit", "program"), [(UNIT, "ytproxy"), (POT_UNIT, "deno")],
                         ids=["ytproxy", "pot-provider"])
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, unit: Path, program: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found (Debian package `systemd`)")
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    target = shutil.which(program) or sys.executable
    (home / ".local" / "bin" / program).symlink_to(target)
    env = child_env(tmp_path, HOME=str(home), XDG_RUNTIME_DIR=str(runtime),
                    SYSTEMD_LOG_LEVEL="notice")
    result = subprocess.run([analyze, "--user", "verify", str(unit)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys too, with a warning: any output is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_the_pot_provider_unit_serves_on_loopback_before_ytproxy_and_is_hardened() -> None:
    s = unit_settings(POT_UNIT)
    assert s["Before"] == ["ytproxy.service"] and s["Restart"] == ["on-failure"]
    (start,) = s["ExecStart"]
    assert start.startswith("%h/.local/bin/deno run ") and "--port 4416" in start
    text = POT_UNIT.read_text(encoding="utf-8")
    # The container alternative publishes on loopback only (the server has no auth).
    assert "-p 127.0.0.1:4416:4416" in text and "-p 4416:4416" not in text
    assert s["NoNewPrivileges"] == ["yes"] and s["SystemCallFilter"] == ["@system-service"]
    assert "MemoryDenyWriteExecute" not in s  # the JavaScript runtime's JIT
    assert 'pot_provider_url = "http://127.0.0.1:4416"' in text
