"""The benchmark suite: ytproxy side by side with direct fetches and nginx ``proxy_pass``.

Everything runs on this machine, on 127.0.0.1, with no internet: an upstream
(nginx serving generated files, or aiohttp when nginx is not installed), nginx
as a peer proxy in front of it (with its default buffers, and tuned for big
bodies), and the real ytproxy daemon as a child process whose watch pages are
read by the real yt-dlp (a second one on asyncio's own loop for the throughput
figures, and one whose tracks come from an HTTPS nginx for the ``tls``
section).  Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import platform
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

from bench.httpclient import Fetched, fetch
from bench.listeners import MPD_HEADERS, raise_nofile
from bench.servers import (
    HOST,
    REPO,
    BareRelay,
    Daemon,
    Media,
    Nginx,
    Upstream,
    free_port,
    make_certificate,
    make_media,
    peer_proxy,
    tls_upstream,
    tuned_peer_proxy,
    write_watch_page,
)

MB = 1_000_000
MiB = 1 << 20

# Track ids (11 characters of the YouTube alphabet) -> the file their page points at.
BIG, SMALL, HUGE = "bench200MBx", "bench10MBxx", "bench1GBxxx"
BURST = "burstFlight"
# The same 200 MB and 10 MB files from the TLS upstream.
TLS_BIG, TLS_SCALE = "tlsBig200MB", "tlsScale10M"
SECTIONS = ("throughput", "ttfb", "scale", "memory", "singleflight", "tls", "cache")
# The cache section: songs downloaded ahead (as MPD look-ahead does), and tracks
# downloaded at once while the daemon's memory is watched.
NEXT_SONGS = 20
DOWNLOADS = 10
# Seconds after the last listener joined before "all playing" CPU is measured.
SETTLE = 10.0


def cold_id(i: int) -> str:
    return f"coldRun{i:04d}"


def scale_id(i: int) -> str:
    return f"scaleLvl{i:03d}"


def next_id(i: int) -> str:
    return f"nextSong{i:03d}"


def download_id(i: int) -> str:
    return f"download{i:03d}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.root = workdir / "www"
        self.results: dict[str, Any] = {}
        self.upstream = Upstream(workdir, self.root)
        self.peer: Nginx | None = None
        self.peer_port = 0
        self.tuned_peer: Nginx | None = None
        self.tuned_peer_port = 0
        self.media: dict[str, Media] = {}
        self.daemon: Daemon | None = None
        self.log = print

    # ---------------------------------------------------------------- set-up

    def prepare(self) -> None:
        free = shutil.disk_usage(self.workdir).free
        # Media, and the cache section's files (its downloads, next songs, 200 MB).
        need = 220 * MB + 10 * MB + 64 * MiB + (DOWNLOADS + 1) * 200 * MB + NEXT_SONGS * 10 * MB
        if free < need:
            raise SystemExit(f"need {need / MB:.0f} MB free in {self.workdir}, "
                             f"have {free / MB:.0f}")
        self.log(f"generating media in {self.root} (200 MB dense, 10 MB dense, 1 GB sparse)")
        self.media = make_media(self.root, {
            "200m.webm": (200 * MB, False),
            "10m.webm": (10 * MB, False),
            "1g.webm": (1000 * MB, True),
        })
        self.upstream.start()
        expire = int(time.time() + 6 * 3600)

        def page(track_id: str, media: Media) -> None:
            # googlevideo URLs carry clen= (the size) and expire=; the resolver reads both.
            url = self.upstream.url(f"{media.path}?clen={media.size}&expire={expire}")
            write_watch_page(self.root, track_id, url, f"bench {media.name}")

        page(BIG, self.media["200m.webm"])
        page(SMALL, self.media["10m.webm"])
        page(HUGE, self.media["1g.webm"])
        page(BURST, self.media["10m.webm"])
        for i in range(self.args.cold + 1):
            page(cold_id(i), self.media["10m.webm"])
        for i in range(len(self.args.listeners)):
            page(scale_id(i), self.media["10m.webm"])
        for i in range(NEXT_SONGS):
            page(next_id(i), self.media["10m.webm"])
        for i in range(DOWNLOADS):
            page(download_id(i), self.media["200m.webm"])
        upstream = "nginx " + _nginx_version() if self.upstream.kind == "nginx" else (
            "aiohttp static file server (nginx is not installed: `apt-get install nginx` "
            "to use it; no nginx peer-proxy figures either)")
        self.log(f"upstream: {upstream} on {HOST}:{self.upstream.port}")
        if Nginx.available():
            self.peer_port = free_port()
            self.peer = peer_proxy(self.workdir, self.upstream.port)
            self.peer.start(self.peer_port)
            self.log(f"peer proxy: nginx proxy_pass (buffered, default buffers) on "
                     f"{HOST}:{self.peer_port}")
            self.tuned_peer_port = free_port()
            self.tuned_peer = tuned_peer_proxy(self.workdir, self.upstream.port)
            self.tuned_peer.start(self.tuned_peer_port)
            self.log(f"peer proxy: nginx proxy_pass tuned (proxy_buffers 16 256k, "
                     f"keepalive upstream) on {HOST}:{self.tuned_peer_port}")
        self.daemon = Daemon(self.workdir, self.upstream.port, log_level=self.args.log_level)
        self.daemon.start()
        self.log(f"ytproxy: pid {self.daemon.proc.pid if self.daemon.proc else '?'} on "
                 f"{HOST}:{self.daemon.port}, logs in {self.workdir}")
        # Resolve (and store) the tracks the warm figures use: real yt-dlp, local pages.
        for track_id in (BIG, SMALL, HUGE):
            got = self.get_daemon(f"/proxy/{track_id}", first_byte_only=True)
            if got.status != 200:
                raise SystemExit(f"ytproxy answered {got.status} for {track_id}; "
                                 f"see {self.workdir}/daemon-1.log")

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        for peer in (self.peer, self.tuned_peer):
            if peer is not None:
                peer.stop()
        self.upstream.stop()

    # ---------------------------------------------------------------- helpers

    def get_daemon(self, path: str, **kw: Any) -> Fetched:
        assert self.daemon is not None
        return fetch(HOST, self.daemon.port, path, **kw)

    def get_direct(self, path: str, **kw: Any) -> Fetched:
        return fetch(HOST, self.upstream.port, path, **kw)

    def get_peer(self, path: str, **kw: Any) -> Fetched:
        return fetch(HOST, self.peer_port, path, **kw)

    def get_tuned_peer(self, path: str, **kw: Any) -> Fetched:
        return fetch(HOST, self.tuned_peer_port, path, **kw)

    def other_daemon(self, name: str, **kw: Any) -> Daemon:
        """A second daemon beside the run's own, started, with BIG resolved."""
        daemon = Daemon(self.workdir, self.upstream.port, log_level=self.args.log_level,
                        name=name, **kw)
        daemon.start()
        got = fetch(HOST, daemon.port, f"/proxy/{BIG}", first_byte_only=True)
        if got.status != 200:
            daemon.stop()
            raise SystemExit(f"ytproxy ({name}) answered {got.status} for {BIG}; "
                             f"see {self.workdir}/{name}-1.log")
        return daemon

    # ---------------------------------------------------------------- 1. throughput

    def throughput(self) -> None:
        big = self.media["200m.webm"]
        runs = self.args.runs
        self.log(f"\n1. relay throughput: one {big.size / MB:.0f} MB stream, median of {runs}")
        expected = _file_digest(self.root / "media" / big.name)
        check = self.get_daemon(f"/proxy/{BIG}", hasher=hashlib.sha256())
        identical = check.digest == expected and check.body_bytes == big.size
        self.log(f"   ytproxy bytes identical to the file: {identical}")
        assert self.daemon is not None
        # The run's daemon is on server.event_loop "auto" (uvloop where installed);
        # a second one, side by side, on asyncio's own loop shows what uvloop brings.
        loop = self.daemon.status().get("event_loop", "?")
        on_asyncio = self.other_daemon("asyncio", extra={"server": {"event_loop": "asyncio"}})
        try:
            other_loop = on_asyncio.status().get("event_loop", "?")
        except BaseException:
            on_asyncio.stop()
            raise
        self.log(f"   ytproxy on {loop} (server.event_loop auto), and a second daemon on "
                 f"{other_loop} (server.event_loop asyncio) on {HOST}:{on_asyncio.port}")
        if other_loop != "asyncio":
            self.log("   (this ytproxy has no server.event_loop key yet: both daemons are on "
                     "the same loop)")
        targets: dict[str, Callable[[], Fetched]] = {
            "direct": lambda: self.get_direct(big.path),
            "ytproxy": lambda: self.get_daemon(f"/proxy/{BIG}"),
            "ytproxy_asyncio": lambda: fetch(HOST, on_asyncio.port, f"/proxy/{BIG}"),
        }
        if self.peer is not None:
            targets["nginx"] = lambda: self.get_peer(big.path)
        if self.tuned_peer is not None:
            targets["nginx_tuned"] = lambda: self.get_tuned_peer(big.path)
        # The loop's own ceiling: the least relay each loop can run (bench.barerelay).
        from ytproxy.loops import resolve_event_loop

        both = resolve_event_loop("auto") == "uvloop"  # uvloop is installed
        bare = [BareRelay(self.workdir, self.upstream.port, name)
                for name in (("uvloop", "asyncio") if both else ())]
        for relay in bare:
            targets[f"bare_{relay.loop}"] = partial(fetch, HOST, relay.port, big.path)
        speeds: dict[str, list[float]] = {name: [] for name in targets}
        try:
            for relay in bare:
                relay.start()
            for _ in range(runs):
                for name, run in targets.items():
                    got = run()
                    if got.body_bytes != big.size:
                        raise SystemExit(f"{name}: read {got.body_bytes} of {big.size} bytes")
                    speeds[name].append(big.size / got.elapsed / MB)
        finally:
            on_asyncio.stop()
            for relay in bare:
                relay.stop()
        result: dict[str, Any] = {"bytes": big.size, "runs": runs, "identical": identical,
                                  "event_loop": loop, "asyncio_event_loop": other_loop}
        for name, values in speeds.items():
            result[f"{name}_mb_s"] = statistics.median(values)
            result[f"{name}_all_mb_s"] = [round(v, 1) for v in values]
            self.log(f"   {name:15} {statistics.median(values):8.1f} MB/s  "
                     f"(runs: {', '.join(f'{v:.0f}' for v in values)})")
        result["ratio_vs_direct"] = result["ytproxy_mb_s"] / result["direct_mb_s"]
        result["uvloop_speedup"] = result["ytproxy_mb_s"] / result["ytproxy_asyncio_mb_s"]
        self.log(f"   ytproxy on {loop}: {result['uvloop_speedup']:.2f}x its figure on "
                 f"{other_loop} (goal for uvloop: >= 1.3x)")
        if "bare_uvloop_mb_s" in result:
            result["bare_uvloop_speedup"] = (result["bare_uvloop_mb_s"]
                                             / result["bare_asyncio_mb_s"])
            self.log(f"   the loop's own ceiling (bench.barerelay: one upstream request, no "
                     f"parsing): uvloop {result['bare_uvloop_speedup']:.2f}x asyncio")
        if "nginx_mb_s" in result:
            result["ratio_vs_nginx"] = result["ytproxy_mb_s"] / result["nginx_mb_s"]
            result["nginx_ratio_vs_direct"] = result["nginx_mb_s"] / result["direct_mb_s"]
        if "nginx_tuned_mb_s" in result:
            result["ratio_vs_nginx_tuned"] = result["ytproxy_mb_s"] / result["nginx_tuned_mb_s"]
            self.log(f"   ytproxy / tuned nginx: {result['ratio_vs_nginx_tuned']:.2f}x")
        self.results["throughput"] = result

    # ---------------------------------------------------------------- 2. TTFB

    def ttfb(self) -> None:
        n = self.args.requests
        big = self.media["200m.webm"]
        middle = big.size // 2
        window = f"{middle}-{middle + MiB - 1}"
        self.log(f"\n2. time to first byte (new connection each; {n} requests, interleaved)")
        warm: dict[str, list[float]] = {"ytproxy": [], "direct": []}
        seek: dict[str, list[float]] = {"ytproxy": [], "direct": []}
        for _ in range(n):
            warm["direct"].append(self.get_direct(
                big.path, headers={"Range": f"bytes=0-{MiB - 1}"}, first_byte_only=True).ttfb)
            got = self.get_daemon(f"/proxy/{BIG}", headers=MPD_HEADERS, first_byte_only=True)
            assert got.status == 200, got.status
            warm["ytproxy"].append(got.ttfb)
        for _ in range(max(10, n // 2)):
            seek["direct"].append(self.get_direct(
                big.path, headers={"Range": f"bytes={window}"}, first_byte_only=True).ttfb)
            got = self.get_daemon(f"/proxy/{BIG}", first_byte_only=True,
                                  headers={**MPD_HEADERS, "Range": f"bytes={middle}-"})
            assert got.status == 206, got.status
            seek["ytproxy"].append(got.ttfb)
        # Cold: ids never seen; each needs a yt-dlp call.  cold_id(0) starts the
        # yt-dlp worker process first (paid once per idle spell, not per track).
        self.get_daemon(f"/proxy/{cold_id(0)}", first_byte_only=True)
        cold = []
        for i in range(1, self.args.cold + 1):
            got = self.get_daemon(f"/proxy/{cold_id(i)}", headers=MPD_HEADERS,
                                  first_byte_only=True)
            assert got.status == 200, got.status
            cold.append(got.ttfb)
        alone = _ytdlp_alone(self.upstream.url(f"/watch/{cold_id(0)}.html"), self.args.cold)
        result = {
            "requests": n,
            "warm_p50_ms": statistics.median(warm["ytproxy"]) * 1000,
            "warm_p99_ms": pct(warm["ytproxy"], 99) * 1000,
            "direct_p50_ms": statistics.median(warm["direct"]) * 1000,
            "direct_p99_ms": pct(warm["direct"], 99) * 1000,
            "seek_p50_ms": statistics.median(seek["ytproxy"]) * 1000,
            "seek_p99_ms": pct(seek["ytproxy"], 99) * 1000,
            "seek_direct_p50_ms": statistics.median(seek["direct"]) * 1000,
            "seek_direct_p99_ms": pct(seek["direct"], 99) * 1000,
            "cold_runs": len(cold),
            "cold_p50_ms": statistics.median(cold) * 1000,
            "cold_max_ms": max(cold) * 1000,
            "ytdlp_alone_p50_ms": statistics.median(alone) * 1000,
        }
        result["warm_p50_over_direct_ms"] = result["warm_p50_ms"] - result["direct_p50_ms"]
        self.results["ttfb"] = result
        self.log(f"   warm  ytproxy p50 {result['warm_p50_ms']:.2f} ms p99 "
                 f"{result['warm_p99_ms']:.2f} ms | direct p50 {result['direct_p50_ms']:.2f} ms "
                 f"p99 {result['direct_p99_ms']:.2f} ms")
        self.log(f"   seek  ytproxy p50 {result['seek_p50_ms']:.2f} ms | direct p50 "
                 f"{result['seek_direct_p50_ms']:.2f} ms")
        self.log(f"   cold  ytproxy p50 {result['cold_p50_ms']:.1f} ms ({len(cold)} new ids) | "
                 f"yt-dlp call alone p50 {result['ytdlp_alone_p50_ms']:.1f} ms")

    # ---------------------------------------------------------------- 3. scale

    def scale(self) -> None:
        assert self.daemon is not None
        rate, duration = self.args.rate, self.args.duration
        self.log(f"\n3. scale: listeners reading {rate / 1000:g} KB/s, all together for "
                 f"{duration:g} s, "
                 f"joining {self.args.join_rate:g} a second (a fresh daemon per level; "
                 "stall = a read waiting > 1 s)")
        rows = []
        for level, count in enumerate(self.args.listeners):
            self.daemon.restart()
            # A daemon in use has made yt-dlp calls: one for a new id here (its
            # worker process lives on for ytproxy's idle time, past this level).
            got = self.get_daemon(f"/proxy/{scale_id(level)}", first_byte_only=True)
            if got.status != 200:
                raise SystemExit(f"ytproxy answered {got.status} for {scale_id(level)}")
            self.get_daemon(f"/proxy/{BIG}", first_byte_only=True)
            row = self._listen(self.daemon, count, f"/proxy/{BIG}")
            rows.append(row)
            self._log_level(row)
        self.results["scale"] = rows

    def _log_level(self, row: dict[str, Any]) -> None:
        self.log(f"   {row['listeners']:5} listeners: stalls {row['stalls']} (worst wait "
                 f"{row['worst_wait_s']:.2f} s), errors {row['errors']}, short "
                 f"{row['short_listeners']}, first byte p50 "
                 f"{(row['first_byte_p50_s'] or 0) * 1000:.1f} ms max "
                 f"{(row['first_byte_max_s'] or 0) * 1000:.0f} ms, CPU "
                 f"{row['cpu_percent_of_one_core']:.1f} % of a core while all play "
                 f"({row['cpu_percent_whole_run']:.1f} % over the whole run, joining "
                 f"included), peak RSS {row['peak_rss_mb']:.1f} MB "
                 f"(idle {row['rss_before_mb']:.1f}; yt-dlp worker "
                 f"{row['helpers_rss_mb']:.0f} MB, a separate process)")
        if row["first_errors"]:
            self.log(f"         first errors: {row['first_errors']}")

    def _listen(self, daemon: Daemon, count: int, path: str) -> dict[str, Any]:
        """``count`` paced listeners of ``path`` on ``daemon``: their report, and the
        daemon's CPU and memory while they join and play."""
        rate, duration = self.args.rate, self.args.duration
        ramp = count / self.args.join_rate
        stats = daemon.stats
        assert stats is not None
        before_mem = stats.memory()
        samples: list[tuple[float, float, float]] = []  # (time, cpu seconds, rss MB)
        done = threading.Event()

        def sample(stats: Any = stats, samples: list[tuple[float, float, float]] = samples,
                   done: threading.Event = done) -> None:
            while True:
                with contextlib.suppress(OSError):
                    samples.append((time.monotonic(), stats.cpu_seconds(),
                                    stats.memory()["rss"]))
                if done.wait(0.5):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        sampler.start()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.listeners", "--port", str(daemon.port),
             "--path", path, "--count", str(count), "--rate", str(rate),
             "--duration", str(duration), "--ramp", str(ramp)],
            cwd=REPO, capture_output=True, text=True, timeout=duration + ramp + 120,
            check=False,
        )
        done.set()
        sampler.join()
        after = stats.memory()
        helpers = stats.children_rss()
        if proc.returncode != 0:
            raise SystemExit(f"load generator failed: {proc.stderr[-2000:]}")
        report = json.loads(proc.stdout)
        # All of them playing: from SETTLE s after the last one joined (each
        # new listener first takes a gulp, ~1 MB, to fill its socket
        # buffers, and joining 100 a second keeps a core busy) to a second
        # before they all leave.
        settle = min(SETTLE, duration / 2)
        steady = [s for s in samples if started + ramp + settle <= s[0]
                  <= started + ramp + duration - 1] or samples
        whole = samples[-1][1] - samples[0][1], samples[-1][0] - samples[0][0]
        row = {
            **report,
            "join_per_s": self.args.join_rate,
            "cpu_percent_of_one_core": (steady[-1][1] - steady[0][1])
            / max(1e-9, steady[-1][0] - steady[0][0]) * 100,
            "cpu_percent_whole_run": whole[0] / max(1e-9, whole[1]) * 100,
            "rss_before_mb": before_mem["rss"],
            "peak_rss_mb": max([after["peak"], *(s[2] for s in samples)]),
            "rss_after_mb": after["rss"],
            "helpers_rss_mb": helpers,
            "rss_samples_mb": [round(s[2], 1) for s in samples],
            "cpu_seconds_samples": [round(s[1], 2) for s in samples],
        }
        return row

    # ---------------------------------------------------------------- 4. memory

    def memory(self) -> None:
        assert self.daemon is not None
        self.log("\n4. memory flatness: one fresh daemon streams a 10 MB, then a 1 GB track")
        self.daemon.restart()
        stats = self.daemon.stats
        assert stats is not None
        for track_id in (SMALL, HUGE):  # both stored; read the first bytes of each
            self.get_daemon(f"/proxy/{track_id}", first_byte_only=True)
        idle = stats.memory()
        rows: dict[str, Any] = {"idle_rss_mb": idle["rss"]}
        for label, track_id, media in (("10mb", SMALL, self.media["10m.webm"]),
                                       ("1gb", HUGE, self.media["1g.webm"])):
            got = self.get_daemon(f"/proxy/{track_id}")
            if got.body_bytes != media.size:
                raise SystemExit(f"{track_id}: read {got.body_bytes} of {media.size}")
            time.sleep(0.5)
            mem = stats.memory()
            rows[f"rss_after_{label}_mb"] = mem["rss"]
            rows[f"peak_after_{label}_mb"] = mem["peak"]
            rows[f"{label}_mb_s"] = media.size / got.elapsed / MB
        rows["difference_mb"] = rows["rss_after_1gb_mb"] - rows["rss_after_10mb_mb"]
        self.results["memory"] = rows
        self.log(f"   RSS after 10 MB {rows['rss_after_10mb_mb']:.1f} MB, after 1 GB "
                 f"{rows['rss_after_1gb_mb']:.1f} MB (difference "
                 f"{rows['difference_mb']:+.1f} MB; peak {rows['peak_after_1gb_mb']:.1f} MB; "
                 f"1 GB at {rows['1gb_mb_s']:.0f} MB/s)")

    # ---------------------------------------------------------------- 5. single flight

    def singleflight(self) -> None:
        assert self.daemon is not None
        n = 50
        self.log(f"\n5. single-flight: {n} concurrent first requests for one unknown id")
        before = self.daemon.status()["resolver"]["calls"]
        barrier = threading.Barrier(n)

        def one(_: int) -> int:
            barrier.wait(10)
            return self.get_daemon(f"/proxy/{BURST}", headers=MPD_HEADERS,
                                   first_byte_only=True).status

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            statuses = list(pool.map(one, range(n)))
        calls = self.daemon.status()["resolver"]["calls"] - before
        ok = sum(1 for s in statuses if s == 200)
        self.results["singleflight"] = {"requests": n, "ok": ok, "ytdlp_calls": calls}
        self.log(f"   {ok} of {n} answered 200; yt-dlp calls: {calls}")

    # ---------------------------------------------------------------- 6. TLS upstream

    def tls(self) -> None:
        """The relay and the paced listeners again, from an HTTPS upstream (googlevideo
        speaks only TLS): a daemon of its own, told to trust a self-signed
        certificate through SSL_CERT_FILE (aiohttp takes Python's default context)."""
        missing = [tool for tool, there in (("nginx", Nginx.available()),
                                            ("openssl", shutil.which("openssl") is not None))
                   if not there]
        if missing:
            self.log(f"\n6. TLS upstream: skipped: {' and '.join(missing)} not installed "
                     f"(apt-get install nginx openssl)")
            self.results["tls"] = {"skipped": f"{' and '.join(missing)} not installed"}
            return
        count = max(self.args.listeners)
        big = self.media["200m.webm"]
        runs, rate, duration = self.args.runs, self.args.rate, self.args.duration
        self.log(f"\n6. TLS upstream (nginx over HTTPS, self-signed certificate): one "
                 f"{big.size / MB:.0f} MB stream, median of {runs}; then {count} listeners x "
                 f"{rate / 1000:g} KB/s, all together for {duration:g} s")
        cert, key = make_certificate(self.workdir)
        port = free_port()
        upstream = tls_upstream(self.workdir, self.root, cert, key)
        expire = int(time.time() + 6 * 3600)
        for track_id, media in ((TLS_BIG, big), (TLS_SCALE, self.media["10m.webm"])):
            url = f"https://{HOST}:{port}{media.path}?clen={media.size}&expire={expire}"
            write_watch_page(self.root, track_id, url, f"bench tls {media.name}")
        daemon = Daemon(self.workdir, self.upstream.port, log_level=self.args.log_level,
                        name="tls", env={"SSL_CERT_FILE": str(cert)})
        try:
            upstream.start(port)
            daemon.start()
            self.log(f"   upstream https://{HOST}:{port} (certificate {cert}); ytproxy pid "
                     f"{daemon.proc.pid if daemon.proc else '?'} on {HOST}:{daemon.port} "
                     f"(SSL_CERT_FILE={cert.name}), logs {self.workdir}/tls-N.log")
            got = fetch(HOST, daemon.port, f"/proxy/{TLS_BIG}", first_byte_only=True)
            if got.status != 200:
                raise SystemExit(f"ytproxy answered {got.status} for {TLS_BIG} over TLS; "
                                 f"see {self.workdir}/tls-1.log")
            loop = daemon.status().get("event_loop", "?")
            expected = _file_digest(self.root / "media" / big.name)
            check = fetch(HOST, daemon.port, f"/proxy/{TLS_BIG}", hasher=hashlib.sha256())
            identical = check.digest == expected and check.body_bytes == big.size
            self.log(f"   ytproxy bytes identical to the file: {identical}")
            speeds = []
            for _ in range(runs):
                got = fetch(HOST, daemon.port, f"/proxy/{TLS_BIG}")
                if got.body_bytes != big.size:
                    raise SystemExit(f"tls: read {got.body_bytes} of {big.size} bytes")
                speeds.append(big.size / got.elapsed / MB)
            self.log(f"   ytproxy ({loop}) {statistics.median(speeds):8.1f} MB/s  (runs: "
                     f"{', '.join(f'{v:.0f}' for v in speeds)})")
            # As a scale level: a fresh daemon, one yt-dlp call for a new id (its
            # worker lives on through the level), the stream's track already stored.
            daemon.restart()
            got = fetch(HOST, daemon.port, f"/proxy/{TLS_SCALE}", first_byte_only=True)
            if got.status != 200:
                raise SystemExit(f"ytproxy answered {got.status} for {TLS_SCALE} over TLS; "
                                 f"see {self.workdir}/tls-2.log")
            fetch(HOST, daemon.port, f"/proxy/{TLS_BIG}", first_byte_only=True)
            row = self._listen(daemon, count, f"/proxy/{TLS_BIG}")
            self._log_level(row)
        finally:
            daemon.stop()
            upstream.stop()
        self.results["tls"] = {"bytes": big.size, "runs": runs, "identical": identical,
                               "event_loop": loop,
                               "mb_s": statistics.median(speeds),
                               "all_mb_s": [round(v, 1) for v in speeds],
                               "listeners": row}


