"""One daemon per store and per cache directory: a second ``ytproxy serve``
refuses to start (exit 1, one line naming the first's pid and the lock file),
the first serves on, the CLI's commands work beside it, and a lock left by a
daemon killed with ``kill -9`` is taken over."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import random_audio
from tests.test_cache_daemon import cache_section
from tests.test_service import (
    REPO,
    StartDaemon,
    child_env,
    free_port,
    start_daemon,
    write_config,
)

__all__ = ["start_daemon"]  # the fixture, used here

VID = "OnlyOneDae1"


async def run_ytproxy(tmp_path: Path, config: Path, *args: str, within: float = 60
                      ) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ytproxy", "--config", str(config), *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO, env=child_env(tmp_path))
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def play(base_url: str) -> bytes:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{base_url}/proxy/{VID}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


def refusal_line(stderr: str) -> str:
    (line,) = [li for li in stderr.splitlines() if "another ytproxy daemon" in li]
    return line


async def test_a_second_daemon_on_the_same_store_and_cache_refuses_to_start(
    googlevideo: FakeGooglevideo, start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    data = random_audio(700_000, seed=131)
    googlevideo.add_track(VID, data, title="Only one")
    first = await start_daemon(googlevideo=googlevideo, server=cache_section(tmp_path))
    await first.wait_for("READY")
    assert hashlib.sha256(await play(first.base_url)).digest() == hashlib.sha256(data).digest()
    pid = first.proc.pid
    store_lock = tmp_path / "data" / "tracks.db.lock"

    # The very same config (same port too): the lock refuses it before the bind.
    same = await run_ytproxy(tmp_path, first.config, "serve")
    assert same.returncode == 1, same.stderr
    line = refusal_line(same.stderr)
    assert f"pid {pid}" in line and str(store_lock) in line, same.stderr
    assert "Traceback" not in same.stderr

    # Another port, another store, the same cache directory: its lock refuses.
    other_store = tmp_path / "other" / "tracks.db"
    other = write_config(tmp_path / "other.toml", free_port(), other_store,
                         googlevideo=googlevideo, server=cache_section(tmp_path))
    shared_cache = await run_ytproxy(tmp_path, other, "serve")
    assert shared_cache.returncode == 1, shared_cache.stderr
    line = refusal_line(shared_cache.stderr)
    assert f"pid {pid}" in line and str(tmp_path / "audio" / ".lock") in line, line
    assert "Traceback" not in shared_cache.stderr

    # The first serves on, its cache file untouched; the CLI works beside it.
    assert first.proc.returncode is None
    assert hashlib.sha256(await play(first.base_url)).digest() == hashlib.sha256(data).digest()
    listed = await run_ytproxy(tmp_path, first.config, "list")
    assert listed.returncode == 0 and VID in listed.stdout, listed.stderr
    cached = await run_ytproxy(tmp_path, first.config, "cache", "list")
    assert cached.returncode == 0 and "complete" in cached.stdout, cached.stderr
    googlevideo.add_track("AddedBeside", random_audio(1000, seed=132), title="Beside")
    added = await run_ytproxy(tmp_path, first.config, "add", "AddedBeside")
    assert added.returncode == 0, added.stderr

    # Killed with -9: the kernel lets the lock go; the next daemon takes it over
    # (the stale file still names the dead pid) and plays the track from its file.
    first.proc.send_signal(signal.SIGKILL)
    await first.proc.wait()
    assert store_lock.read_text().strip() == str(pid)
    await googlevideo.go_offline()
    again = await start_daemon(googlevideo=googlevideo, server=cache_section(tmp_path))
    await again.wait_for("READY")
    assert hashlib.sha256(await play(again.base_url)).digest() == hashlib.sha256(data).digest()
    assert store_lock.read_text().strip() == str(again.proc.pid)
