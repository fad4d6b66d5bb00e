"""Playback policy without HTTP: what ``Playback.listen`` gives a listener.

Real objects throughout (the store, the resolver with yt-dlp, the fetcher, the
cache) against the fake googlevideo on loopback; only the listener is plain
values: a track id, a range function and a "still listening" flag.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import proxy_config, random_audio
from ytproxy.cache import CachedBody, TrackCache
from ytproxy.config import Config
from ytproxy.library.sources import TrackSources
from ytproxy.library.store import Store
from ytproxy.library.tracks import Tracks
from ytproxy.models import StreamInfo
from ytproxy.playback import Answer, Playback
from ytproxy.resolve.resolver import Resolver
from ytproxy.upstream import RangeStream, UpstreamFetcher, upstream_connector

VID = "PlayBack_01"
FAST: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 0.5, "connect_timeout": 0.5},
    "retry": {"base_delay": 0.05, "max_delay": 0.3, "gap_budget": 1.0, "hold_budget": 10.0},
    "breaker": {"failures": 3, "reset_after": 0.5},
}


@dataclass
class Room:
    """A playback and what it stands on, as the daemon builds them."""

    config: Config
    store: Store
    tracks: Tracks
    fetcher: UpstreamFetcher
    cache: TrackCache | None
    playback: Playback


RoomFactory = Callable[..., Any]


@pytest.fixture
async def make_room(googlevideo: FakeGooglevideo, tmp_path: Path) -> AsyncIterator[RoomFactory]:
    made: list[tuple[Room, Resolver, aiohttp.ClientSession]] = []

    async def factory(*, cache_size: int = 0, **sections: dict[str, Any]) -> Room:
        config = proxy_config(googlevideo, tmp_path, **FAST)
        config = config.replace("cache", max_size=cache_size)
        for section, changes in sections.items():
            config = config.replace(section, **changes)
        store = await Store.open(tmp_path / "tracks.db")
        resolver = Resolver(config.resolver, config.breaker)
        session = aiohttp.ClientSession(connector=upstream_connector(), auto_decompress=False)
        fetcher = UpstreamFetcher(config.upstream, session, config.breaker)
        tracks = Tracks(store, resolver, config.resolver)
        sources = TrackSources(fetcher, tracks, policy=config.retry,
                               max_available_wait=config.resolver.max_available_wait)
        cache = None
        if config.cache.enabled:
            cache = TrackCache(config, store, tracks, sources)
            await cache.open()
        playback = Playback(tracks=tracks, sources=sources, cache=cache, policy=config.retry,
                            resolver_pace=config.breaker.reset_after)
        room = Room(config, store, tracks, fetcher, cache, playback)
        made.append((room, resolver, session))
        return room

    yield factory
    for room, resolver, session in made:
        await room.playback.drain()
        if room.cache is not None:
            await room.cache.aclose()
        await room.tracks.drain()
        await room.fetcher.aclose()
        await session.close()
        await resolver.close()
        await room.store.close()


def whole(size: int) -> tuple[int, int] | None:
    return None


async def read_all(answer: Answer) -> bytes:
    assert answer.body is not None
    got = bytearray()
    while (piece := await answer.body.next_piece()) is not None:
        got += piece
    return bytes(got)


async def until(predicate: Callable[[], bool], seconds: float) -> None:
    """Poll a condition the code under test reaches by itself (no event to await)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "never came"
        await asyncio.sleep(0.02)


async def test_without_a_cache_a_listener_is_relayed_the_range_it_asked_for(
    googlevideo: FakeGooglevideo, make_room: RoomFactory,
) -> None:
    data = random_audio(300_000, seed=1)
    googlevideo.add_track(VID, data, title="Relayed")
    room, sizes = await make_room(), []

    def tail(size: int) -> tuple[int, int]:
        sizes.append(size)
        return 1000, size - 1

    async with room.playback.listen(VID, range_for=tail, listening=lambda: True) as answer:
        assert isinstance(answer.body, RangeStream)
        assert answer.body.source == "relay" and answer.body.percent is None
        assert (answer.size, answer.mime, answer.byte_range) == (len(data), "audio/webm",
                                                                 (1000, len(data) - 1))
        assert await read_all(answer) == data[1000:]
    assert sizes == [len(data)]  # the range was asked for once the size was known