# ---------------------------------------------------------------- table

    # ---------------------------------------------------------------- 7. cache

    def cache(self) -> None:
        """The download-ahead cache, on a daemon of its own with it on (the relay
        figures above are with it off): the next song's first byte once it was
        downloaded ahead, what a replay costs upstream, memory while tracks
        download, and the paced listeners again, served from the file."""
        assert self.daemon is not None
        self.log(f"\n7. download-ahead cache ({NEXT_SONGS} next songs downloaded ahead; "
                 f"a replay; {DOWNLOADS} x {self.media['200m.webm'].size / MB:.0f} MB "
                 "downloading at once; listeners from the cache)")
        # Today's relay, for the memory figure: the relay daemon's peak while it
        # streams the 200 MB track to one fast reader.
        self.daemon.restart()
        relay_peak = self._peak_rss(self.daemon, lambda: self.get_daemon(f"/proxy/{BIG}"))
        daemon = self.other_daemon("cached", extra={"cache": {"max_size": 8 * 1024**3}})
        try:
            row = self._cache_figures(daemon, relay_peak)
        finally:
            daemon.stop()
        self.results["cache"] = row
        cold = self.results.get("ttfb", {}).get("cold_p50_ms")
        self.log(f"   next song  p50 {row['next_p50_ms']:.2f} ms p99 {row['next_p99_ms']:.2f} ms"
                 + (f" | cold (new id) p50 {cold:.0f} ms" if cold is not None else ""))
        self.log(f"   replay     upstream bytes {row['replay_upstream_bytes']}, requests "
                 f"{row['replay_upstream_requests']}, yt-dlp calls {row['replay_ytdlp_calls']}")
        self.log(f"   downloads  peak RSS {row['downloads_peak_rss_mb']:.1f} MB while "
                 f"{DOWNLOADS} download ({row['downloads_mb_s']:.0f} MB/s together) | relay "
                 f"peak {relay_peak:.1f} MB")
        self._log_level(row["listeners"])

    def _cache_figures(self, daemon: Daemon, relay_peak: float) -> dict[str, Any]:
        def prefetch(ids: list[str]) -> dict[str, str]:
            got = _post_json(daemon.port, "/cache/prefetch", {"ids": ids}, timeout=600)
            if any(result != "cached" for result in got["results"].values()):
                raise SystemExit(f"prefetch failed: {got}")
            return dict(got["results"])

        # The next songs: downloaded ahead (POST /cache/prefetch is what MPD
        # look-ahead does for the next songs of MPD's queue), then asked for as
        # MPD asks when the previous song ends.
        prefetch([next_id(i) for i in range(NEXT_SONGS)])
        nexts = []
        for i in range(NEXT_SONGS):
            got = fetch(HOST, daemon.port, f"/proxy/{next_id(i)}", headers=MPD_HEADERS,
                        first_byte_only=True)
            assert got.status == 200, got.status
            nexts.append(got.ttfb)
        # A replay: the whole track played once (downloaded), then again.
        small = self.media["10m.webm"]
        first = fetch(HOST, daemon.port, f"/proxy/{SMALL}")
        assert first.body_bytes == small.size, first.body_bytes
        prefetch([SMALL])  # waits until the file is complete
        before = daemon.status()
        again = fetch(HOST, daemon.port, f"/proxy/{SMALL}")
        assert again.body_bytes == small.size, again.body_bytes
        after = daemon.status()
        # Downloads: ten 200 MB tracks at once, the daemon's memory sampled.
        # Each is started by a listener who takes the first byte and leaves
        # (prefetching runs two at a time); the downloads go on without them.
        downloads = [download_id(i) for i in range(DOWNLOADS)]
        for track_id in downloads:  # resolved and stored first: only downloads are timed
            _post_json(daemon.port, "/tracks", {"id": track_id}, timeout=60)
        began = time.monotonic()

        def download_all() -> None:
            with concurrent.futures.ThreadPoolExecutor(DOWNLOADS) as pool:
                list(pool.map(lambda i: fetch(HOST, daemon.port, f"/proxy/{i}",
                                              first_byte_only=True), downloads))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                listing = _get_json(daemon.port, "/cache")
                done = {t["id"] for t in listing["tracks"] if t["complete"]}
                if done >= set(downloads):
                    return
                time.sleep(0.05)
            raise SystemExit(f"downloads not complete within 600 s: {listing}")

        peak = self._peak_rss(daemon, download_all)
        elapsed = time.monotonic() - began
        # Listeners of a file on disk (the 200 MB track, downloaded whole first).
        prefetch([BIG])
        daemon.restart()
        fetch(HOST, daemon.port, f"/proxy/{BIG}", first_byte_only=True)
        listeners = self._listen(daemon, max(self.args.listeners), f"/proxy/{BIG}")
        listeners["from_cache"] = True
        return {
            "next_songs": NEXT_SONGS,
            "next_p50_ms": statistics.median(nexts) * 1000,
            "next_p99_ms": pct(nexts, 99) * 1000,
            "replay_upstream_bytes": after["upstream"].get("bytes", 0)
            - before["upstream"].get("bytes", 0),
            "replay_upstream_requests": after["upstream"]["requests"]
            - before["upstream"]["requests"],
            "replay_ytdlp_calls": after["resolver"]["calls"] - before["resolver"]["calls"],
            "downloads": DOWNLOADS,
            "downloads_peak_rss_mb": peak,
            "downloads_mb_s": DOWNLOADS * self.media["200m.webm"].size / elapsed / MB,
            "relay_peak_rss_mb": relay_peak,
            "listeners": listeners,
        }

    @staticmethod
    def _peak_rss(daemon: Daemon, work: Any) -> float:
        """The daemon's peak RSS (MB, sampled every 20 ms) while ``work()`` runs."""
        stats = daemon.stats
        assert stats is not None
        peak = stats.memory()["rss"]
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                with contextlib.suppress(OSError):
                    peak = max(peak, stats.memory()["rss"])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            work()
        finally:
            done.set()
            sampler.join()
        return peak


