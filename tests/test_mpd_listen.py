"""Search, radio and autoplay with a real MPD: the real CLI queues what it finds
with names, ``--play`` plays it through the daemon, and autoplay keeps a queue
going from the last song's mix, each next song on disk before it is needed."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from tests.fakes.tube import FakeTube
from tests.listening import listening_config
from tests.mpd_harness import MpdInstance, make_test_audio, require_ffmpeg
from tests.proxy_fixture import ProxyFactory, RunningProxy
from tests.test_cli import cli_env, run_ytproxy
from ytproxy.cache import TrackCache
from ytproxy.http.app import CACHE, DAEMON

pytestmark = pytest.mark.mpd

FOUND = (("blueMoon001", "Ella Fitzgerald", "Blue Moon"),
         ("blueSky0002", "Electric Light Orchestra", "Mr. Blue Sky"),
         ("blueVelvet3", "Bobby Vinton", "Blue Velvet"))


def serve_songs(fake: FakeTube, tmp_path: Path, songs: tuple[tuple[str, str, str], ...],
                seconds: dict[str, float] | None = None) -> None:
    require_ffmpeg()
    for song_id, artist, title in songs:
        length = (seconds or {}).get(song_id, 3.0)
        audio = make_test_audio(tmp_path / f"{song_id}.webm", seconds=length, kind="webm")
        fake.add_song(song_id, audio, artist=artist, title=title, duration=length)


async def tube_daemon(fake: FakeTube, make_tube_proxy: ProxyFactory, mpd: MpdInstance,
                      **mpd_keys: object) -> RunningProxy:
    return await make_tube_proxy(
        cache={"max_size": 64 * 1_048_576},
        resolver={"search_url_template": fake.search_url_template,
                  "radio_url_template": fake.radio_url_template},
        mpd={"host": "127.0.0.1", "port": mpd.port, **mpd_keys})


def cache_of(proxy: RunningProxy) -> TrackCache:
    cache = proxy.app[CACHE]
    assert cache is not None
    return cache


def queue_of(lines: list[str]) -> list[dict[str, str]]:
    """MPD's ``playlistinfo`` answer, one dict per song."""
    songs: list[dict[str, str]] = []
    for line in lines:
        key, _, value = line.partition(": ")
        if key == "file":
            songs.append({})
        songs[-1].setdefault(key, value)
    return songs


