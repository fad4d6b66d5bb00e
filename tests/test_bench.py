"""The benchmark suite's own plumbing: it starts, refuses bad arguments by name,
and its table says when a target is missed.  (The figures themselves come from
``python -m bench``, never from a test: machines are noisy.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite import parse_args, table

REPO = Path(__file__).resolve().parent.parent
MACHINE = {"cpus": 2, "cpu_model": "Test CPU", "ram_gib": 24.0, "os": "Linux",
           "python": "3.11", "aiohttp": "3.x", "upstream": "nginx 1.22.1"}


def results(*, warm_ms: float, stalls: int, calls: int) -> dict[str, object]:
    return {
        "throughput": {"bytes": 200_000_000, "runs": 5, "ytproxy_mb_s": 700.0,
                       "direct_mb_s": 2000.0, "nginx_mb_s": 600.0,
                       "ratio_vs_direct": 0.35, "ratio_vs_nginx": 700 / 600},
        "ttfb": {"requests": 200, "warm_p50_ms": warm_ms, "warm_p99_ms": 3.0,
                 "direct_p50_ms": 0.3, "direct_p99_ms": 0.5,
                 "warm_p50_over_direct_ms": warm_ms - 0.3, "seek_p50_ms": 1.0,
                 "seek_p99_ms": 2.0, "seek_direct_p50_ms": 0.3, "seek_direct_p99_ms": 0.5,
                 "cold_runs": 10, "cold_p50_ms": 110.0, "ytdlp_alone_p50_ms": 100.0},
        "scale": [{"listeners": 1000, "rate_bytes_per_s": 20000, "duration_s": 30,
                   "join_per_s": 100, "stalls": stalls, "errors": 0,
                   "cpu_percent_of_one_core": 12.0, "cpu_percent_whole_run": 30.0,
                   "peak_rss_mb": 110.0, "rss_before_mb": 45.0, "worst_wait_s": 0.2,
                   "first_byte_p50_s": 0.01, "first_byte_max_s": 0.3}],
        "memory": {"rss_after_10mb_mb": 45.0, "rss_after_1gb_mb": 46.0, "idle_rss_mb": 44.0,
                   "difference_mb": 1.0},
        "singleflight": {"requests": 50, "ok": 50, "ytdlp_calls": calls},
    }


def test_the_table_marks_every_target_met() -> None:
    text = table(results(warm_ms=1.0, stalls=0, calls=1), MACHINE)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    targets = [line.rsplit("|", 2)[1].strip() for line in lines[1:]]
    assert [t for t in targets if t != "—"] == [
        ">= 0.75x nginx: yes", "<= direct + 1 ms: yes",
        "0 stalls, CPU <= 20 %, RSS <= 120 MB: yes", "within 10 MB: yes", "exactly 1: yes"]
    assert "2 CPUs (Test CPU), 24 GiB RAM" in text


def test_the_table_marks_each_missed_target() -> None:
    text = table(results(warm_ms=1.5, stalls=3, calls=2), MACHINE)
    assert "<= direct + 1 ms: **no**" in text
    assert "0 stalls, CPU <= 20 %, RSS <= 120 MB: **no**" in text
    assert "exactly 1: **no**" in text
    assert "| 3 stalls" in text


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