def _get_json(port: int, path: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{HOST}:{port}{path}", timeout=30) as resp:
        return dict(json.load(resp))


def _post_json(port: int, path: str, body: Any, *, timeout: float) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=timeout) as resp:
        return dict(json.load(resp))


def table(results: dict[str, Any], machine: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    t = results.get("throughput")
    if t:
        ref = f"direct {t['direct_mb_s']:.0f} MB/s"
        if "nginx_tuned_mb_s" in t:
            ref = f"tuned nginx {t['nginx_tuned_mb_s']:.0f} MB/s; " + ref
        if "nginx_mb_s" in t:
            ref = f"nginx {t['nginx_mb_s']:.0f} MB/s; " + ref
            ratio = f"{t['ratio_vs_nginx']:.2f}x nginx, "
            if "ratio_vs_nginx_tuned" in t:
                ratio += f"{t['ratio_vs_nginx_tuned']:.2f}x tuned nginx, "
            ratio += f"{t['ratio_vs_direct']:.2f}x direct"
            met = _yes(t["ratio_vs_nginx"] >= 0.75)
        else:
            ratio, met = f"{t['ratio_vs_direct']:.2f}x direct", "n/a (no nginx)"
        loop = t.get("event_loop", "?")
        rows.append((f"relay throughput, one {t['bytes'] / MB:.0f} MB stream "
                     f"(median of {t['runs']})",
                     f"{t['ytproxy_mb_s']:.0f} MB/s ({loop})", ref, ratio,
                     f">= 0.75x nginx: {met}"))
        if "ytproxy_asyncio_mb_s" in t:
            other = t.get("asyncio_event_loop", "asyncio")
            met = (_yes(t["uvloop_speedup"] >= 1.3)
                   if loop == "uvloop" and other == "asyncio"
                   else f"n/a ({loop} on both)" if loop == other else "n/a (no uvloop)")
            rows.append((f"the same relay on asyncio's own loop (server.event_loop "
                         f"\"asyncio\"; median of {t['runs']})",
                         f"{t['ytproxy_asyncio_mb_s']:.0f} MB/s ({other})",
                         f"{loop} (\"auto\") {t['ytproxy_mb_s']:.0f} MB/s",
                         f"{loop} {t['uvloop_speedup']:.2f}x {other}",
                         f"uvloop >= 1.3x asyncio: {met}"))
        if "bare_uvloop_mb_s" in t:
            rows.append((f"the loop's own ceiling: bench.barerelay, a relay of nothing but "
                         f"transports (median of {t['runs']})",
                         f"uvloop {t['bare_uvloop_mb_s']:.0f} MB/s",
                         f"asyncio {t['bare_asyncio_mb_s']:.0f} MB/s",
                         f"uvloop {t['bare_uvloop_speedup']:.2f}x asyncio", "— (reference)"))
    w = results.get("ttfb")
    if w:
        rows.append((f"TTFB warm, p50 / p99 ({w['requests']} requests)",
                     f"{w['warm_p50_ms']:.2f} / {w['warm_p99_ms']:.2f} ms",
                     f"direct {w['direct_p50_ms']:.2f} / {w['direct_p99_ms']:.2f} ms",
                     f"p50 {w['warm_p50_over_direct_ms']:+.2f} ms",
                     f"<= direct + 1.5 ms: {_yes(w['warm_p50_over_direct_ms'] <= 1.5)}"))
        rows.append(("TTFB seek (Range to the middle), p50 / p99",
                     f"{w['seek_p50_ms']:.2f} / {w['seek_p99_ms']:.2f} ms",
                     f"direct {w['seek_direct_p50_ms']:.2f} / {w['seek_direct_p99_ms']:.2f} ms",
                     f"p50 {w['seek_p50_ms'] - w['seek_direct_p50_ms']:+.2f} ms", "—"))
        rows.append((f"TTFB cold (new id, {w['cold_runs']} runs), p50",
                     f"{w['cold_p50_ms']:.0f} ms",
                     f"yt-dlp call alone {w['ytdlp_alone_p50_ms']:.0f} ms",
                     f"{w['cold_p50_ms'] - w['ytdlp_alone_p50_ms']:+.0f} ms", "—"))
    for row in results.get("scale", []):
        rows.append(_listeners_row(row, ""))
    m = results.get("memory")
    if m:
        rows.append(("RSS after streaming 10 MB / 1 GB",
                     f"{m['rss_after_10mb_mb']:.1f} / {m['rss_after_1gb_mb']:.1f} MB",
                     f"idle {m['idle_rss_mb']:.1f} MB",
                     f"{m['difference_mb']:+.1f} MB",
                     f"within 10 MB: {_yes(abs(m['difference_mb']) <= 10)}"))
    s = results.get("singleflight")
    if s:
        rows.append((f"cold burst: {s['requests']} concurrent requests, one new id",
                     f"{s['ytdlp_calls']} yt-dlp call(s)", f"{s['ok']} answered 200", "",
                     f"exactly 1: {_yes(s['ytdlp_calls'] == 1)}"))
    tls = results.get("tls")
    if tls and "skipped" in tls:
        rows.append(("TLS upstream", f"skipped: {tls['skipped']}", "", "", "—"))
    elif tls:
        plain, ratio = "", ""
        if t:
            plain = f"plain-HTTP upstream {t['ytproxy_mb_s']:.0f} MB/s"
            ratio = f"{tls['mb_s'] / t['ytproxy_mb_s']:.2f}x plain HTTP"
        rows.append((f"relay throughput, TLS upstream (nginx, HTTPS), one "
                     f"{tls['bytes'] / MB:.0f} MB stream (median of {tls['runs']})",
                     f"{tls['mb_s']:.0f} MB/s ({tls.get('event_loop', '?')})", plain, ratio,
                     f"bytes identical: {_yes(tls['identical'])}"))
        rows.append(_listeners_row(tls["listeners"], ", TLS upstream"))
    c = results.get("cache")
    if c:
        cold = w["cold_p50_ms"] if w else None
        rows.append((f"TTFB next song, downloaded ahead ({c['next_songs']} songs), p50 / p99",
                     f"{c['next_p50_ms']:.2f} / {c['next_p99_ms']:.2f} ms",
                     f"cold (new id) p50 {cold:.0f} ms" if cold is not None else "—",
                     "", f"<= 10 ms p50: {_yes(c['next_p50_ms'] <= 10)}"))
        rows.append(("replay of a cached 10 MB track: upstream bytes / requests / yt-dlp calls",
                     f"{c['replay_upstream_bytes']} / {c['replay_upstream_requests']} / "
                     f"{c['replay_ytdlp_calls']}", "", "",
                     f"0 bytes: {_yes(c['replay_upstream_bytes'] == 0)}"))
        rows.append((f"peak RSS while {c['downloads']} tracks (200 MB) download",
                     f"{c['downloads_peak_rss_mb']:.1f} MB "
                     f"({c['downloads_mb_s']:.0f} MB/s together)",
                     f"relay of one 200 MB stream: peak {c['relay_peak_rss_mb']:.1f} MB",
                     f"{c['downloads_peak_rss_mb'] - c['relay_peak_rss_mb']:+.1f} MB",
                     "<= relay + 10 MB: "
                     + _yes(c["downloads_peak_rss_mb"] <= c["relay_peak_rss_mb"] + 10)))
        rows.append(_listeners_row(c["listeners"], ", from the cache"))
    head = ("figure", "ytproxy", "reference", "difference", "target")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append(f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
                 f"{machine['ram_gib']:.0f} GiB RAM, {machine['os']}, Python "
                 f"{machine['python']}, aiohttp {machine['aiohttp']}; upstream: "
                 f"{machine['upstream']}.")
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _listeners_row(row: dict[str, Any], where: str) -> tuple[str, str, str, str, str]:
    """One table row for a level of paced listeners (``where``: after the figure's name)."""
    n = row["listeners"]
    kb = row["rate_bytes_per_s"] / 1000
    target = "—"
    if n >= 1000:
        ok = (row["stalls"] == 0 and row["errors"] == 0
              and row["cpu_percent_of_one_core"] <= 20 and row["peak_rss_mb"] <= 120)
        target = f"0 stalls, CPU <= 20 %, RSS <= 120 MB: {_yes(ok)}"
    return (f"{n} listeners x {kb:g} KB/s, together for {row['duration_s']:g} s "
            f"(joining {row['join_per_s']:g}/s){where}",
            f"{row['stalls']} stalls, CPU {row['cpu_percent_of_one_core']:.1f} % "
            f"while all play ({row['cpu_percent_whole_run']:.0f} % with joining), "
            f"peak RSS {row['peak_rss_mb']:.0f} MB",
            f"idle RSS {row['rss_before_mb']:.0f} MB (+ yt-dlp worker "
            f"{row.get('helpers_rss_mb', 0):.0f} MB); errors {row['errors']}",
            f"worst wait {row['worst_wait_s']:.2f} s; first byte p50 "
            f"{(row['first_byte_p50_s'] or 0) * 1000:.0f} ms, "
            f"max {(row['first_byte_max_s'] or 0) * 1000:.0f} ms", target)


def machine_info(upstream_kind: str) -> dict[str, Any]:
    import aiohttp

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    ram = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            ram = int(line.split()[1]) / (1 << 20)
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "ram_gib": ram,
        "os": platform.platform(terse=True), "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "upstream": (f"nginx {_nginx_version()}" if upstream_kind == "nginx"
                     else "aiohttp file server (no nginx)"),
    }


