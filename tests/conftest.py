import os
import sys
from pathlib import Path

pytest_plugins = ["tests.fakes.googlevideo", "tests.fakes.tube", "tests.mpd_harness",
                  "tests.proxy_fixture"]

# The FakeTube extractor plugin (tests.fakes.tube), for yt-dlp here and in
# ytproxy's worker processes, which start with this environment: yt-dlp loads
# extractor plugins from any yt_dlp_plugins/extractor/ package on sys.path.
PLUGINS = str(Path(__file__).resolve().parent / "ytdlp_plugins")
sys.path.insert(0, PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH")]))
