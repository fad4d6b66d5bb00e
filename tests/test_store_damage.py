"""A store that is damaged, raced for on first run, or read-only: SQLite's own
promise -- a damaged database is refused and left alone -- kept by ytproxy, with
one clear line instead of a traceback or an "internal_error".

Real files, real SQLite, the CLI and the daemon as real subprocesses, and the
app on a real socket for damage that appears while it runs.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.ports import free_port
from tests.proxy_fixture import ProxyFactory, random_audio
from tests.test_cli import REPO, Result, cli_env
from ytproxy.cache import TrackCache
from ytproxy.http.app import CACHE, STORE, TRACKS
from ytproxy.library import store as store_module
from ytproxy.library.store import SCHEMA_VERSION, Store

TRACKS_IN_STORE = 2000
VID = "Damaged0001"


def track_id(n: int) -> str:
    return f"T{n:010d}"


async def make_store(path: Path, tracks: int = TRACKS_IN_STORE) -> None:
    """A store of ``tracks`` tracks and one playlist, closed (its WAL checkpointed)."""
    await (await Store.open(path)).close()
    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            "INSERT INTO tracks (id, source_url, title, artist, duration, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(track_id(n), f"https://www.youtube.com/watch?v={track_id(n)}",
              f"Title of track number {n}", f"Artist {n % 37}", 200.0 + n, 1000.0 + n)
             for n in range(tracks)])
        conn.execute("INSERT INTO playlists (name, created_at, updated_at) VALUES "
                     "('Mix', 1, 1)")
        conn.executemany("INSERT INTO playlist_tracks VALUES ('Mix', ?, ?)",
                         [(n, track_id(n)) for n in range(0, tracks, 10)])
        conn.commit()
    finally:
        conn.close()


def page_size(path: Path) -> int:
    """From the header (bytes 16-17, big-endian; 1 means 65536), without opening it."""
    with path.open("rb") as f:
        f.seek(16)
        value = int.from_bytes(f.read(2), "big")
    return 65536 if value == 1 else value


def damage(path: Path, kind: str) -> None:
    """Overwrite part of the file as a failing disk or a stray write would."""
    size = page_size(path)
    if kind == "header-page":
        start, length = 100, size - 100  # page 1 past the header: sqlite_master's root
    else:
        start, length = size * 9, size * 10  # pages 10-19
    data = bytes(length) if kind == "zeros" else random_audio(length, seed=7)
    with path.open("r+b") as f:
        f.seek(start)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(path: Path) -> bytes:
    """The file's bytes; none when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def write_config(path: Path, db: Path, template: str | None = None) -> Path:
    text = (f'[store]\npath = "{db}"\n[server]\nport = {free_port()}\n'
            f'[cache]\ndirectory = "{path.parent / "cache"}"\n')
    if template is not None:
        text += f'[resolver]\nsource_url_template = "{template}"\ntimeout = 20.0\n'
    path.write_text(text, encoding="utf-8")
    return path


async def run(env: dict[str, str], *args: str, prefix: tuple[str, ...] = (),
              within: float = 60.0) -> Result:
    """``python -m ytproxy ARGS`` (after ``prefix``, e.g. setpriv), bounded in time:
    a daemon that starts when it should have refused is killed and fails the test."""
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "ytproxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO)
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"`ytproxy {' '.join(args)}` still ran after {within:g} s: "
                    f"{err.decode()[-2000:]}")
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def one_line(result: Result) -> str:
    """The refusal: exit 1, no traceback, and exactly one line saying it."""
    assert result.rc == 1, (result.rc, result.out, result.err)
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("ytproxy: ")]
    assert len(lines) == 1, result.err
    return lines[0]


# -- damage found at open ---------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "zeros", "header-page"])
async def test_a_damaged_store_is_refused_at_open_and_left_byte_for_byte(
    tmp_path: Path, kind: str, googlevideo: FakeGooglevideo
) -> None:
    data = tmp_path / "data"
    db = data / "tracks.db"
    await make_store(db)
    damage(db, kind)
    before, files = sha(db), sorted(os.listdir(data))
    config = write_config(tmp_path / "config.toml", db, googlevideo.watch_url_template)
    env = cli_env(tmp_path)
    for command in (["serve"], ["list"], ["m3u"], ["add", VID], ["remove", track_id(3)]):
        result = await run(env, "--config", str(config), *command)
        line = one_line(result)
        assert str(db) in line and "is damaged" in line, line
        assert "move it aside" in line and ".recover" in line, line
        assert sha(db) == before, f"`{command[0]}` changed the damaged file"
        assert sorted(os.listdir(data)) == files, f"`{command[0]}` left files beside it"


async def test_quick_check_of_a_2000_track_store_is_cheap(tmp_path: Path) -> None:
    """What the check at open costs (reported, not asserted: machines are noisy),
    and that it passes an intact store of that size."""
    db = tmp_path / "tracks.db"
    await make_store(db)
    conn = sqlite3.connect(db)
    try:
        started = time.perf_counter()
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        took = time.perf_counter() - started
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    print(f"quick_check of {TRACKS_IN_STORE} tracks ({pages} pages): {took * 1000:.2f} ms")
    store = await Store.open(db)
    try:
        assert await store.count() == TRACKS_IN_STORE
    finally:
        await store.close()