# ---------------------------------------------------------------- odds and ends

def _nginx_version() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return out.stderr.strip().rpartition("/")[2] or "?"


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.digest()


def _ytdlp_alone(url: str, runs: int) -> list[float]:
    """The resolver's yt-dlp call, timed alone (same options, one YoutubeDL per call)."""
    import yt_dlp

    from ytproxy.config import ResolverConfig

    options = {"quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False,
               "noplaylist": True, "format": ResolverConfig().format}
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        with yt_dlp.YoutubeDL(options) as ydl:
            ydl.extract_info(url, download=False)
        if i:  # the first call pays for imports and extractor set-up
            times.append(time.perf_counter() - started)
    return times


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short run: fewer runs and requests, 100 and 500 listeners "
                             "for 10 s")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (of {', '.join(SECTIONS)})")
    parser.add_argument("--runs", type=int, help="throughput runs per target (default 5)")
    parser.add_argument("--requests", type=int, help="warm TTFB requests (default 200)")
    parser.add_argument("--cold", type=int, help="cold TTFB runs, one new id each (default 10)")
    parser.add_argument("--listeners", help="listener counts (default 100,500,1000; the "
                                            "tls section runs the largest)")
    parser.add_argument("--duration", type=float, help="seconds all listeners play together (30)")
    parser.add_argument("--rate", type=float, default=20_000,
                        help="bytes per second per listener (20000 = 160 kbit/s)")
    parser.add_argument("--join-rate", type=float, default=100.0,
                        help="listeners joining per second (100: 1,000 join over 10 s)")
    parser.add_argument("--log-level", default="info", help="the daemon's log level (info)")
    parser.add_argument("--json", default=str(REPO / "bench" / "results.json"),
                        help="where to write the figures (bench/results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (2 if quick else 5)
    args.requests = args.requests or (50 if quick else 200)
    args.cold = args.cold or (3 if quick else 10)
    args.duration = args.duration or (10.0 if quick else 30.0)
    args.listeners = [int(x) for x in (args.listeners or ("100,500" if quick else
                                                          "100,500,1000")).split(",")]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="ytproxy-bench-"))
    workdir.chmod(0o755)
    bench = Bench(args, workdir)
    started = time.monotonic()
    try:
        bench.prepare()
        for section in SECTIONS:
            if section in args.only:
                getattr(bench, section)()
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    machine = machine_info(bench.upstream.kind)
    text = table(bench.results, machine)
    print("\n" + text)
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    out = {"machine": machine, "args": {k: v for k, v in vars(args).items()},
           "results": bench.results, "table": text}
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"figures written to {args.json}")
    return 0
