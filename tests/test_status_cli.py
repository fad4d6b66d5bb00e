"""``ytproxy status`` as a subprocess against the real daemon running in this
loop (with a live, throttled stream), against an unhealthy one, and against none."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.googlevideo import FakeGooglevideo
from tests.fakes.local_servers import free_port, running_daemon, write_toml
from tests.proxy_fixture import random_audio
from tests.test_cli import Result, cli_env, run_ytproxy
from ytproxy.cli.client import DaemonHealth, DaemonReport
from ytproxy.cli.status_view import EXIT_NOT_RUNNING, format_bytes, render_report
from ytproxy.config import load_config
from ytproxy.http.app import RESOLVER

VID = "StAtUs_Live"
TITLE = "Live Song"


@pytest.fixture
def config_file(tmp_path: Path, googlevideo: FakeGooglevideo) -> Path:
    return write_toml(tmp_path / "config.toml", {
        "server": {"port": free_port()},
        "store": {"path": str(tmp_path / "tracks.db")},
        "resolver": {"source_url_template": googlevideo.watch_url_template,
                     "timeout": 20.0, "max_calls_per_minute": 6000},
        "upstream": {"allowed_hosts": [googlevideo.host], "chunk_size": 262144},
    })


@pytest.fixture
async def daemon(config_file: Path) -> AsyncIterator[TestServer]:
    async with running_daemon(config_file) as server:
        yield server


async def status(tmp_path: Path, config_file: Path, *args: str) -> Result:
    return await run_ytproxy(cli_env(tmp_path), "--config", str(config_file), "status", *args)


async def test_status_shows_a_live_stream(
    tmp_path: Path, config_file: Path, googlevideo: FakeGooglevideo, daemon: TestServer
) -> None:
    googlevideo.add_track(VID, random_audio(3_000_000, seed=3), title=TITLE)
    googlevideo.throttle_bytes_per_sec = 200_000  # keeps the stream open while we look
    async with aiohttp.ClientSession() as client:
        url = f"http://127.0.0.1:{daemon.port}/proxy/{VID}"
        async with client.get(url, headers={"Range": "bytes=1000-"}) as listening:
            assert listening.status == 206
            await listening.content.readexactly(150_000)

            shown = await status(tmp_path, config_file)
            raw = await status(tmp_path, config_file, "--json")

    assert shown.rc == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0].startswith("ytproxy ") and "health: ok" in lines[0]
    assert f"127.0.0.1:{daemon.port}" in lines[0]
    assert "streams: 1 active of 10 slots" in shown.out
    header = next(line for line in lines if line.strip().startswith("ID "))
    for column in ("NAME", "CLIENT", "SENT", "RATE", "RANGE", "RETRIES", "REFRESHES"):
        assert column in header
    row = next(line for line in lines if VID in line)
    assert TITLE in row and "127.0.0.1" in row and "bytes=1000-" in row
    assert "KiB" in row  # bytes sent so far
    assert "totals:" in shown.out and "store:" in shown.out
    assert "resolver:" in shown.out and "upstream:" in shown.out
    # The runtime every yt-dlp call is given: the deno `pip install` brought.
    deno = Path(sys.executable).parent / "deno"
    assert re.search(rf"js runtime deno \d+\.\d+\.\d+ at {re.escape(str(deno))}; "
                     r"player client —", shown.out), shown.out

    assert raw.rc == 0, raw.err
    payload = json.loads(raw.out)
    [stream] = payload["streams"]
    assert stream["id"] == VID and stream["bytes_sent"] >= 150_000
    assert "googlevideo" not in raw.out and "sig=" not in raw.out  # no signed URLs
    assert payload["resolver"]["js_runtime"]["path"] == str(deno)
    assert payload["resolver"]["cookies"] is None


async def test_status_exits_1_with_the_reasons_when_unhealthy(
    tmp_path: Path, config_file: Path, daemon: TestServer
) -> None:
    breaker = daemon.app[RESOLVER].breaker
    for _ in range(breaker.threshold):
        breaker.record_failure("HTTP Error 429: Too Many Requests")
    result = await status(tmp_path, config_file)
    assert result.rc == 1
    assert "health: degraded" in result.out
    assert "429" in result.out  # the reason, in the summary...
    assert "the daemon is degraded" in result.err and "429" in result.err  # ...and why it exits 1


async def test_status_without_a_daemon_says_how_to_start_one(
    tmp_path: Path, config_file: Path
) -> None:
    started = time.monotonic()
    result = await status(tmp_path, config_file)
    assert result.rc == EXIT_NOT_RUNNING
    port = load_config(str(config_file)).server.port
    assert f"ytproxy is not answering on 127.0.0.1:{port}" in result.err
    assert "`ytproxy serve`" in result.err and "systemctl --user start ytproxy" in result.err
    assert result.out == ""
    assert time.monotonic() - started < 10


def test_render_copes_with_a_daemon_of_another_version() -> None:
    """Missing and unknown keys cost a line, never the report."""
    report = DaemonReport(
        "http://127.0.0.1:6602",
        {"version": "9.9", "streams": [{"id": "x", "retries": {"reset": 2, "http_503": 1}}],
         "resolver": {"calls": 3, "future_thing": {"nested": [1, 2]}}, "totals": "odd"},
        DaemonHealth(200, "ok", []),
    )
    text = render_report(report)
    assert text.startswith("ytproxy 9.9 at http://127.0.0.1:6602")
    assert "resolver: calls 3" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("x "))
    # retries summed over causes; refreshes unknown; where from: relay when not said
    assert row.split()[-3:] == ["3", "—", "relay"]
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(None) == "—"


def test_render_names_the_js_runtime_and_the_player_client() -> None:
    def rendered(resolver: dict[str, Any]) -> str:
        return render_report(DaemonReport("http://127.0.0.1:6602", {
            "version": "1", "resolver": {"calls": 1, **resolver}}, DaemonHealth(200, "ok", [])))

    text = rendered({"js_runtime": {"name": "deno", "path": "/v/bin/deno",
                                    "version": "deno 2.9.8 (stable, release, x86_64)"},
                     "client": "VISIONOS", "cookies": "file"})
    assert "js runtime deno 2.9.8 at /v/bin/deno; player client VISIONOS; cookies file" in text
    assert "resolver: calls 1\n" in text  # the three are not repeated as counters
    node = rendered({"js_runtime": {"name": "node", "path": "/usr/bin/node",
                                    "version": "v22.1.0"}, "client": None, "cookies": None})
    assert "js runtime node v22.1.0 at /usr/bin/node; player client —\n" in node
    assert "js runtime none (see `ytproxy doctor`)" in rendered({"js_runtime": None})
    # A daemon from before these keys: no runtime line part, nothing fails.
    assert "player client —" in rendered({}) and "js runtime" not in rendered({})
