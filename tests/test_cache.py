"""The download-ahead cache against the fake googlevideo: whole tracks fetched at
upstream's speed, listeners served from the file, replays with no upstream."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.cache import TrackCache
from ytproxy.http.app import CACHE

MiB = 1_048_576
CACHE_ON: dict[str, Any] = {"max_size": 64 * MiB}
FAST: dict[str, dict[str, Any]] = {
    "upstream": {"chunk_size": 256 * 1024, "read_timeout": 0.5, "connect_timeout": 2.0},
    "retry": {"base_delay": 0.02, "max_delay": 0.2, "gap_budget": 10.0, "attempts": 8},
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_of(proxy: RunningProxy) -> TrackCache:
    cache = proxy.app[CACHE]
    assert cache is not None, "the cache is off"
    return cache


async def until(predicate: Any, within: float = 10.0) -> None:
    """Poll a condition of the daemon's state (nothing to wait on), bounded in time."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def fetch(proxy: RunningProxy, track_id: str, headers: dict[str, str] | None = None
                ) -> tuple[int, bytes]:
    async with proxy.session.get(proxy.url(f"/proxy/{track_id}"), headers=headers) as resp:
        return resp.status, await resp.read()


def media_requests(googlevideo: FakeGooglevideo) -> int:
    return sum(1 for r in googlevideo.requests if r.kind != "watch")


