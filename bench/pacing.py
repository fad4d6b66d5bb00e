"""``python -m bench pacing``: a fast reader after upstream kept it waiting.

The relay paces a listener it judges slow (small upstream reads); judged by
wall time, one upstream stall or refreshed URL early in a stream made a reader
that takes hundreds of MB/s look slow, and kept it paced to the end (issue 26:
11.6 MB in 29.9 s after a 15 s stall, against 0.29 s).  This reads an 11 MB
track as fast as a socket goes (bench.httpclient, in a thread) through the
real app, relay only (``[cache] max_size = 0``), against the tests' fake
googlevideo on 127.0.0.1, once clean and once after each fault, and judges the
time left after upstream's own wait: at most 1 s.

- a 15 s stall early in the stream (the fake stops sending, then resets; the
  daemon's ``read_timeout`` is raised to 20 s so the stall is seen whole);
- a 403 early in the stream (the URL revoked), so yt-dlp is asked for a fresh
  one: its wait is the time from the 403 to the fresh URL's first request;
- the same stall in a download, with the cache on (the listener is served the
  file as it fills, and waits for the download meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bench.httpclient import fetch
from tests.fakes.googlevideo import FakeGooglevideo, Fault
from tests.proxy_fixture import proxy_config, random_audio
from ytproxy.http.app import create_app
from ytproxy.loops import loop_factory, loop_name

SIZE = 11_000_000
VID = "BenchPacing"
STALL = 15.0
AT_BYTE = 1_500_000  # early: in the second range, before the reader is unpaced
TARGET_S = 1.0  # the time left after upstream's own wait
MiB = 1 << 20


@dataclasses.dataclass
class Case:
    name: str
    fault: Fault | None
    cache: bool = False

    def upstream_wait(self, fake: FakeGooglevideo) -> float:
        """Seconds upstream itself kept the reader waiting in this run."""
        if self.fault is None:
            return 0.0
        if self.fault.kind == "stall":
            return self.fault.stall_seconds
        # From the 403 to the first request with the fresh URL.
        refused = next(r.at for r in fake.requests if r.kind == "revoked")
        return next(r.at for r in fake.requests if r.status == 206 and r.at > refused) - refused


CASES = (
    Case("clean, relay only", None),
    Case(f"{STALL:.0f} s upstream stall, relay only",
         Fault("stall", at_byte=AT_BYTE, stall_seconds=STALL)),
    Case("403, URL refreshed by yt-dlp, relay only", Fault("revoke", at_byte=AT_BYTE)),
    Case(f"{STALL:.0f} s stall of the download, cache on",
         Fault("stall", at_byte=AT_BYTE, stall_seconds=STALL), cache=True),
)


async def one_run(data: bytes, case: Case) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeGooglevideo()
        await fake.start()
        try:
            fake.add_track(VID, data, title="Bench pacing")
            config = proxy_config(fake, Path(tmp), upstream={"chunk_size": MiB,
                                                             "read_timeout": STALL + 5})
            if case.cache:
                config = config.replace("cache", max_size=64 * MiB)
            server = TestServer(create_app(config), host="127.0.0.1")
            await server.start_server()
            try:
                port = server.port
                assert port is not None
                path = f"/proxy/{VID}"
                # Resolved before timing (a HEAD: no download started either):
                # the fault is upstream's, not yt-dlp's first call.
                async with aiohttp.ClientSession() as session, \
                        session.head(f"http://127.0.0.1:{port}{path}") as resp:
                    if resp.status != 200:
                        raise SystemExit(f"the daemon answered {resp.status} to a HEAD")
                if case.fault is not None:
                    fake.add_fault(VID, dataclasses.replace(case.fault))
                digest = hashlib.sha256()
                started = time.monotonic()
                got = await asyncio.to_thread(fetch, "127.0.0.1", port, path, hasher=digest,
                                              timeout=STALL * 4)
                elapsed = time.monotonic() - started
                if got.status != 200 or got.digest != hashlib.sha256(data).digest():
                    raise SystemExit(f"{case.name}: status {got.status}, bytes differ from "
                                     "the source: the relay is broken")
                wait = case.upstream_wait(fake)
                return {"total_s": elapsed, "upstream_wait_s": wait, "after_s": elapsed - wait}
            finally:
                await server.close()
        finally:
            await fake.close()


async def run(runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    logging.basicConfig(level=logging.CRITICAL)
    data = random_audio(SIZE, seed=26)
    rows = []
    for case in CASES:
        measured = [await one_run(data, case) for _ in range(runs)]
        row: dict[str, Any] = {"case": case.name, "judged": case.fault is not None}
        for key in ("total_s", "upstream_wait_s", "after_s"):
            row[key] = statistics.median(m[key] for m in measured)
        row["met"] = row["after_s"] <= TARGET_S
        rows.append(row)
        log(f"{case.name}: {row['total_s']:.2f} s")
    return {"bytes": SIZE, "runs": runs, "event_loop": loop_name(), "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = [f"| read {results['bytes'] / 1e6:.0f} MB as fast as a socket goes | total | "
             "upstream's own wait | the rest | target |",
             "| --- | --- | --- | --- | --- |"]
    for row in results["rows"]:
        if row["judged"]:
            met = "yes" if row["met"] else "**no**"
            target = f"<= {TARGET_S:.0f} s after upstream's wait: {met}"
        else:
            target = "—"
        lines.append(f"| {row['case']} | {row['total_s']:.2f} s | "
                     f"{row['upstream_wait_s']:.2f} s | {row['after_s']:.2f} s | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pacing",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="timed runs per case (1)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        results = runner.run(run(args.runs, print))
    text = table(results)
    print(f"\n(event loop: {results['event_loop']}; median of {args.runs} run(s))\n{text}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "table": text}, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
