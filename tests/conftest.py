import asyncio
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import ports
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
# on uvloop, then the tests marked "loop" (below) on asyncio's own loop.
LOOP = os.environ.get("YTPROXY_SERVER_EVENT_LOOP", "auto")


# Looked up once: the hook below is asked for every test.
LOOP_FACTORIES = {resolve_event_loop(LOOP): loop_factory(LOOP)}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item,
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return LOOP_FACTORIES


def pytest_report_header() -> str:
    return f"event loop: {resolve_event_loop(LOOP)} (YTPROXY_SERVER_EVENT_LOOP={LOOP})"


def _runs_on_a_loop(item: pytest.Item) -> bool:
    """A test pytest-asyncio runs on the loop above: it puts its asyncio marker
    on every coroutine test (asyncio_mode = "auto"), a hypothesis-driven one
    too.  Every test that starts a daemon (``ytproxy serve`` takes
    YTPROXY_SERVER_EVENT_LOOP) or opens a socket or a subprocess through the
    loop is one; what is left is plain functions (config, parsing, the CLI run
    as a subprocess, whose commands other than serve use asyncio.run)."""
    return item.get_closest_marker("asyncio") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _runs_on_a_loop(item):
            item.add_marker(pytest.mark.loop)
    # Tests that play through a real MPD wait on its clock for tens of seconds
    # each: started first, they do not end a parallel run (pytest-xdist hands
    # tests out in this order) long after the rest.  The same order in every
    # worker, as xdist requires.
    items.sort(key=lambda item: item.get_closest_marker("mpd") is None)


@pytest.fixture(autouse=True)
def _let_go_of_ports() -> Iterator[None]:
    """The ports a test held (tests.ports.free_port), let go once its other
    fixtures (servers, daemons) are torn down."""
    yield
    ports.let_go()
