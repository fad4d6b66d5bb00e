"""A test-only yt-dlp extractor for tests.fakes.tube (FakeTube) on loopback.

The real yt-dlp loads it from ``tests/ytdlp_plugins`` (tests/conftest.py puts
that on sys.path and PYTHONPATH, so ytproxy's worker processes load it too).
It reads the player clients from ``extractor_args`` under the *youtube* key,
as YouTube's extractor does, and reports the parameters it was given to the
fake, so tests can check what a daemon's yt-dlp call received.
"""

from __future__ import annotations

import json
import urllib.parse

from yt_dlp.extractor.common import InfoExtractor
from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import ExtractorError

# The parameters reported back (never cookie values: only whether a file was given).
_SEEN = ("js_runtimes", "extractor_args", "format", "cachedir", "socket_timeout",
         "ytproxy_test_marker")


class FakeTubeIE(InfoExtractor):
    IE_NAME = "faketube"
    _VALID_URL = (r"https?://(?P<host>127\.0\.0\.1|localhost|\[::1\]):(?P<port>\d+)"
                  r"/faketube/watch\?v=(?P<id>[A-Za-z0-9_-]{11})")

    def _real_extract(self, url: str) -> dict:  # type: ignore[type-arg]
        match = self._match_valid_url(url)
        video_id = match.group("id")
        params = self._downloader.params
        seen = {key: params.get(key) for key in _SEEN}
        seen["cookiefile"] = bool(params.get("cookiefile"))
        query = urllib.parse.urlencode({
            "v": video_id,
            "clients": ",".join(self._configuration_arg("player_client", ie_key="youtube")),
            "seen": json.dumps(seen, default=str),
        })
        base = f"http://{match.group('host')}:{match.group('port')}"
        refused = None
        try:
            player = self._download_json(f"{base}/faketube/player?{query}", video_id)
        except ExtractorError as exc:
            cause = exc.cause
            if not (isinstance(cause, HTTPError) and cause.status == 403):
                raise
            refused = cause.response.read().decode(errors="replace")
        if refused is not None:
            # Raised outside the except block, as YouTube's extractor raises its
            # sign-in error: yt-dlp then records it as expected (not a bug).
            raise ExtractorError(refused, expected=True)
        info = {
            "id": video_id,
            "title": player["title"],
            "uploader": player["uploader"],
            "duration": player["duration"],
            "formats": player["formats"],
        }
        if player.get("artist"):
            info["artist"] = player["artist"]
        return info