async def test_search_add_queues_the_songs_with_names_and_play_plays_the_first(
    mpd: MpdInstance, faketube: FakeTube, make_tube_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    serve_songs(faketube, tmp_path, FOUND)
    proxy = await tube_daemon(faketube, make_tube_proxy, mpd, lookahead=0)
    port = proxy.config.server.port
    config = listening_config(tmp_path / "config.toml", faketube, tmp_path / "cli.db",
                              mpd_port=mpd.port, extra=f"[server]\nport = {port}\n")
    env = cli_env(tmp_path)

    done = await run_ytproxy(env, "--config", str(config), "search", "blue", "--add")
    assert done.rc == 0, done.err
    assert done.out.splitlines()[-1] == f"queued 3 songs in MPD at 127.0.0.1:{mpd.port}"
    queue = queue_of(await mpd.command_async("playlistinfo"))
    base = f"http://127.0.0.1:{port}/proxy/"
    assert [(s["file"], s.get("Artist"), s.get("Title")) for s in queue] == [
        (base + song_id, artist, title) for song_id, artist, title in FOUND]
    # What mpc shows for them, never played: "Artist - Title".
    shown = await mpd.mpc_async("-f", "[%artist% - ]%title%", "playlist")
    assert shown.splitlines() == [f"{artist} - {title}" for _, artist, title in FOUND]
    assert faketube.listing_calls() == 1 and faketube.player_requests == []

    # A radio is queued the same way, after what is there.
    faketube.mixes[FOUND[2][0]] = [FOUND[2][0], FOUND[0][0]]
    done = await run_ytproxy(env, "--config", str(config), "radio",
                             f"http://127.0.0.1:{port}/proxy/{FOUND[2][0]}", "--add")
    assert done.rc == 0, done.err
    queue = queue_of(await mpd.command_async("playlistinfo"))
    assert [s.get("Title") for s in queue[3:]] == [FOUND[2][2], FOUND[0][2]]
    assert faketube.listing_calls("mix", FOUND[2][0]) == 1 and faketube.player_requests == []

    await mpd.mpc_async("clear")
    done = await run_ytproxy(env, "--config", str(config), "search", "blue", "--limit", "2",
                             "--play")
    assert done.rc == 0, done.err
    assert done.out.splitlines()[-1].endswith("; playing the first")
    playing = await mpd.wait_for(lambda s: s.state == "play" and s.elapsed > 0.5, 20,
                                 "the first song playing")
    assert playing.song.get("Pos") == "0" and playing.file == base + FOUND[0][0]
    # Playing, MPD shows the stream's icy-name (its Name tag; the stream's tags
    # replace those given at queue time): the same "Artist - Title".
    assert playing.name == f"{FOUND[0][1]} - {FOUND[0][2]}"
    assert (await mpd.mpc_async("current")).strip() == f"{FOUND[0][1]} - {FOUND[0][2]}"
    # Played to the end: MPD moves on to the second song, with no error on the way.
    second = await mpd.wait_for(lambda s: (s.song.get("Pos") == "1" and s.elapsed > 0.2)
                                or s.error is not None or s.state == "stop", 20,
                                "the second song")
    assert second.error is None and second.state == "play", mpd.log_tail()
    log_text = mpd.log_text()
    assert "CURL failed" not in log_text and "Failed to decode" not in log_text
    # The daemon served the first song whole, resolved on its first play.
    assert faketube.served_clients(FOUND[0][0])
    await mpd.mpc_async("stop")


async def test_autoplay_plays_on_into_the_mix_from_the_cache_never_repeating_history(
    mpd: MpdInstance, faketube: FakeTube, make_tube_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ytproxy")
    played_first, seed = "playedFirst", "seedSong001"
    mix_songs = ("mixSong0001", "mixSong0002", "mixSong0003", "mixSong0004")
    songs = ((played_first, "The Band", "Heard Already"), (seed, "The Seeds", "Seed"),
             *((m, "Mix Artist", f"Mix {n}") for n, m in enumerate(mix_songs, 1)))
    # The seed plays long enough for its mix to be listed and the first song of
    # it to be resolved and downloaded while it plays.
    serve_songs(faketube, tmp_path, songs, seconds={played_first: 2.0, seed: 8.0})
    # The mix starts with its seed, and lists the song played before it.
    faketube.mixes[seed] = [seed, played_first, *mix_songs]
    # mixSong0003, the last one appended, has no mix: its listing fails (404).
    proxy = await tube_daemon(faketube, make_tube_proxy, mpd, lookahead=2, autoplay=True,
                              autoplay_songs=3)
    cache = cache_of(proxy)
    base = f"http://127.0.0.1:{proxy.config.server.port}/proxy/"
    await mpd.mpc_async("consume", "on")  # a song played leaves the queue: only history knows it
    await mpd.mpc_async("add", base + played_first)
    await mpd.mpc_async("add", base + seed)
    await mpd.mpc_async("play")

    order: list[str] = []
    on_disk_at_start: dict[str, bool] = {}
    media_at_start: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = await mpd.status_async()
        assert status.error is None, mpd.log_tail()
        if status.state == "stop":
            break
        track = (status.file or "").removeprefix(base)
        if track and (not order or order[-1] != track):
            order.append(track)
            on_disk_at_start[track] = cache.complete(track) is not None
            media_at_start[track] = sum(1 for m in faketube.media if m.video_id == track)
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"MPD still playing after 60 s; played {order}")

    # No stop until the mix's songs had played: the seed's queue ran on into them.
    assert order == [played_first, seed, *mix_songs[:3]], order
    # The first appended song was on disk when MPD started it, and nothing of it
    # was fetched from upstream after that: its first byte came from the cache.
    first = mix_songs[0]
    assert on_disk_at_start[first], "the first appended song was not downloaded ahead"
    assert sum(1 for m in faketube.media if m.video_id == first) == media_at_start[first]
    assert cache.snapshot().hits >= 1
    # Nothing appended repeats the history (the song played first, the seed).
    follower_report = proxy.app[DAEMON].mpd
    assert follower_report is not None
    autoplay = follower_report()["autoplay"]
    assert (autoplay["appended"], autoplay["failures"]) == (3, 1), autoplay
    assert mix_songs[3] not in order
    # One listing per mix; the one that failed was one WARNING, not retried in a loop.
    assert faketube.listing_calls("mix", seed) == 1
    assert faketube.listing_calls("mix", mix_songs[2]) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "autoplay" in r.getMessage()]
    assert len(warnings) == 1 and mix_songs[2] in warnings[0].getMessage(), warnings
    assert faketube.listing_calls("mix") == 2
    # Listed flat: the player endpoint was asked only for the songs that played.
    assert {p.video_id for p in faketube.player_requests} <= {played_first, seed,
                                                              *mix_songs[:3]}
