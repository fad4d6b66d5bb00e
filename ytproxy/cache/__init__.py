"""The download-ahead disk cache: tracks fetched whole at upstream's speed into
sparse files, listeners served from them, replays with no upstream at all."""

from ytproxy.cache.body import CachedBody
from ytproxy.cache.download import DiskFull, Download
from ytproxy.cache.files import AudioCache, CacheFile
from ytproxy.cache.service import CacheSnapshot, Downloading, TrackCache

__all__ = ["AudioCache", "CacheFile", "CacheSnapshot", "CachedBody", "DiskFull", "Download",
           "Downloading", "TrackCache"]