# -- damage that appears while the daemon runs ----------------------------------


class Records(logging.Handler):
    """Log records as they come, with an event per awaited message."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waits: list[tuple[str, asyncio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        for text, event in self._waits:
            if text in record.getMessage():
                event.set()

    async def wait_for(self, text: str, within: float = 20.0) -> logging.LogRecord:
        event = asyncio.Event()
        self._waits.append((text, event))
        if not any(text in r.getMessage() for r in self.records):
            async with asyncio.timeout(within):
                await event.wait()
        return next(r for r in self.records if text in r.getMessage())


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler ("Task exception was
    never retrieved" and the like)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(old)


async def test_damage_found_while_running_is_store_error_and_stops_writes(
    tmp_path: Path, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
    records: Records, loop_errors: list[dict[str, Any]],
) -> None:
    db = tmp_path / "tracks.db"  # where make_proxy's config puts it
    await make_store(db)
    data = random_audio(300_000, seed=3)
    googlevideo.add_track(VID, data, title="Cached before the damage")
    googlevideo.add_track("Damaged0002", data, title="Added after the damage")
    proxy = await make_proxy(cache={"max_size": 64 * 1_048_576})
    store = proxy.app[STORE]
    cache = proxy.app[CACHE]
    assert isinstance(cache, TrackCache)
    async with proxy.session.post(proxy.url("/cache/prefetch"), json={"ids": [VID]}) as resp:
        assert (await resp.json())["results"] == {VID: "cached"}
    entry = cache.files.get(VID)
    assert entry is not None and entry.complete
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200
    # The writes the prefetch left in the background land before the damage:
    # one still on its way after it would change the WAL this test compares.
    await cache.files.flush()
    await proxy.app[TRACKS].drain()

    damage(db, "random")
    async with proxy.session.get(proxy.url("/tracks")) as resp:
        body = await resp.json()
        assert resp.status == 500, body
        assert body["error"] == "store_error", body
        assert "is damaged" in body["message"] and str(db) in body["message"], body
    assert store.damaged is not None
    after_damage = sha(db), sorted(os.listdir(tmp_path))
    wal = Path(f"{db}-wal")
    wal_before = contents(wal)

    async with proxy.session.get(proxy.url("/health")) as resp:
        health = await resp.json()
        assert resp.status == 503 and health["status"] == "down", health
        assert "is damaged" in health["reasons"][0], health
    async with proxy.session.get(proxy.url("/playlist/Mix.m3u")) as resp:
        if resp.status != 200:  # its pages may be whole: then it still reads
            assert (resp.status, (await resp.json())["error"]) == (500, "store_error")
    async with proxy.session.post(proxy.url("/tracks"), json={"id": "Damaged0002"}) as resp:
        body = await resp.json()
        assert (resp.status, body["error"]) == (500, "store_error"), body
        assert "writes to it no more" in body["message"], body
    async with proxy.session.delete(proxy.url(f"/tracks/{track_id(5)}")) as resp:
        assert (resp.status, (await resp.json())["error"]) == (500, "store_error")

    # The writes no listener waits for: the cache's record (a task), a play count.
    cache.files.save(entry)
    warning = await records.wait_for(f"cache: {VID}: the record could not be written")
    assert warning.levelno == logging.WARNING
    await proxy.app[TRACKS].mark_played(VID)
    warning = await records.wait_for("tracks: could not count the play")
    assert warning.levelno == logging.WARNING
    gc.collect()  # a task that died with its exception unseen says so when collected
    await asyncio.sleep(0)
    assert loop_errors == []

    assert (sha(db), sorted(os.listdir(tmp_path))) == after_damage
    assert contents(wal) == wal_before
    errors = [r for r in records.records if r.levelno >= logging.ERROR
              and r.name.startswith("ytproxy")]
    assert len(errors) == 1 and "is damaged" in errors[0].getMessage(), errors


# -- first run: six processes, one new store ----------------------------------------


async def test_parallel_first_runs_all_open_the_new_store(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    for round_ in range(5):
        db = tmp_path / f"round{round_}" / "tracks.db"
        config = write_config(tmp_path / f"round{round_}.toml", db)
        results = await asyncio.gather(*(run(env, "--config", str(config), "list")
                                         for _ in range(6)))
        for result in results:
            assert result.rc == 0, f"round {round_}: {result.err}"
            assert "no tracks stored yet" in result.out
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            conn.close()


async def test_a_migration_is_one_transaction(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps of a migration land together or not at all (the version with them)."""
    db = tmp_path / "tracks.db"
    await make_store(db, tracks=3)
    added = "ALTER TABLE tracks ADD COLUMN first_new TEXT;\nCREATE TABLE second_new (x);"
    broken = "ALTER TABLE tracks ADD COLUMN half_done TEXT;\nTHIS IS NOT SQL;"
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, added, broken))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    with pytest.raises(store_module.StoreError):
        await Store.open(db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[1] for r in conn.execute("PRAGMA table_info(tracks)")}
        assert not {"first_new", "half_done"} & names
    finally:
        conn.close()


