"""The store's files: created private (0600 in 0700 directories), and a database
that is not ytproxy's — not SQLite, damaged, or another program's — is refused
with a clear message and left byte for byte as it was."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import cli_env, run_ytproxy
from ytproxy.errors import StoreError
from ytproxy.library.store import SCHEMA_VERSION, Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def exists(path: Path) -> bool:
    return path.exists()


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


async def test_new_store_is_0600_in_new_0700_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tracks.db"
    # Even with a permissive umask, which SQLite alone would turn into 0666.
    with umask(0):
        store = await Store.open(path)
        try:
            await store.upsert_track("dQw4w9WgXcQ", "https://www.youtube.com/watch?v=x")
            wal = Path(f"{path}-wal")
            shm = Path(f"{path}-shm")
            assert exists(wal) and exists(shm)
            assert (mode(wal), mode(shm)) == (0o600, 0o600)  # SQLite copies the db's mode
        finally:
            await store.close()
    assert mode(path) == 0o600
    assert mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path / "a") == 0o700


async def test_existing_directories_and_files_keep_their_modes(tmp_path: Path) -> None:
    shared = tmp_path / "share"
    shared.mkdir()
    shared.chmod(0o755)
    existing = tmp_path / "mine.db"
    sqlite3.connect(existing).close()  # an empty SQLite database the person made
    existing.chmod(0o640)
    store = await Store.open(shared / "ytproxy" / "tracks.db")
    await store.close()
    assert mode(shared) == 0o755  # not ours: left alone
    assert mode(shared / "ytproxy") == 0o700
    store = await Store.open(existing)
    await store.close()
    assert mode(existing) == 0o640


async def test_default_store_under_home_is_private(tmp_path: Path) -> None:
    """`ytproxy list` with no config: ~/.local/share/ytproxy is made 0700, the db 0600,
    and ~/.local/share, which exists already, is not touched."""
    env = cli_env(tmp_path)
    share = Path(env["HOME"]) / ".local" / "share"
    share.mkdir(parents=True)
    share.chmod(0o755)
    result = await run_ytproxy(env, "list")
    assert result.rc == 0, result.err
    assert mode(share) == 0o755
    assert mode(share / "ytproxy") == 0o700
    assert mode(share / "ytproxy" / "tracks.db") == 0o600


async def test_store_directory_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as info:
        await Store.open(blocker / "tracks.db")
    assert str(blocker) in str(info.value) and "directory" in str(info.value)
    assert blocker.read_text() == "not a directory"


# --------------------------------------------------------------- foreign databases


def another_apps_database(path: Path, user_version: int = 0) -> bytes:
    conn = sqlite3.connect(path)
    try:
        conn.executescript("""
            CREATE TABLE moz_bookmarks (id INTEGER PRIMARY KEY, title TEXT);
            CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT);
            INSERT INTO moz_bookmarks (title) VALUES ('keep me');
        """)
        conn.execute(f"PRAGMA user_version = {user_version}")
        conn.commit()
    finally:
        conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("user_version", [0, 1, SCHEMA_VERSION])
async def test_another_programs_sqlite_database_is_refused_and_untouched(
    tmp_path: Path, user_version: int
) -> None:
    path = tmp_path / "places.sqlite"
    before = another_apps_database(path, user_version)
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    message = str(info.value)
    assert str(path) in message and "another program" in message
    assert "moz_bookmarks" in message and "[store] path" in message
    assert path.read_bytes() == before  # not migrated, not switched to WAL
    assert not exists(Path(f"{path}-wal"))
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "tracks" not in tables


@pytest.mark.parametrize("content", [
    b"Just some notes\nabout music\n",
    b"\x00" * 64,
    b"SQLite format 3\x00" + b"\xff" * 200,  # the header, then garbage
])
async def test_a_non_sqlite_or_damaged_file_is_refused_and_untouched(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "tracks.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    message = str(info.value)
    assert str(path) in message and "[store] path" in message
    assert path.read_bytes() == content


async def test_cli_reports_a_foreign_database_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    before = another_apps_database(db)
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
    result = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "list")
    assert result.rc == 1
    assert "another program" in result.err and "Traceback" not in result.err
    assert db.read_bytes() == before


async def test_an_empty_ytproxy_store_still_opens_and_migrates(tmp_path: Path) -> None:
    """The control: a fresh file, and a store of ours, are accepted."""
    path = tmp_path / "tracks.db"
    store = await Store.open(path)
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    store = await Store.open(path)
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
