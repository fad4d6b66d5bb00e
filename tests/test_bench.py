"""The benchmark suite's own plumbing: it starts, refuses bad arguments by name,
and its table says when a target is missed.  (The figures themselves come from
``python -m bench``, never from a test: machines are noisy.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.suite import parse_args, table

REPO = Path(__file__).resolve().parent.parent
MACHINE = {"cpus": 2, "cpu_model": "Test CPU", "ram_gib": 24.0, "os": "Linux",
           "python": "3.11", "aiohttp": "3.x", "upstream": "nginx 1.22.1"}


def level(listeners: int, stalls: int) -> dict[str, object]:
    return {"listeners": listeners, "rate_bytes_per_s": 20000, "duration_s": 30,
            "join_per_s": 100, "stalls": stalls, "errors": 0,
            "cpu_percent_of_one_core": 12.0, "cpu_percent_whole_run": 30.0,
            "peak_rss_mb": 110.0, "rss_before_mb": 45.0, "worst_wait_s": 0.2,
            "first_byte_p50_s": 0.01, "first_byte_max_s": 0.3}


def results(*, warm_ms: float, stalls: int, calls: int, asyncio_mb_s: float = 500.0,
            tls_stalls: int = 0, identical: bool = True) -> dict[str, Any]:
    return {
        "throughput": {"bytes": 200_000_000, "runs": 5, "ytproxy_mb_s": 700.0,
                       "direct_mb_s": 2000.0, "nginx_mb_s": 600.0, "nginx_tuned_mb_s": 1400.0,
                       "ratio_vs_direct": 0.35, "ratio_vs_nginx": 700 / 600,
                       "ratio_vs_nginx_tuned": 0.5, "event_loop": "uvloop",
                       "asyncio_event_loop": "asyncio", "ytproxy_asyncio_mb_s": asyncio_mb_s,
                       "uvloop_speedup": 700 / asyncio_mb_s},
        "ttfb": {"requests": 200, "warm_p50_ms": warm_ms, "warm_p99_ms": 3.0,
                 "direct_p50_ms": 0.3, "direct_p99_ms": 0.5,
                 "warm_p50_over_direct_ms": warm_ms - 0.3, "seek_p50_ms": 1.0,
                 "seek_p99_ms": 2.0, "seek_direct_p50_ms": 0.3, "seek_direct_p99_ms": 0.5,
                 "cold_runs": 10, "cold_p50_ms": 110.0, "ytdlp_alone_p50_ms": 100.0},
        "scale": [level(1000, stalls)],
        "memory": {"rss_after_10mb_mb": 45.0, "rss_after_1gb_mb": 46.0, "idle_rss_mb": 44.0,
                   "difference_mb": 1.0},
        "singleflight": {"requests": 50, "ok": 50, "ytdlp_calls": calls},
        "tls": {"bytes": 200_000_000, "runs": 5, "identical": identical,
                "event_loop": "uvloop", "mb_s": 350.0, "all_mb_s": [350.0],
                "listeners": level(1000, tls_stalls)},
    }


def test_the_table_marks_every_target_met() -> None:
    text = table(results(warm_ms=1.0, stalls=0, calls=1), MACHINE)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    targets = [line.rsplit("|", 2)[1].strip() for line in lines[1:]]
    assert [t for t in targets if t != "—"] == [
        ">= 0.75x nginx: yes", "uvloop >= 1.3x asyncio: yes", "<= direct + 1.5 ms: yes",
        "0 stalls, CPU <= 20 %, RSS <= 120 MB: yes", "within 10 MB: yes", "exactly 1: yes",
        "bytes identical: yes", "0 stalls, CPU <= 20 %, RSS <= 120 MB: yes"]
    assert "2 CPUs (Test CPU), 24 GiB RAM" in text


def cells(text: str, figure: str) -> list[str]:
    """The cells of the table row whose figure starts with ``figure``."""
    rows = [[c.strip() for c in line.strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith(f"| {figure}")]
    assert len(rows) == 1, (figure, text)
    return rows[0]


def test_throughput_against_both_nginx_peers_and_both_loops() -> None:
    text = table(results(warm_ms=1.0, stalls=0, calls=1), MACHINE)
    row = cells(text, "relay throughput, one 200 MB stream")
    assert row[1:] == ["700 MB/s (uvloop)",
                       "nginx 600 MB/s; tuned nginx 1400 MB/s; direct 2000 MB/s",
                       "1.17x nginx, 0.50x tuned nginx, 0.35x direct", ">= 0.75x nginx: yes"]
    loops = cells(text, "the same relay on asyncio's own loop")
    assert loops[1:] == ["500 MB/s (asyncio)", 'uvloop ("auto") 700 MB/s', "uvloop 1.40x asyncio",
                         "uvloop >= 1.3x asyncio: yes"]
    slow = table(results(warm_ms=1.0, stalls=0, calls=1, asyncio_mb_s=600.0), MACHINE)
    assert cells(slow, "the same relay on asyncio's own loop")[3:] == [
        "uvloop 1.17x asyncio", "uvloop >= 1.3x asyncio: **no**"]


def test_the_loops_own_ceiling_is_a_reference_row() -> None:
    figures = results(warm_ms=1.0, stalls=0, calls=1)
    assert not [line for line in table(figures, MACHINE).splitlines() if "ceiling" in line]
    figures["throughput"].update(bare_uvloop_mb_s=2900.0, bare_asyncio_mb_s=2500.0,
                                 bare_uvloop_speedup=2900 / 2500)
    row = cells(table(figures, MACHINE), "the loop's own ceiling")
    assert row[1:] == ["uvloop 2900 MB/s", "asyncio 2500 MB/s", "uvloop 1.16x asyncio",
                       "— (reference)"]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_bare_relay_relays_every_byte(loop: str, tmp_path: Path) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")
    import hashlib

    from bench.httpclient import fetch
    from bench.servers import BareRelay, Upstream, make_media

    media = make_media(tmp_path / "www", {"3m.webm": (3_000_000, False)})["3m.webm"]
    upstream = Upstream(tmp_path, tmp_path / "www")
    upstream.start()
    relay = BareRelay(tmp_path, upstream.port, loop)
    try:
        relay.start()
        got = fetch("127.0.0.1", relay.port, media.path, hasher=hashlib.sha256())
        direct = fetch("127.0.0.1", upstream.port, media.path, hasher=hashlib.sha256())
    finally:
        relay.stop()
        upstream.stop()
    assert (got.status, got.body_bytes) == (200, media.size)
    assert got.digest is not None and got.digest == direct.digest


def test_without_uvloop_the_loop_target_is_not_judged() -> None:
    figures = results(warm_ms=1.0, stalls=0, calls=1, asyncio_mb_s=700.0)
    figures["throughput"].update(event_loop="asyncio")
    row = cells(table(figures, MACHINE), "the same relay on asyncio's own loop")
    assert row[3:] == ["asyncio 1.00x asyncio", "uvloop >= 1.3x asyncio: n/a (asyncio on both)"]


def test_without_a_tuned_peer_the_row_keeps_its_old_form() -> None:
    figures = results(warm_ms=1.0, stalls=0, calls=1)
    for key in ("nginx_tuned_mb_s", "ratio_vs_nginx_tuned"):
        del figures["throughput"][key]
    row = cells(table(figures, MACHINE), "relay throughput, one 200 MB stream")
    assert row[2:4] == ["nginx 600 MB/s; direct 2000 MB/s", "1.17x nginx, 0.35x direct"]


def test_the_tls_rows() -> None:
    text = table(results(warm_ms=1.0, stalls=0, calls=1, tls_stalls=4, identical=False),
                 MACHINE)
    relay = cells(text, "relay throughput, TLS upstream")
    assert relay == ["relay throughput, TLS upstream (nginx, HTTPS), one 200 MB stream "
                     "(median of 5)", "350 MB/s (uvloop)", "plain-HTTP upstream 700 MB/s",
                     "0.50x plain HTTP", "bytes identical: **no**"]
    listeners = cells(text, "1000 listeners x 20 KB/s, together for 30 s (joining 100/s), TLS")
    assert listeners[0].endswith(", TLS upstream")
    assert listeners[1].startswith("4 stalls, CPU 12.0 % while all play")
    assert listeners[4] == "0 stalls, CPU <= 20 %, RSS <= 120 MB: **no**"
    # The plain scale row is its own, and still met.
    plain = cells(text, "1000 listeners x 20 KB/s, together for 30 s (joining 100/s) |")
    assert plain[4] == "0 stalls, CPU <= 20 %, RSS <= 120 MB: yes"
    lines = text.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("| relay throughput, TLS"))) > \
        lines.index(next(x for x in lines if x.startswith("| cold burst")))


def test_a_skipped_tls_section_says_why() -> None:
    figures = results(warm_ms=1.0, stalls=0, calls=1)
    figures["tls"] = {"skipped": "openssl not installed"}
    assert cells(table(figures, MACHINE), "TLS upstream") == [
        "TLS upstream", "skipped: openssl not installed", "", "", "—"]


def cache_figures(*, next_ms: float, replay_bytes: int, downloads_mb: float) -> dict[str, Any]:
    return {"next_songs": 20, "next_p50_ms": next_ms, "next_p99_ms": next_ms * 2,
            "replay_upstream_bytes": replay_bytes, "replay_upstream_requests": 0,
            "replay_ytdlp_calls": 0, "downloads": 10, "downloads_peak_rss_mb": downloads_mb,
            "downloads_mb_s": 900.0, "relay_peak_rss_mb": 50.0,
            "listeners": level(1000, 0)}


def test_the_cache_rows_judge_their_targets() -> None:
    figures = results(warm_ms=1.0, stalls=0, calls=1)
    figures["cache"] = cache_figures(next_ms=1.5, replay_bytes=0, downloads_mb=55.0)
    text = table(figures, MACHINE)
    assert cells(text, "TTFB next song") == [
        "TTFB next song, downloaded ahead (20 songs), p50 / p99", "1.50 / 3.00 ms",
        "cold (new id) p50 110 ms", "", "<= 10 ms p50: yes"]
    assert cells(text, "replay of a cached")[1:] == ["0 / 0 / 0", "", "", "0 bytes: yes"]
    assert cells(text, "peak RSS while 10 tracks")[3:] == ["+5.0 MB", "<= relay + 10 MB: yes"]
    assert cells(text, "1000 listeners x 20 KB/s, together for 30 s (joining 100/s), from the "
                       "cache")[4] == "0 stalls, CPU <= 20 %, RSS <= 120 MB: yes"
    figures["cache"] = cache_figures(next_ms=12.0, replay_bytes=5, downloads_mb=61.0)
    missed = table(figures, MACHINE)
    assert "<= 10 ms p50: **no**" in missed and "0 bytes: **no**" in missed
    assert "<= relay + 10 MB: **no**" in missed


def test_the_table_marks_each_missed_target() -> None:
    text = table(results(warm_ms=1.9, stalls=3, calls=2), MACHINE)
    assert "<= direct + 1.5 ms: **no**" in text
    assert "0 stalls, CPU <= 20 %, RSS <= 120 MB: **no**" in text
    assert "exactly 1: **no**" in text
    assert "| 3 stalls" in text


def test_only_picks_the_new_section() -> None:
    assert parse_args(["--only", "tls"]).only == ["tls"]
    assert parse_args(["--only", "throughput, tls"]).only == ["throughput", "tls"]
    assert parse_args([]).only[-2:] == ["tls", "cache"]
    assert parse_args(["--only", "cache"]).only == ["cache"]


def test_an_unknown_section_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        parse_args(["--only", "throughput,speedy"])
    assert stop.value.code == 2
    assert "unknown section(s) speedy" in capsys.readouterr().err


def test_quick_defaults() -> None:
    args = parse_args(["--quick"])
    assert (args.runs, args.requests, args.listeners, args.duration) == (2, 50, [100, 500], 10.0)
    full = parse_args([])
    assert (full.runs, full.requests, full.listeners, full.duration) == (
        5, 200, [100, 500, 1000], 30.0)


def test_the_readme_command_starts() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--only" in done.stdout


def listing_figures(*, search_added: float, calls: int, player: int = 0) -> dict[str, Any]:
    figures: dict[str, Any] = {"runs": 20, "listed": 25, "listing_calls": calls,
                               "listing_calls_expected": 84, "player_requests": player}
    for kind, added in (("search", search_added), ("radio", 3.0)):
        figures.update({f"{kind}_ytproxy_p50_ms": 100.0 + added, f"{kind}_ytproxy_max_ms": 150.0,
                        f"{kind}_ytdlp_alone_p50_ms": 100.0, f"{kind}_ytdlp_alone_max_ms": 140.0,
                        f"{kind}_added_ms": added, f"{kind}_met": added <= 20.0})
    return figures


def test_the_listings_table_judges_the_20_ms_and_the_calls() -> None:
    from bench.listings import table as listings_table

    text = listings_table(listing_figures(search_added=4.0, calls=84))
    assert cells(text, "search, 25 songs")[1:] == [
        "104.0 / 150.0 ms", "100.0 / 140.0 ms", "+4.0 ms", "<= 20 ms: yes"]
    assert cells(text, "radio")[3:] == ["+3.0 ms", "<= 20 ms: yes"]
    assert cells(text, "yt-dlp calls")[-1] == "one per listing, none per entry: yes"
    missed = listings_table(listing_figures(search_added=25.0, calls=85, player=1))
    assert cells(missed, "search, 25 songs")[-1] == "<= 20 ms: **no**"
    assert cells(missed, "yt-dlp calls")[-1] == "one per listing, none per entry: **no**"


def test_the_listings_command_starts() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "listings", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--runs" in done.stdout


def pacing_row(case: str, total: float, wait: float) -> dict[str, Any]:
    return {"case": case, "judged": wait > 0, "total_s": total, "upstream_wait_s": wait,
            "after_s": total - wait, "met": total - wait <= 1.0}


def test_the_pacing_table_judges_the_second_after_upstreams_wait() -> None:
    from bench.pacing import table as pacing_table

    figures = {"bytes": 11_000_000, "runs": 1, "event_loop": "uvloop", "rows": [
        pacing_row("clean, relay only", 0.3, 0.0),
        pacing_row("15 s upstream stall, relay only", 15.6, 15.0),
        pacing_row("403, URL refreshed by yt-dlp, relay only", 20.9, 0.4)]}
    text = pacing_table(figures)
    assert cells(text, "clean")[1:] == ["0.30 s", "0.00 s", "0.30 s", "—"]
    assert cells(text, "15 s upstream stall")[1:] == [
        "15.60 s", "15.00 s", "0.60 s", "<= 1 s after upstream's wait: yes"]
    assert cells(text, "403")[4] == "<= 1 s after upstream's wait: **no**"


def test_the_pacing_command_starts() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "pacing", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--runs" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "bench", "pacing", "--runs", "0"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--runs must be at least 1, got 0" in refused.stderr
