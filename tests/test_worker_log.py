"""What yt-dlp's worker processes write on stderr reaches the log redacted.

yt-dlp writes some warnings straight to stderr, past its ``logger`` option: a
cookies file line it cannot parse is quoted whole, value and all.  The real
yt-dlp, in the real worker, with a cookies file holding such a line, under a
``serve`` daemon and under ``ytproxy add``: the warning's gist is in the log,
the cookie's value never."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import random_audio
from tests.test_service import REPO, StartDaemon, child_env, start_daemon, write_config
from ytproxy.redact import MASK, RedactingFilter, redact_secrets
from ytproxy.resolve.ytdlp_process import YtdlpProcesses

__all__ = ["start_daemon"]  # the fixture, used here

VID = "CookieLog01"
GIST = "skipping cookie file entry"


def cookies_file(tmp_path: Path, values: list[str] | None = None) -> tuple[Path, list[str]]:
    """A cookies file with a line yt-dlp skips (a letter O in its expiry), and
    the secret values it holds.  (yt-dlp writes the file back after each call,
    without the lines it skipped: a test writes it again before the next.)"""
    bad, good = values or [f"TOPSECRET{secrets.token_hex(8)}",
                           f"ALSOSECRET{secrets.token_hex(8)}"]
    path = tmp_path / "cookies.txt"
    path.write_text("# Netscape HTTP Cookie File\n"
                    f".youtube.com\tTRUE\t/\tTRUE\t17O0000000\t__Secure-3PSID\t{bad}\n"
                    f".youtube.com\tTRUE\t/\tTRUE\t1900000000\tSID\t{good}\n", encoding="utf-8")
    path.chmod(0o600)
    return path, [bad, good]


def assert_redacted(text: str, values: list[str]) -> None:
    for value in values:
        assert value not in text, text
    (line,) = [li for li in text.splitlines() if GIST in li]
    assert "__Secure-3PSID" in line and MASK in line, line


def test_a_cookies_file_line_is_masked_as_yt_dlp_quotes_it() -> None:
    line = ".youtube.com\tTRUE\t/\tTRUE\t17O0000000\t__Secure-3PSID\tTOPSECRET\n"
    said = f"WARNING: {GIST} due to invalid expires at 17O0000000: {line!r}"
    assert redact_secrets(said) == said.replace("TOPSECRET", MASK)
    assert redact_secrets(line) == line.replace("TOPSECRET", MASK)  # tabs as they are
    assert redact_secrets("a line of five: 'x\\tTRUE\\t/\\t__Secure-1PSID\\tTOPSECRET'") == (
        f"a line of five: 'x\\tTRUE\\t/\\t__Secure-1PSID\\t{MASK}'")
    assert redact_secrets("{'Cookie': 'SID=abc; HSID=def'}") == f"{{'Cookie': '{MASK}'}}"
    assert redact_secrets("SAPISID=abc; PREF=f1") == f"SAPISID={MASK}; PREF=f1"
    assert redact_secrets("SIDE effects, ISID=1, 5\ttabs") == "SIDE effects, ISID=1, 5\ttabs"
    record = logging.LogRecord("ytproxy", logging.WARNING, __file__, 1, "yt-dlp: %s",
                               (said,), None)
    assert RedactingFilter().filter(record) and "TOPSECRET" not in record.getMessage()


async def test_a_workers_stderr_is_logged_redacted_once(
    googlevideo: FakeGooglevideo, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Cookies")
    path, values = cookies_file(tmp_path)
    options = {"quiet": True, "no_warnings": True, "cachedir": False, "cookiefile": str(path)}
    processes = YtdlpProcesses(1, idle_exit=0.5)
    caplog.set_level(logging.DEBUG, logger="ytproxy.resolve.ytdlp_process")
    try:
        # yt-dlp says it once per process: each worker (one exits when idle, the
        # next call starts another) says it again.
        for _ in range(2):
            cookies_file(tmp_path, values)
            info = await processes.extract(googlevideo.watch_url(VID), options)
            assert info is not None
            async with asyncio.timeout(10):
                while processes.running:  # noqa: ASYNC110 - a process's exit
                    await asyncio.sleep(0.05)
        assert processes.started == 2
    finally:
        processes.close()
    said = [r for r in caplog.records if GIST in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG]
    assert_redacted(said[0].getMessage(), values)
    out, err = capfd.readouterr()  # nothing around the log (the worker's own stderr)
    for value in values:
        assert value not in caplog.text + out + err


async def test_serve_and_add_never_log_a_cookie_value(
    googlevideo: FakeGooglevideo, start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    data = random_audio(200_000, seed=3)
    googlevideo.add_track(VID, data, title="Cookies")
    path, values = cookies_file(tmp_path)
    cookies = {"YTPROXY_RESOLVER_COOKIES_FILE": f'"{path}"'}
    daemon = await start_daemon(googlevideo=googlevideo, **cookies)
    await daemon.wait_for("READY")
    async with aiohttp.ClientSession() as session, \
            session.get(f"{daemon.base_url}/proxy/{VID}") as resp:
        assert resp.status == 200
        assert await resp.read() == data
    # Logged before the call's answer was taken: in the log by now.
    assert_redacted(daemon.stderr(), values)

    googlevideo.add_track("CookieAdd01", random_audio(1000), title="Added")
    cookies_file(tmp_path, values)
    config = write_config(tmp_path / "cli.toml", daemon.port, tmp_path / "cli" / "tracks.db",
                          googlevideo=googlevideo)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ytproxy", "--config", str(config), "add", "CookieAdd01",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO, env=child_env(tmp_path, **cookies))
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    done = subprocess.CompletedProcess(["add"], proc.returncode, out.decode(), err.decode())
    assert done.returncode == 0, done.stderr
    assert "added CookieAdd01" in done.stdout
    assert_redacted(done.stderr, values)
    assert not [v for v in values if v in done.stdout]