async def test_a_track_is_fetched_whole_while_the_listener_is_in_its_first_bytes(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(3 * MiB, seed=3)
    googlevideo.add_track("WholeTrack1", data, title="Whole")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    cache = cache_of(proxy)
    async with proxy.session.get(proxy.url("/proxy/WholeTrack1")) as resp:
        assert resp.status == 200
        head = await resp.content.readexactly(64 * 1024)
        # The listener has taken 64 KiB; the download goes on at upstream's speed.
        await until(lambda: cache.complete("WholeTrack1") is not None)
        # Upstream gone for good: the rest comes from disk.
        await googlevideo.go_offline()
        rest = await resp.read()
    assert sha(head + rest) == sha(data)
    status = await (await proxy.session.get(proxy.url("/status"))).json()
    assert status["cache"]["tracks"] == 1
    assert status["cache"]["size_bytes"] == len(data)


async def test_a_replay_makes_no_ytdlp_call_and_no_upstream_request_even_offline(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(2 * MiB, seed=4)
    googlevideo.add_track("ReplayTrak1", data, title="Replay")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    status, body = await fetch(proxy, "ReplayTrak1")
    assert status == 200 and sha(body) == sha(data)
    await until(lambda: cache_of(proxy).complete("ReplayTrak1") is not None)
    watches, media = googlevideo.watch_hits["ReplayTrak1"], media_requests(googlevideo)
    await googlevideo.go_offline()
    for headers in (None, {"Range": "bytes=1000000-"}, {"Range": "bytes=5-9"}):
        status, body = await fetch(proxy, "ReplayTrak1", headers)
        start = int(headers["Range"][6:].split("-")[0]) if headers else 0
        stop = int(headers["Range"].split("-")[1]) + 1 if headers and headers["Range"][-1] != "-" \
            else len(data)
        assert status == (206 if headers else 200)
        assert body == data[start:stop]
    assert googlevideo.watch_hits["ReplayTrak1"] == watches
    assert media_requests(googlevideo) == media
    summary = cache_of(proxy).snapshot()
    assert summary.hits == 3
    assert summary.bytes_saved >= len(data)
    metrics = await (await proxy.session.get(proxy.url("/metrics"), headers={
        "Accept-Encoding": "identity"})).text()
    assert "ytproxy_cache_hits_total 3.0" in metrics


async def test_a_seek_beyond_what_is_fetched_moves_the_download_there_and_fills_the_rest(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(4 * MiB, seed=5)
    googlevideo.add_track("SeekAhead01", data, title="Seek")
    googlevideo.throttle_bytes_per_sec = 2 * MiB
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    cache = cache_of(proxy)
    async with proxy.session.get(proxy.url("/proxy/SeekAhead01")) as first:
        await first.content.readexactly(10_000)
        far = 3 * MiB + 123
        status, tail = await fetch(proxy, "SeekAhead01", {"Range": f"bytes={far}-"})
        assert status == 206 and tail == data[far:]
        entry = cache.files.get("SeekAhead01")
        assert entry is not None
        # The far range came before the middle: there was a hole meanwhile.
        assert any(start > 0 for start, _ in entry.ranges.as_tuple()) or entry.complete
    await until(lambda: cache.complete("SeekAhead01") is not None, within=20)
    entry = cache.complete("SeekAhead01")
    assert entry is not None
    assert sha(entry.path.read_bytes()) == sha(data)


@pytest.mark.parametrize("kind", ["reset", "truncate", "stall", "5xx", "revoke"])
async def test_upstream_faults_during_a_download_are_absorbed_byte_exact(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, kind: str,
) -> None:
    data = random_audio(1_200_000, seed=len(kind))
    googlevideo.add_track("FaultCache1", data, title="Faulty")
    fault = googlevideo.add_fault("FaultCache1", {
        "reset": Fault("reset", at_byte=300_000),
        "truncate": Fault("truncate", at_byte=600_000),
        "stall": Fault("stall", at_byte=400_000, stall_seconds=5),
        "5xx": Fault("status", status=503, times=3),
        "revoke": Fault("revoke", at_byte=300_000),
    }[kind])
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    status, body = await fetch(proxy, "FaultCache1")
    assert status == 200 and sha(body) == sha(data)
    assert fault.fired >= 1
    await until(lambda: cache_of(proxy).complete("FaultCache1") is not None)
    entry = cache_of(proxy).complete("FaultCache1")
    assert entry is not None and sha(entry.path.read_bytes()) == sha(data)


async def test_the_limit_evicts_the_least_recently_played_but_never_a_file_in_use(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ytproxy.cache")
    size = 12 * MiB  # more than the sockets between a listener and the daemon hold
    tracks = {f"EvictTrack{i}": random_audio(size, seed=10 + i) for i in range(3)}
    for track_id, data in tracks.items():
        googlevideo.add_track(track_id, data, title=track_id)
    limit = 2 * size - 1  # smaller than two tracks
    proxy = await make_proxy(cache={"max_size": limit}, **FAST)
    cache = cache_of(proxy)
    a, b, c = tracks
    status, body = await fetch(proxy, a)
    assert status == 200 and body == tracks[a]
    await until(lambda: cache.complete(a) is not None)
    # b needs a's room: a is evicted (nobody plays it).
    status, body = await fetch(proxy, b)
    assert status == 200 and body == tracks[b]
    await until(lambda: cache.complete(b) is not None)
    assert cache.files.get(a) is None and not (cache.files.directory / f"{a}.audio").exists()
    assert cache.files.used <= limit
    assert "evicted" in caplog.text
    # b is being played (a listener holds it): c cannot take its room, so c is
    # relayed as without a cache, and b plays on whole.
    googlevideo.throttle_bytes_per_sec = 400_000
    async with proxy.session.get(proxy.url(f"/proxy/{b}")) as playing:
        head = await playing.content.readexactly(1000)
        googlevideo.throttle_bytes_per_sec = None
        status, body = await fetch(proxy, c)
        assert status == 200 and body == tracks[c]
        assert cache.files.get(c) is None
        assert cache.complete(b) is not None
        assert head + await playing.read() == tracks[b]
    assert cache.files.used <= limit


async def test_cache_files_and_directory_are_private(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    googlevideo.add_track("PrivateTrk1", random_audio(300_000), title="Private")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    await fetch(proxy, "PrivateTrk1")
    await until(lambda: cache_of(proxy).complete("PrivateTrk1") is not None)
    directory = cache_of(proxy).files.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "PrivateTrk1.audio").stat().st_mode) == 0o600


async def test_off_with_max_size_0_relays_and_writes_nothing(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
) -> None:
    data = random_audio(500_000, seed=9)
    googlevideo.add_track("NoCacheTrk1", data, title="Off")
    proxy = await make_proxy(cache={"max_size": 0}, **FAST)
    assert proxy.app[CACHE] is None
    status, body = await fetch(proxy, "NoCacheTrk1")
    assert status == 200 and body == data
    assert not (tmp_path / "cache").exists()
    status_json = await (await proxy.session.get(proxy.url("/status"))).json()
    assert status_json["cache"] == {"enabled": False, "limit_bytes": 0}


async def test_a_complete_file_survives_a_restart_and_plays_with_upstream_gone(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(1_000_000, seed=21)
    googlevideo.add_track("Restarted01", data, title="Restart")
    first = await make_proxy(cache=CACHE_ON, **FAST)
    await fetch(first, "Restarted01")
    await until(lambda: cache_of(first).complete("Restarted01") is not None)
    await first.server.close()  # writes the records, closes the store
    await googlevideo.go_offline()
    second = await make_proxy(cache=CACHE_ON, **FAST)
    status, body = await fetch(second, "Restarted01")
    assert status == 200 and body == data


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``path``; the reason when this machine cannot."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None:
        return "no mount command (apt-get install mount)"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


async def test_a_full_disk_turns_the_download_into_a_relay_with_one_warning(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mountpoint = tmp_path / "smalldisk"
    reason = _mount_tmpfs(mountpoint, "1m")
    if reason is not None:
        pytest.skip(reason)
    try:
        caplog.set_level(logging.INFO)
        data = random_audio(3 * MiB, seed=33)  # three times the disk
        googlevideo.add_track("FullDisk001", data, title="Full")
        proxy = await make_proxy(cache={"max_size": 64 * MiB, "directory": str(mountpoint)},
                                 **FAST)
        status, body = await fetch(proxy, "FullDisk001")
        assert status == 200 and sha(body) == sha(data)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and "relayed from upstream" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
        assert cache_of(proxy).files.get("FullDisk001") is None
        assert not list(mountpoint.glob("*.audio"))
        assert cache_of(proxy).snapshot().disk_full == 1
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)  # noqa: ASYNC221


async def test_prefetch_downloads_without_a_listener(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(800_000, seed=41)
    googlevideo.add_track("Prefetch001", data, title="Ahead")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    async with proxy.session.post(proxy.url("/cache/prefetch"),
                                  json={"ids": ["Prefetch001"]}) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert answer["results"] == {"Prefetch001": "cached"}
    await googlevideo.go_offline()
    status, body = await fetch(proxy, "Prefetch001")
    assert status == 200 and body == data
    async with proxy.session.get(proxy.url("/cache")) as resp:
        listing = await resp.json()
    assert [t["id"] for t in listing["tracks"]] == ["Prefetch001"]
    assert listing["tracks"][0]["complete"] is True
    async with proxy.session.delete(proxy.url("/cache")) as resp:
        assert (await resp.json())["dropped"] == 1
    assert cache_of(proxy).files.get("Prefetch001") is None


async def test_a_bad_prefetch_request_is_a_clear_error(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    for body in ({"ids": "x"}, {"ids": ["not an id!"]}, {"nope": []}):
        async with proxy.session.post(proxy.url("/cache/prefetch"), json=body) as resp:
            assert resp.status == 400
            assert "ids" in (await resp.json())["message"]


async def test_a_listener_of_a_download_is_shown_with_its_source(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(3 * MiB, seed=51)
    googlevideo.add_track("ShownTrack1", data, title="Shown")
    googlevideo.throttle_bytes_per_sec = 1 * MiB
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    async with proxy.session.get(proxy.url("/proxy/ShownTrack1")) as resp:
        await resp.content.readexactly(1000)
        status = await (await proxy.session.get(proxy.url("/status"))).json()
        (stream,) = status["streams"]
        assert stream["source"] == "download"
        assert 0 <= stream["downloaded_percent"] < 100
        page = await (await proxy.session.get(proxy.url("/"))).text()
        assert "download (" in page and "Cache" in page
        googlevideo.throttle_bytes_per_sec = None
        await resp.read()


async def test_max_size_takes_units_and_names_a_bad_value() -> None:
    from ytproxy.config import ConfigError, config_from_mapping
    assert config_from_mapping({"cache": {"max_size": "2 GiB"}}).cache.max_size == 2 * 1024**3
    assert config_from_mapping({"cache": {"max_size": "500 MB"}}).cache.max_size == 500_000_000
    assert config_from_mapping({"cache": {"max_size": 0}}).cache.enabled is False
    for bad in ("lots", "2 GiBs", -1, True):
        with pytest.raises(ConfigError) as raised:
            config_from_mapping({"cache": {"max_size": bad}})
        assert "cache.max_size" in str(raised.value)



def test_ranges_merge_and_name_the_next_gap_from_a_position() -> None:
    from ytproxy.cache.ranges import Ranges
    held = Ranges([(10, 20), (30, 40)])
    held.add(20, 30)  # touching ranges merge
    assert held.as_tuple() == ((10, 40),)
    held.add(50, 60)
    assert held.held_from(15) == 25 and held.held_from(45) == 0 and held.held_from(40) == 0
    assert held.next_gap(12, 100) == (40, 50)  # from where a listener needs bytes
    assert held.next_gap(55, 100) == (60, 100)
    assert held.next_gap(0, 100) == (0, 10)
    assert held.total == 40 and not held.covers(100)
    done = Ranges([(0, 5), (5, 100)])
    assert done.covers(100) and done.next_gap(50, 100) is None
    wrap = Ranges([(50, 100)])
    assert wrap.next_gap(70, 100) == (0, 50)  # the end is in: fill the start


async def test_two_listeners_far_apart_both_get_their_bytes(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    data = random_audio(6 * MiB, seed=61)
    googlevideo.add_track("FarApart001", data, title="Apart")
    googlevideo.throttle_bytes_per_sec = 3 * MiB
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    far = 4 * MiB

    async def listener(start: int) -> bytes:
        headers = {"Range": f"bytes={start}-"} if start else None
        return (await fetch(proxy, "FarApart001", headers))[1]

    async with asyncio.timeout(60):
        near_body, far_body = await asyncio.gather(listener(0), listener(far))
    assert near_body == data and far_body == data[far:]
    await until(lambda: cache_of(proxy).complete("FarApart001") is not None)


async def test_removing_a_track_drops_its_file(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
) -> None:
    googlevideo.add_track("RemovedTrk1", random_audio(200_000, seed=71), title="Gone")
    proxy = await make_proxy(cache=CACHE_ON, **FAST)
    await fetch(proxy, "RemovedTrk1")
    await until(lambda: cache_of(proxy).complete("RemovedTrk1") is not None)
    path = cache_of(proxy).files.directory / "RemovedTrk1.audio"
    assert path.exists()
    async with proxy.session.delete(proxy.url("/tracks/RemovedTrk1")) as resp:
        assert resp.status == 200
    assert cache_of(proxy).files.get("RemovedTrk1") is None and not path.exists()


async def test_a_cache_directory_that_cannot_be_made_leaves_the_cache_off(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = random_audio(300_000, seed=81)
    googlevideo.add_track("NoDirTrack1", data, title="Relayed")
    proxy = await make_proxy(cache={"max_size": 64 * MiB, "directory": str(blocker / "audio")},
                             **FAST)
    assert proxy.app[CACHE] is None
    assert "cannot create the cache directory" in caplog.text and "the cache is off" in caplog.text
    status, body = await fetch(proxy, "NoDirTrack1")
    assert status == 200 and body == data
