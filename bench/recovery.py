"""Recovery time per fault kind: how long a stream is held up by each upstream fault.

Runs the real daemon against the fake googlevideo on loopback with the
default [retry] and [upstream] settings, streams a track once clean and then
once per fault, and reports the extra time each fault cost (median over
--runs), checking every time that the bytes equal the source.

    python -m bench.recovery [--runs 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import proxy_config, random_audio
from ytproxy.http.app import create_app

SIZE = 4 * 1024 * 1024
VID = "BenchFault1"

# name -> (media faults, statuses the watch page answers first)
FAULTS: dict[str, tuple[list[Fault], list[int]]] = {
    "reset mid-range": ([Fault("reset", at_byte=SIZE // 3)], []),
    "truncated body": ([Fault("truncate", at_byte=SIZE // 3)], []),
    "5xx burst (3x 503)": ([Fault("status", status=503, times=3)], []),
    "429 + Retry-After: 1": ([Fault("status", status=429, retry_after="1")], []),
    "stall > read_timeout": ([Fault("stall", at_byte=SIZE // 3, stall_seconds=120)], []),
    "revoked URL (403)": ([Fault("revoke", at_byte=SIZE // 3)], []),
    "resolver 503 twice during refresh": ([Fault("revoke", at_byte=SIZE // 3)], [503, 503]),
}


def injector(name: str) -> Callable[[FakeGooglevideo], None]:
    def inject(fake: FakeGooglevideo) -> None:
        faults, watch = FAULTS[name]
        for fault in faults:  # fresh copies: a Fault counts down as it fires
            fake.add_fault(VID, dataclasses.replace(fault))
        if watch:
            fake.set_watch_faults(VID, list(watch))

    return inject


async def one_run(data: bytes, inject: Callable[[FakeGooglevideo], None] | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeGooglevideo()
        await fake.start()
        try:
            fake.add_track(VID, data, title="Bench")
            config = proxy_config(fake, Path(tmp))
            config = config.replace("upstream", chunk_size=1_048_576)
            server = TestServer(create_app(config), host="127.0.0.1")
            await server.start_server()
            try:
                async with aiohttp.ClientSession() as session:
                    url = f"http://127.0.0.1:{server.port}/proxy/{VID}"
                    async with session.head(url) as resp:  # resolve before timing
                        assert resp.status == 200
                    if inject is not None:
                        inject(fake)
                    started = time.monotonic()
                    async with session.get(url) as resp:
                        body = await resp.read()
                    elapsed = time.monotonic() - started
                if hashlib.sha256(body).digest() != hashlib.sha256(data).digest():
                    raise SystemExit("bytes differ from the source: the relay is broken")
                return elapsed
            finally:
                await server.close()
        finally:
            await fake.close()


async def main(runs: int, out: str | None) -> None:
    logging.basicConfig(level=logging.CRITICAL)
    data = random_audio(SIZE, seed=42)
    baseline = statistics.median([await one_run(data, None) for _ in range(runs)])
    rows = []
    print(f"{'fault':36} {'median extra s':>14} {'min':>7} {'max':>7}  bytes")
    for name in FAULTS:
        extra = [await one_run(data, injector(name)) - baseline for _ in range(runs)]
        rows.append({"fault": name, "median_s": statistics.median(extra),
                     "min_s": min(extra), "max_s": max(extra), "identical": True})
        print(f"{name:36} {statistics.median(extra):14.3f} {min(extra):7.3f} "
              f"{max(extra):7.3f}  identical", flush=True)
    print(f"\nclean 4 MiB stream: {baseline:.3f} s (median of {runs}); "
          "defaults: read_timeout 10 s, backoff base 0.25 s cap 8 s")
    if out:
        report = json.dumps({"baseline_s": baseline, "runs": runs, "rows": rows}, indent=2)
        await asyncio.to_thread(Path(out).write_text, report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", dest="out")
    args = parser.parse_args()
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    asyncio.run(main(args.runs, args.out))
