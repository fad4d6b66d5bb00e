"""Test-only yt-dlp extractors for FakeTube's listings (tests.fakes.tube): a
YouTube Music songs search, a track's mix and a playlist, on loopback.

Each page URL is answered with ONE request to the fake
(``/faketube/listing/{search,mix,playlist}``), returned as a yt-dlp playlist
of flat ``url`` entries (id, title, duration, artists, channel), as YouTube's
own listings are: their ``ie_key`` is the FakeTube extractor's, so an entry
played later resolves through the fake's player endpoint, and with
``extract_flat`` none is resolved at listing time.
"""

from __future__ import annotations

import urllib.parse

from yt_dlp.extractor.common import InfoExtractor

_BASE = r"https?://(?P<host>127\.0\.0\.1|localhost|\[::1\]):(?P<port>\d+)"


class _FakeListingIE(InfoExtractor):
    _KIND = ""

    def _listing(self, url: str, query: dict[str, str], key: str) -> dict:  # type: ignore[type-arg]
        match = self._match_valid_url(url)
        base = f"http://{match.group('host')}:{match.group('port')}"
        data = self._download_json(
            f"{base}/faketube/listing/{self._KIND}?{urllib.parse.urlencode(query)}", key,
            note=f"Listing the {self._KIND}")
        entries = []
        for entry in data["entries"]:
            extra = {k: entry[k] for k in ("duration", "artists", "channel") if k in entry}
            entries.append(self.url_result(entry["url"], ie=entry.get("ie_key", "FakeTube"),
                                           video_id=entry["id"],
                                           title=entry.get("title"), **extra))
        return self.playlist_result(entries, data["id"], data["title"])


class FakeMusicSearchIE(_FakeListingIE):
    IE_NAME = "fakemusic:search"
    _KIND = "search"
    _VALID_URL = _BASE + r"/faketube/music/search\?q=(?P<q>[^#&]*)"

    def _real_extract(self, url: str) -> dict:  # type: ignore[type-arg]
        query = urllib.parse.unquote_plus(self._match_valid_url(url).group("q"))
        return self._listing(url, {"q": query}, query or "search")


class FakeMusicMixIE(_FakeListingIE):
    IE_NAME = "fakemusic:mix"
    _KIND = "mix"
    _VALID_URL = (_BASE + r"/faketube/music/watch\?v=(?P<id>[A-Za-z0-9_-]{11})"
                  r"&list=RDAMVM(?P=id)")

    def _real_extract(self, url: str) -> dict:  # type: ignore[type-arg]
        video_id = self._match_valid_url(url).group("id")
        return self._listing(url, {"v": video_id}, video_id)


class FakePlaylistIE(_FakeListingIE):
    IE_NAME = "fakemusic:playlist"
    _KIND = "playlist"
    _VALID_URL = _BASE + r"/faketube/playlist\?list=(?P<id>[A-Za-z0-9_-]+)"

    def _real_extract(self, url: str) -> dict:  # type: ignore[type-arg]
        list_id = self._match_valid_url(url).group("id")
        return self._listing(url, {"list": list_id}, list_id)