# -- a store this process may not write --------------------------------------------


# Root may write any file; without these capabilities it is held to the file's mode.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def _no_dac_refusal() -> str | None:
    if os.geteuid() != 0:
        return None  # file modes already bind this user
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to drop root's file-permission override"
    probe = subprocess.run([*NO_DAC, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture
def without_write_permission() -> tuple[str, ...]:
    """The prefix that runs a command unable to write a file or directory its mode
    forbids (root included: as root, chmod alone would not stop a write)."""
    refusal = _no_dac_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    return NO_DAC if os.geteuid() == 0 else ()


async def read_only_store(tmp_path: Path, *, old_schema: bool = False) -> Path:
    data = tmp_path / "data"
    db = data / "tracks.db"
    if old_schema:
        data.mkdir()
        conn = sqlite3.connect(db)
        conn.executescript(store_module.MIGRATIONS[0])
        conn.execute("INSERT INTO tracks (id, source_url, added_at) VALUES (?, ?, 1)",
                     (track_id(1), "https://www.youtube.com/watch?v=" + track_id(1)))
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
    else:
        await make_store(db, tracks=3)
    db.chmod(0o444)
    data.chmod(0o555)
    return db


@pytest.fixture
def restore_modes(tmp_path: Path) -> Iterator[None]:
    yield
    with_write = tmp_path / "data"
    if with_write.exists():
        with_write.chmod(0o755)


async def test_a_read_only_store_is_read_and_writes_say_why(
    tmp_path: Path, without_write_permission: tuple[str, ...], restore_modes: None,
    googlevideo: FakeGooglevideo,
) -> None:
    db = await read_only_store(tmp_path)
    before, files = sha(db), sorted(os.listdir(db.parent))
    config = write_config(tmp_path / "config.toml", db, googlevideo.watch_url_template)
    env = cli_env(tmp_path)
    args = ("--config", str(config))

    listed = await run(env, *args, "list", prefix=without_write_permission)
    assert listed.rc == 0, listed.err
    assert [line.split()[0] for line in listed.out.splitlines()] == [
        track_id(n) for n in range(3)]
    m3u = await run(env, *args, "m3u", "--playlist", "Mix", prefix=without_write_permission)
    assert m3u.rc == 0, m3u.err
    assert f"/proxy/{track_id(0)}" in m3u.out

    for command in (["add", VID], ["remove", track_id(1)], ["serve"]):
        result = await run(env, *args, *command, prefix=without_write_permission)
        line = one_line(result)
        assert str(db) in line and "is read-only" in line, line
        assert "no write permission on the file" in line, line
        assert "damaged" not in line and "not a ytproxy database" not in line, line
    assert (sha(db), sorted(os.listdir(db.parent))) == (before, files)


async def test_a_read_only_store_of_an_older_schema_says_it_needs_upgrading(
    tmp_path: Path, without_write_permission: tuple[str, ...], restore_modes: None,
) -> None:
    db = await read_only_store(tmp_path, old_schema=True)
    before = sha(db)
    config = write_config(tmp_path / "config.toml", db)
    result = await run(cli_env(tmp_path), "--config", str(config), "list",
                       prefix=without_write_permission)
    line = one_line(result)
    assert str(db) in line and "read-only" in line and "schema version 1" in line, line
    assert "upgraded" in line, line
    assert sha(db) == before


def _mount_tmpfs(path: Path) -> str | None:
    """Mount a small tmpfs at ``path``; why not, or None when mounted."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command (apt-get install mount)"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs",
                           str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        return f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
    return None


async def test_a_store_on_a_read_only_mount_is_read_and_writes_say_why(
    tmp_path: Path, googlevideo: FakeGooglevideo
) -> None:
    mountpoint = tmp_path / "mnt"
    refusal = _mount_tmpfs(mountpoint)
    if refusal is not None:
        pytest.skip(refusal)
    try:
        db = mountpoint / "tracks.db"
        await make_store(db, tracks=3)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)],  # noqa: ASYNC221
                                 capture_output=True, check=False)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        before = sha(db)
        config = write_config(tmp_path / "config.toml", db, googlevideo.watch_url_template)
        env = cli_env(tmp_path)
        listed = await run(env, "--config", str(config), "list")
        assert listed.rc == 0, listed.err
        assert len(listed.out.splitlines()) == 3
        for command in (["add", VID], ["serve"]):
            line = one_line(await run(env, "--config", str(config), *command))
            assert str(db) in line and "is read-only" in line, line
            assert f"the file system holding {mountpoint} is mounted read-only" in line, line
        assert sha(db) == before
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)  # noqa: ASYNC221
