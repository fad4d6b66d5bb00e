"""The tracks people keep: the SQLite store, the tracks service playback asks
for a fresh stream URL (and each stream's source of them), and playlists."""

from ytproxy.library.listings import (
    MAX_LIMIT,
    MAX_QUERY_LENGTH,
    RADIO_LIMIT,
    SEARCH_LIMIT,
    Listings,
    Song,
    radio_seed,
    search_json,
)
from ytproxy.library.playlists import (
    check_playlist_name,
    proxied_track,
    proxy_base_url,
    remove_m3u_file,
    render_m3u,
)
from ytproxy.library.sources import TrackSources, refresher
from ytproxy.library.store import SCHEMA_VERSION, CacheRow, Store
from ytproxy.library.sync import POLL_MAX, PlaylistSyncer
from ytproxy.library.tracks import Tracks

__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_LENGTH",
    "POLL_MAX",
    "RADIO_LIMIT",
    "SCHEMA_VERSION",
    "SEARCH_LIMIT",
    "CacheRow",
    "Listings",
    "PlaylistSyncer",
    "Song",
    "Store",
    "TrackSources",
    "Tracks",
    "check_playlist_name",
    "proxied_track",
    "proxy_base_url",
    "radio_seed",
    "refresher",
    "remove_m3u_file",
    "render_m3u",
    "search_json",
]
