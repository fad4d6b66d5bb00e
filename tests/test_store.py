"""The SQLite store: opening, WAL, migrations by user_version, refusals, queries."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ytproxy.errors import StoreError
from ytproxy.library import store as store_module
from ytproxy.library.store import SCHEMA_VERSION, Store
from ytproxy.models import StreamInfo

VID = "dQw4w9WgXcQ"
SRC = f"https://www.youtube.com/watch?v={VID}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "tracks.db")
    try:
        yield opened
    finally:
        await opened.close()


def stream(**changes: object) -> StreamInfo:
    values: dict[str, object] = {
        "url": "https://rr1.googlevideo.com/videoplayback?expire=2000000000",
        "expires_at": 2_000_000_000.0,
        "mime": "audio/webm",
        "size": 123_456,
        "http_headers": {"User-Agent": "ua"},
    }
    values.update(changes)
    return StreamInfo(**values)  # type: ignore[arg-type]


def make_v1_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(store_module.MIGRATIONS[0])
        conn.execute(
            "INSERT INTO tracks (id, source_url, title, artist, album, duration, added_at,"
            " play_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (VID, SRC, "Never Gonna Give You Up", "Rick Astley", "Whenever", 213.0, 1000.0, 4),
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()


def columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute("PRAGMA table_info(tracks)")}
    finally:
        conn.close()


# -- opening --------------------------------------------------------------


async def test_open_creates_directory_file_wal_and_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "tracks.db"
    assert not path.parent.exists()
    s = await Store.open(path)
    try:
        assert path.is_file()
        assert await s.journal_mode() == "wal"
        assert await s.schema_version() == SCHEMA_VERSION
        assert await s.count() == 0
        assert await s.list_tracks() == []
    finally:
        await s.close()
    assert path.read_bytes().startswith(b"SQLite format 3\x00")


async def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "tracks.db"
    s = await Store.open(path)
    await s.upsert_track(VID, SRC, title="T")
    await s.close()
    s = await Store.open(path)
    try:
        assert await s.schema_version() == SCHEMA_VERSION
        track = await s.get(VID)
        assert track is not None and track.title == "T"
    finally:
        await s.close()


async def test_migrates_version_1_database_and_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1_database(path)
    assert "last_error" not in columns(path)
    s = await Store.open(path)
    try:
        assert await s.schema_version() == SCHEMA_VERSION
        track = await s.get(VID)
        assert track is not None
        assert track.title == "Never Gonna Give You Up"
        assert track.artist == "Rick Astley"
        assert track.album == "Whenever"
        assert track.duration == 213.0
        assert track.added_at == 1000.0
        assert track.play_count == 4
        assert track.source_url == SRC
        # Columns that arrived with the migration start empty and are usable.
        assert track.stream_mime is None and track.last_error is None
        await s.save_stream(VID, stream())
        await s.record_error(VID, "boom")
        await s.mark_played(VID)
        track = await s.get(VID)
        assert track is not None
        assert track.stream_mime == "audio/webm"
        assert track.stream_size == 123_456
        assert track.stream_headers == {"User-Agent": "ua"}
        assert track.resolved_at is not None
        assert track.last_error == "boom"
        assert track.last_played_at is not None
        assert track.play_count == 5
        assert track.title == "Never Gonna Give You Up"
    finally:
        await s.close()
    assert {"stream_mime", "stream_size", "last_error", "last_played_at"} <= columns(path)


async def test_failed_migration_step_lands_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tracks.db"
    await (await Store.open(path)).close()
    broken = "ALTER TABLE tracks ADD COLUMN half_done TEXT;\nTHIS IS NOT SQL;"
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        await Store.open(path)
    monkeypatch.undo()
    assert "half_done" not in columns(path)
    s = await Store.open(path)
    try:
        assert await s.schema_version() == SCHEMA_VERSION
    finally:
        await s.close()


async def test_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    message = str(info.value)
    assert str(path) in message
    assert str(SCHEMA_VERSION + 5) in message
    assert "newer" in message and "upgrade" in message
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 5
    finally:
        conn.close()


@pytest.mark.parametrize(
    "garbage",
    [b"\n", b"x", b"hello, this is my shopping list\n", bytes(range(256)) * 40],
    ids=["newline", "one-byte", "text", "binary"],
)
async def test_non_sqlite_file_is_refused_and_left_untouched(
    tmp_path: Path, garbage: bytes
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    assert str(path) in str(info.value)
    assert "not a ytproxy database" in str(info.value)
    assert path.read_bytes() == garbage
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["notes.db"]


async def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "tracks.db"
    path.touch()
    s = await Store.open(path)
    try:
        assert await s.schema_version() == SCHEMA_VERSION
    finally:
        await s.close()


# -- queries --------------------------------------------------------------


async def test_upsert_keeps_metadata_when_readded_with_none(store: Store) -> None:
    first = await store.upsert_track(VID, SRC, title="Title", artist="Artist", album="Album",
                                     duration=200.5)
    again = await store.upsert_track(VID, SRC + "&x=1")
    assert again.title == "Title"
    assert again.artist == "Artist"
    assert again.album == "Album"
    assert again.duration == 200.5
    assert again.source_url == SRC + "&x=1"
    assert again.added_at == first.added_at
    assert await store.count() == 1


async def test_upsert_replaces_metadata_with_new_values(store: Store) -> None:
    await store.upsert_track(VID, SRC, title="Old", artist="Old Artist", duration=1.0)
    track = await store.upsert_track(VID, SRC, title="New", album="Album")
    assert track.title == "New"
    assert track.artist == "Old Artist"
    assert track.album == "Album"
    assert track.duration == 1.0


async def test_save_stream_fills_gaps_but_never_erases(store: Store) -> None:
    await store.upsert_track(VID, SRC, title="Stored Title", artist=None)
    await store.record_error(VID, "resolver failed")
    await store.save_stream(VID, stream(title="Resolver Title", artist="Resolver Artist",
                                        album=None, duration=99.0))
    track = await store.get(VID)
    assert track is not None
    assert track.title == "Stored Title"  # kept, not replaced
    assert track.artist == "Resolver Artist"  # gap filled
    assert track.album is None
    assert track.duration == 99.0
    assert track.last_error is None
    assert track.stream_url == stream().url
    assert track.stream_expires_at == 2_000_000_000.0
    assert track.stored_stream() is not None

    # A later resolve with no metadata erases nothing; a None size keeps the known size.
    await store.save_stream(VID, stream(url="https://rr2.googlevideo.com/v?expire=3",
                                        expires_at=3.0, size=None))
    track = await store.get(VID)
    assert track is not None
    assert track.title == "Stored Title"
    assert track.artist == "Resolver Artist"
    assert track.duration == 99.0
    assert track.stream_size == 123_456
    assert track.stream_url == "https://rr2.googlevideo.com/v?expire=3"
    assert track.stream_expires_at == 3.0


async def test_save_size(store: Store) -> None:
    await store.upsert_track(VID, SRC)
    await store.save_size(VID, 777)
    track = await store.get(VID)
    assert track is not None and track.stream_size == 777


async def test_record_error_keeps_metadata(store: Store) -> None:
    await store.upsert_track(VID, SRC, title="T", artist="A", duration=3.0)
    await store.save_stream(VID, stream())
    await store.record_error(VID, "the source says this track is gone")
    track = await store.get(VID)
    assert track is not None
    assert track.last_error == "the source says this track is gone"
    assert (track.title, track.artist, track.duration) == ("T", "A", 3.0)
    assert track.stream_url == stream().url


async def test_mark_played_increments(store: Store) -> None:
    await store.upsert_track(VID, SRC)
    track = await store.get(VID)
    assert track is not None and track.play_count == 0 and track.last_played_at is None
    await store.mark_played(VID)
    await store.mark_played(VID)
    await store.mark_played(VID)
    track = await store.get(VID)
    assert track is not None
    assert track.play_count == 3
    assert track.last_played_at is not None


async def test_remove_reports_whether_it_removed(store: Store) -> None:
    await store.upsert_track(VID, SRC)
    assert await store.remove(VID) is True
    assert await store.get(VID) is None
    assert await store.remove(VID) is False
    assert await store.remove("nonexistent") is False


async def test_get_unknown_is_none(store: Store) -> None:
    assert await store.get("aaaaaaaaaaa") is None


async def test_list_is_in_order_added(store: Store) -> None:
    # Ids in reverse alphabetical order, so ordering by id would fail.
    ids = ["zzzzzzzzzzz", "mmmmmmmmmmm", "aaaaaaaaaaa"]
    for track_id in ids:
        await store.upsert_track(track_id, f"https://example.invalid/{track_id}")
    # Re-adding does not move a track to the end.
    await store.upsert_track("zzzzzzzzzzz", "https://example.invalid/again", title="T")
    listed = await store.list_tracks()
    assert [t.id for t in listed] == ids
    assert [t.added_at for t in listed] == sorted(t.added_at for t in listed)
    assert await store.count() == 3


# -- the read cache ---------------------------------------------------------


async def test_get_sees_its_own_writes_at_once(store: Store) -> None:
    await store.upsert_track(VID, SRC)
    await store.save_stream(VID, stream(url="https://rr1.googlevideo.com/videoplayback?v=1"))
    first = await store.get(VID)
    assert first is not None and first.stream_url is not None and first.stream_url.endswith("v=1")
    await store.save_stream(VID, stream(url="https://rr1.googlevideo.com/videoplayback?v=2"))
    second = await store.get(VID)
    assert second is not None and second.stream_url is not None
    assert second.stream_url.endswith("v=2")
    await store.mark_played(VID, 3)
    played = await store.get(VID)
    assert played is not None and played.play_count == 3
    assert await store.remove(VID)
    assert await store.get(VID) is None


async def test_get_sees_another_process_within_the_cache_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Store, "CACHE_SECONDS", 0.3)
    path = tmp_path / "tracks.db"
    daemon, cli = await Store.open(path), await Store.open(path)
    try:
        await daemon.upsert_track(VID, SRC)
        assert await daemon.get(VID) is not None  # now cached
        assert await cli.remove(VID)  # `ytproxy remove` while the daemon runs
        assert await daemon.get(VID) is not None  # still the cached row...
        await asyncio.sleep(0.35)
        assert await daemon.get(VID) is None  # ...for at most CACHE_SECONDS
    finally:
        await daemon.close()
        await cli.close()


async def test_a_read_that_overlaps_a_write_is_not_cached(store: Store) -> None:
    await store.upsert_track(VID, SRC)
    reading = asyncio.ensure_future(store.get(VID))
    await asyncio.sleep(0)  # the read is on its way to the database thread
    await store.mark_played(VID)
    await reading
    track = await store.get(VID)
    assert track is not None and track.play_count == 1


async def test_a_playlist_is_replaced_all_or_not_at_all_beside_other_writes(
    store: Store,
) -> None:
    # Reproduction: replace_playlist beside mark_played left the playlist empty,
    # one coroutine's commit committing the other's half-done DELETE.
    ids = ["TrackAAAAA1", "TrackBBBBB2", "TrackCCCCC3"]
    for track_id in ids:
        await store.upsert_track(track_id, f"https://www.youtube.com/watch?v={track_id}")
    await store.replace_playlist("mix", ids)

    async def count_plays() -> None:
        for _ in range(40):
            await store.mark_played(ids[0])

    async def replace() -> None:
        for _ in range(40):
            await store.replace_playlist("mix", ids)

    async def read() -> list[int]:
        seen = []
        for _ in range(80):
            tracks = await store.playlist_tracks("mix")
            seen.append(len(tracks or []))
            await asyncio.sleep(0)
        return seen

    *_, seen = await asyncio.gather(count_plays(), replace(), read())
    assert set(seen) == {3}, seen
    assert [t.id for t in await store.playlist_tracks("mix") or []] == ids
    track = await store.get(ids[0])
    assert track is not None and track.play_count == 40
