"""The cache in a real daemon process: kill -9 in the middle of a download, and
``ytproxy cache`` / ``ytproxy status`` against it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import random_audio
from tests.test_service import REPO, StartDaemon, child_env, start_daemon

__all__ = ["start_daemon"]  # the fixture, used here

MiB = 1_048_576


def cache_section(tmp_path: Path) -> str:
    return f'[cache]\ndirectory = "{tmp_path / "audio"}"\nmax_size = "1 GiB"\n'


def held_bytes(db: Path, track_id: str) -> int:
    """What the daemon's record in the store says is on disk (read as another process)."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT ranges FROM cache_files WHERE track_id = ?",
                           (track_id,)).fetchone()
    return sum(end - start for start, end in json.loads(row[0])) if row else 0


async def test_kill_9_in_the_middle_of_a_download_then_the_track_plays_byte_exact(
    googlevideo: FakeGooglevideo, start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    data = random_audio(8 * MiB, seed=77)
    googlevideo.add_track("KilledDown1", data, title="Killed")
    googlevideo.throttle_bytes_per_sec = 2 * MiB  # a download of about 4 s
    db = tmp_path / "data" / "tracks.db"
    daemon = await start_daemon(googlevideo=googlevideo, server=cache_section(tmp_path))
    await daemon.wait_for("READY")
    async with aiohttp.ClientSession() as session:
        listener = await session.get(f"{daemon.base_url}/proxy/KilledDown1")
        assert listener.status == 200
        async with asyncio.timeout(20):
            while held_bytes(db, "KilledDown1") < 2 * MiB:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        listener.close()
    partial = tmp_path / "audio" / "KilledDown1.audio"
    assert partial.exists()
    googlevideo.throttle_bytes_per_sec = None
    again = await start_daemon(googlevideo=googlevideo, server=cache_section(tmp_path))
    await again.wait_for("READY")
    async with (aiohttp.ClientSession() as session,
                session.get(f"{again.base_url}/proxy/KilledDown1") as resp):
        assert resp.status == 200
        body = await resp.read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    log = again.stderr()
    assert "kept the partial file left by the last run" in log, log
    assert "resuming the partial file" in log, log
    async with asyncio.timeout(10):
        while "downloaded whole" not in again.stderr():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_cache_cli_prefetch_list_clear_and_status(
    googlevideo: FakeGooglevideo, start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    data = random_audio(600_000, seed=78)
    googlevideo.add_track("CliCached01", data, title="From the CLI")
    daemon = await start_daemon(googlevideo=googlevideo, server=cache_section(tmp_path))
    await daemon.wait_for("READY")
    env = child_env(tmp_path)

    async def ytproxy(*args: str) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ytproxy", "--config", str(daemon.config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    done = await ytproxy("cache", "prefetch", "CliCached01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "CliCached01  cached"
    listed = await ytproxy("cache", "list")
    assert listed.returncode == 0, listed.stderr
    assert "CliCached01" in listed.stdout and "complete" in listed.stdout
    as_json = json.loads((await ytproxy("cache", "list", "--json")).stdout)
    assert as_json["tracks"][0]["held_bytes"] == len(data)
    status = await ytproxy("status")
    assert "cache:" in status.stdout and "1 tracks" in status.stdout, status.stdout
    bad = await ytproxy("cache", "prefetch", "not-an-id")
    assert bad.returncode == 2 and "'not-an-id' is not a track id" in bad.stderr
    none = await ytproxy("cache", "prefetch")
    assert none.returncode == 2 and "takes track ids" in none.stderr
    cleared = await ytproxy("cache", "clear")
    assert cleared.returncode == 0 and "dropped 1 files" in cleared.stdout
    assert not list((tmp_path / "audio").glob("*.audio"))