async def test_a_track_whole_in_the_cache_is_played_from_its_file_with_no_upstream(
    googlevideo: FakeGooglevideo, make_room: RoomFactory,
) -> None:
    data = random_audio(600_000, seed=2)
    googlevideo.add_track(VID, data, title="Cached")
    room = await make_room(cache_size=10 * 1_048_576)
    assert room.cache is not None
    async with room.playback.listen(VID, range_for=whole, listening=lambda: True) as answer:
        assert isinstance(answer.body, CachedBody)
        assert answer.body.source == "download"  # a miss: the file fills as it plays
        assert await read_all(answer) == data
    entry = room.cache.files.get(VID)
    assert entry is not None
    if entry.download is not None:
        await entry.download.finished()  # its last bookkeeping after the last byte
    assert entry.complete
    assert (room.cache.files.stats.hits, room.cache.files.stats.misses) == (0, 1)

    await googlevideo.go_offline()  # neither yt-dlp nor googlevideo answers now
    media_requests = len(googlevideo.requests)
    async with room.playback.listen(VID, range_for=lambda size: (size - 100, size - 1),
                                    listening=lambda: True) as answer:
        assert isinstance(answer.body, CachedBody) and answer.body.source == "cache"
        assert answer.size == len(data)
        assert await read_all(answer) == data[-100:]
        assert entry.users > 0  # held while the answer is open: no eviction under it
    assert entry.users == 0
    assert len(googlevideo.requests) == media_requests
    assert (room.cache.files.stats.hits, room.cache.files.stats.misses) == (1, 1)


async def test_a_listener_is_held_while_the_resolver_is_out_of_reach_then_played(
    googlevideo: FakeGooglevideo, make_room: RoomFactory,
) -> None:
    data = random_audio(200_000, seed=3)
    googlevideo.add_track(VID, data, title="Held")
    holds = (room := await make_room()).fetcher.holds
    await googlevideo.go_offline()  # the watch page too: yt-dlp's connection is refused

    async def listen() -> bytes:
        async with room.playback.listen(VID, range_for=whole, listening=lambda: True) as a:
            return await read_all(a)

    play = asyncio.ensure_future(listen())
    await until(lambda: holds.as_dict()["held"] == {"the resolver (yt-dlp)": 1}, 30)
    assert not play.done()
    await googlevideo.go_online()
    assert await asyncio.wait_for(play, 60) == data
    assert holds.count == 0  # the hold ended with the wait


async def test_a_held_listener_who_leaves_is_let_go_and_its_hold_ends(
    googlevideo: FakeGooglevideo, make_room: RoomFactory,
) -> None:
    googlevideo.add_track(VID, random_audio(1000, seed=4), title="Left")
    room = await make_room()
    holds = room.fetcher.holds
    await googlevideo.go_offline()
    here = True

    async def listen() -> None:
        async with room.playback.listen(VID, range_for=whole, listening=lambda: here):
            raise AssertionError("answered while offline")

    play = asyncio.ensure_future(listen())
    await until(lambda: holds.count == 1, 30)
    here = False
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(play, 30)
    assert holds.count == 0


async def test_a_stored_size_of_another_file_is_answered_with_upstreams_file(
    googlevideo: FakeGooglevideo, make_room: RoomFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    data = random_audio(90_000, seed=5)
    googlevideo.add_track(VID, data, title="Shorter")
    room = await make_room()
    await room.store.upsert_track(VID, googlevideo.watch_url(VID), title="Shorter")
    await room.store.save_stream(VID, StreamInfo(url=googlevideo.sign(VID),
                                                 expires_at=time.time() + 3600, size=100_000))
    sizes: list[int] = []

    def second_half(size: int) -> tuple[int, int]:
        sizes.append(size)
        return size // 2, size - 1

    caplog.set_level(logging.WARNING)
    async with room.playback.listen(VID, range_for=second_half,
                                    listening=lambda: True) as answer:
        # The range is asked for again at upstream's size: never bytes of a
        # 100,000-byte file promised, nor 90,000 bytes spliced into one.
        assert sizes == [100_000, 90_000]
        assert (answer.size, answer.byte_range) == (90_000, (45_000, 89_999))
        assert await read_all(answer) == data[45_000:]
    assert "stored size (100000 bytes) is not upstream's (90000)" in caplog.text
    await room.playback.drain()
    track = await room.store.get(VID)
    assert track is not None and track.stream_size == 90_000


async def test_a_play_is_a_listener_from_byte_0_that_got_bytes(
    googlevideo: FakeGooglevideo, make_room: RoomFactory,
) -> None:
    googlevideo.add_track(VID, random_audio(50_000, seed=6), title="Counted")
    room = await make_room()
    playback = room.playback
    for _ in range(2):
        async with playback.listen(VID, range_for=whole, listening=lambda: True) as answer:
            playback.begun(answer)  # two plays, written together
    async with playback.listen(VID, range_for=lambda size: (10, size - 1),
                               listening=lambda: True) as answer:
        playback.begun(answer)  # a seek: not a play
    async with playback.listen(VID, range_for=whole, listening=lambda: True,
                               with_body=False) as answer:
        assert answer.body is None
        playback.begun(answer)  # HEAD: no bytes, not a play
    await playback.drain()
    track = await room.store.get(VID)
    assert track is not None and track.play_count == 2
