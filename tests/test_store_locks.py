"""Another process's write lock on the store delays no read: /health, /tracks
and a play's first byte answer while a write of ours waits for that lock.

The app runs on a real socket with a real SQLite file; the other writer is a
real process holding ``BEGIN IMMEDIATE`` until the test lets it go.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, random_audio
from ytproxy.http.app import STORE, TRACKS

STORED = "LockStored1"  # stored, its URL due for a refresh: resolved, relayed
CACHED = "LockCached1"  # on disk whole in the download-ahead cache
# A read that waited for the write would wait this long for the lock (the
# busy timeout), far past the time the test gives each read.
BUSY_TIMEOUT = 120.0
READ_WITHIN = 30.0

# Takes the write lock, says so, and holds it until told (or, should the test
# die, for at most 200 s).
HOLDER = """
import signal, sqlite3, sys
signal.alarm(200)
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


class LockHolder:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(30):
            assert await self.proc.stdout.readline() == b"released\n"
            assert await self.proc.wait() == 0


HoldLock = Callable[[Path], Awaitable[LockHolder]]


@pytest.fixture
async def hold_lock() -> AsyncIterator[HoldLock]:
    started: list[asyncio.subprocess.Process] = []

    async def start(db: Path) -> LockHolder:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, str(db),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        started.append(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            assert await proc.stdout.readline() == b"locked\n"
        return LockHolder(proc)

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def first_byte(proxy: RunningProxy, track_id: str) -> bytes:
    async with asyncio.timeout(READ_WITHIN):
        async with proxy.session.get(proxy.url(f"/proxy/{track_id}")) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.content.readexactly(1)


async def test_reads_answer_while_a_write_waits_for_another_process_lock(
    tmp_path: Path, googlevideo: FakeGooglevideo, make_proxy: ProxyFactory,
    hold_lock: HoldLock,
) -> None:
    stored, cached = random_audio(200_000, seed=5), random_audio(200_000, seed=6)
    googlevideo.add_track(STORED, stored, title="Stored")
    googlevideo.add_track(CACHED, cached, title="Cached")
    # URLs valid for two minutes, inside the refresh margin: every play of STORED
    # resolves again, and the fresh URL is stored in the background.
    googlevideo.url_ttl = 120
    proxy = await make_proxy(store={"busy_timeout": BUSY_TIMEOUT},
                             cache={"max_size": 64 * 1_048_576})
    async with proxy.session.post(proxy.url("/tracks"), json={"id": STORED}) as resp:
        assert resp.status == 201, await resp.text()
    async with proxy.session.post(proxy.url("/cache/prefetch"), json={"ids": [CACHED]}) as resp:
        assert (await resp.json())["results"] == {CACHED: "cached"}
    store = proxy.app[STORE]
    before = await store.get(STORED)
    assert before is not None

    holder = await hold_lock(store.path)
    # A write that no listener waits for, now waiting on the other process's lock:
    # it gets its turn on the store before any read below is asked for.
    write = asyncio.create_task(store.mark_played(STORED))
    await asyncio.sleep(0)
    try:
        async with asyncio.timeout(READ_WITHIN):
            async with proxy.session.get(proxy.url("/health")) as resp:
                assert resp.status == 200, await resp.text()
            async with proxy.session.get(proxy.url("/tracks")) as resp:
                assert resp.status == 200
                assert {t["id"] for t in (await resp.json())["tracks"]} == {STORED, CACHED}
        store.CACHE_SECONDS = 0.0  # the play's own lookup goes to the database
        assert await first_byte(proxy, CACHED) == cached[:1]
        assert await first_byte(proxy, STORED) == stored[:1]
        # All answered while the write still waited, the lock still held.
        assert not write.done()
        assert holder.proc.returncode is None
    finally:
        await holder.release()
    async with asyncio.timeout(READ_WITHIN):
        await write
        await proxy.app[TRACKS].drain()
    after = await store.get(STORED)
    assert after is not None and after.play_count == before.play_count + 1
    # The URL resolved while the lock was held was stored once it was released.
    assert before.resolved_at is not None and after.resolved_at is not None
    assert after.resolved_at > before.resolved_at
