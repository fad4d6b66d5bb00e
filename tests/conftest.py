import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ytproxy.loops import loop_factory, resolve_event_loop

pytest_plugins = ["tests.fakes.googlevideo", "tests.fakes.tube", "tests.mpd_harness",
                  "tests.proxy_fixture"]

# The FakeTube extractor plugin (tests.fakes.tube), for yt-dlp here and in
# ytproxy's worker processes, which start with this environment: yt-dlp loads
# extractor plugins from any yt_dlp_plugins/extractor/ package on sys.path.
PLUGINS = str(Path(__file__).resolve().parent / "ytdlp_plugins")
sys.path.insert(0, PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH")]))

# Daemons the tests start keep their download-ahead cache out of the home
# directory ([cache] directory defaults to $XDG_CACHE_HOME/ytproxy/audio).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ytproxy-tests-cache-")

# The event loop of the tests, as of the daemons they start: the daemon's own
# YTPROXY_SERVER_EVENT_LOOP (auto: uvloop where installed).  CI runs the suite
# once with each loop.
LOOP = os.environ.get("YTPROXY_SERVER_EVENT_LOOP", "auto")


# Looked up once: the hook below is asked for every test.
LOOP_FACTORIES = {resolve_event_loop(LOOP): loop_factory(LOOP)}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item,
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return LOOP_FACTORIES


def pytest_report_header() -> str:
    return f"event loop: {resolve_event_loop(LOOP)} (YTPROXY_SERVER_EVENT_LOOP={LOOP})"
