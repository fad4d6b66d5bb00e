"""``python -m bench listings``: search and radio listing time through ytproxy
against the same listing through yt-dlp alone (the same fake, the same run).

The fake is the tests' FakeTube with its YouTube Music-shaped listings, read by
the real yt-dlp through the test-only extractor plugin (tests/ytdlp_plugins),
all on 127.0.0.1.  Through ytproxy: ``GET /search`` of the real daemon (a child
process: the HTTP request, the yt-dlp call in its worker process, the songs
stored), and a track's mix through ``Listings.radio`` (what ``ytproxy radio``
and autoplay run: the worker process, the store) in a process of its own.
Alone: one ``YoutubeDL`` per call with the same flat options, in a process of
its own too.  The fake serves from this process, which measures nothing itself
but the HTTP client's wait for ``GET /search``.
Target: ytproxy adds at most 20 ms (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.servers import HOST, REPO, Daemon

PLUGINS = REPO / "tests" / "ytdlp_plugins"
SONGS = 40  # songs in the catalogue (each one a search hit)
LISTED = 25  # songs a listing gives (a page of YouTube Music's answer)
TARGET_MS = 20.0
QUERY = "bench song"


def _song_id(i: int) -> str:
    return f"benchSong{i:02d}"


class _FakeOnItsLoop:
    """FakeTube, served by an event loop in a thread of its own."""

    def __init__(self) -> None:
        # The plugin, for yt-dlp here and in the worker processes this one starts.
        sys.path.insert(0, str(PLUGINS))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
        from tests.fakes.tube import FakeTube

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeTube()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(30)
        for i in range(SONGS):
            self.fake.add_song(_song_id(i), b"\0" * 1024, artist=f"Bench Artist {i}",
                               title=f"Bench Song {i}", duration=180.0 + i)
        self.seed = _song_id(0)
        self.fake.mixes[self.seed] = [_song_id(i) for i in range(SONGS)]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


class _Measurer:
    """A process of its own (``python -m bench.listings child KIND ...``) that
    times one listing for each line it is sent: the yt-dlp it measures never
    shares an interpreter with the fake, and the figures can take turns."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.listings", "child", *args], cwd=REPO,
            env={**os.environ}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def once(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the measuring process exited ({self.proc.wait()})")
        return float(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ytdlp_alone(url: str) -> Callable[[], object]:
    import yt_dlp

    options = {"quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
               "extract_flat": "in_playlist", "playlistend": LISTED}

    def run() -> object:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
        assert isinstance(info, dict) and len(info["entries"]) == LISTED, info
        return info

    return run


def _get_search(port: int) -> Callable[[], object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://{HOST}:{port}/search?q={quote(QUERY)}&limit={LISTED}"

    def run() -> object:
        with opener.open(url, timeout=60) as resp:
            body = json.load(resp)
        assert len(body["results"]) == LISTED, body
        return body

    return run


def _radio(workdir: Path, watch: str, radio: str, seed: str
           ) -> tuple[Callable[[], object], Callable[[], None]]:
    """One ``Listings.radio`` per call, on a loop kept between calls (as in a
    daemon); and what closes it."""
    from ytproxy.config import Config
    from ytproxy.library.listings import Listings
    from ytproxy.library.store import Store
    from ytproxy.resolve.resolver import Resolver

    config = Config().replace("resolver", source_url_template=watch,
                              radio_url_template=radio, max_calls_per_minute=6000)
    loop = asyncio.new_event_loop()
    resolver = Resolver(config.resolver)
    store = loop.run_until_complete(Store.open(workdir / "radio-tracks.db"))
    listings = Listings(store=store, list_flat=resolver.listing,
                        source_url_for=resolver.source_url_for,
                        search_url_template=config.resolver.search_url_template,
                        radio_url_template=config.resolver.radio_url_template)

    def run() -> object:
        songs = loop.run_until_complete(listings.radio(seed, limit=LISTED))
        assert len(songs) == LISTED
        return songs

    def close() -> None:
        loop.run_until_complete(resolver.close())
        loop.run_until_complete(store.close())
        loop.close()

    return run, close


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ytproxy-bench-listings-"))
    served = _FakeOnItsLoop()
    fake = served.fake
    daemon: Daemon | None = None
    results: dict[str, Any] = {"runs": args.runs, "listed": LISTED}
    try:
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        daemon = Daemon(workdir, fake.port, name="listings", log_level="warning", env=env,
                        extra={"resolver": {
                            "source_url_template": fake.watch_url_template,
                            "search_url_template": fake.search_url_template,
                            "radio_url_template": fake.radio_url_template}})
        daemon.start()
        search_url = fake.search_url_template.replace("{query}", quote(QUERY, safe=""))
        radio_url = fake.radio_url_template.replace("{id}", served.seed)
        print(f"fake on {HOST}:{fake.port}; ytproxy on {HOST}:{daemon.port}; "
              f"{args.runs} runs each after one warm-up, {LISTED} songs a listing")
        before = fake.listing_calls()
        measurers = [_Measurer("alone", search_url),
                     _Measurer("radio", str(workdir), fake.watch_url_template,
                               fake.radio_url_template, served.seed),
                     _Measurer("alone", radio_url)]
        try:
            figures: dict[str, Callable[[], float]] = {
                "search_ytproxy": partial(_seconds, _get_search(daemon.port)),
                "search_ytdlp_alone": measurers[0].once,
                "radio_ytproxy": measurers[1].once,
                "radio_ytdlp_alone": measurers[2].once,
            }
            rows: dict[str, list[float]] = {name: [] for name in figures}
            # Turn by turn, so a load that comes and goes weighs on each alike;
            # the first turn warms up (imports, worker processes) and is not kept.
            for turn in range(args.runs + 1):
                for name, measure in figures.items():
                    took = measure()
                    if turn:
                        rows[name].append(took)
        finally:
            for measurer in measurers:
                measurer.close()
        calls = fake.listing_calls() - before
        results["listing_calls"] = calls
        results["listing_calls_expected"] = 4 * (args.runs + 1)
        results["player_requests"] = len(fake.player_requests)
        for name, times in rows.items():
            results[f"{name}_p50_ms"] = statistics.median(times) * 1000
            results[f"{name}_max_ms"] = max(times) * 1000
        for kind in ("search", "radio"):
            added = results[f"{kind}_ytproxy_p50_ms"] - results[f"{kind}_ytdlp_alone_p50_ms"]
            results[f"{kind}_added_ms"] = added
            results[f"{kind}_met"] = added <= TARGET_MS
    finally:
        if daemon is not None:
            daemon.stop()
        served.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| listing | through ytproxy (p50 / max) | yt-dlp alone (p50 / max) | "
             "ytproxy adds | target |",
             "| --- | --- | --- | --- | --- |"]
    names = {"search": f"search, {results['listed']} songs (GET /search)",
             "radio": f"radio (a track's mix), {results['listed']} songs (Listings.radio)"}
    for kind, name in names.items():
        ours = (f"{results[f'{kind}_ytproxy_p50_ms']:.1f} / "
                f"{results[f'{kind}_ytproxy_max_ms']:.1f} ms")
        alone = (f"{results[f'{kind}_ytdlp_alone_p50_ms']:.1f} / "
                 f"{results[f'{kind}_ytdlp_alone_max_ms']:.1f} ms")
        added = results[f"{kind}_added_ms"]
        met = "yes" if results[f"{kind}_met"] else "**no**"
        lines.append(f"| {name} | {ours} | {alone} | {added:+.1f} ms | "
                     f"<= {TARGET_MS:.0f} ms: {met} |")
    calls_ok = (results["listing_calls"] == results["listing_calls_expected"]
                and not results["player_requests"])
    lines.append(f"| yt-dlp calls: listings asked of the fake / entries resolved | "
                 f"{results['listing_calls']} / {results['player_requests']} | "
                 f"{results['listing_calls_expected']} / 0 expected | — | one per listing, "
                 f"none per entry: {'yes' if calls_ok else '**no**'} |")
    return "\n".join(lines)


def child(argv: list[str]) -> None:
    """A measuring process: for each line read, one listing, and its seconds printed."""
    sys.path.insert(0, str(PLUGINS))
    close: Callable[[], None] | None = None
    if argv[0] == "alone":
        run_once = _ytdlp_alone(argv[1])
    else:
        workdir, watch, radio, seed = argv[1:5]
        run_once, close = _radio(Path(workdir), watch, radio, seed)
    try:
        for _ in sys.stdin:
            print(_seconds(run_once), flush=True)
    finally:
        if close is not None:
            close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench listings",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per figure (20)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    results = run(args)
    text = table(results)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "table": text}, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
    else:
        raise SystemExit(main(sys.argv[1:]))
