"""MPD look-ahead: an MPD client that follows the queue and names the next
songs that are this daemon's tracks, for the cache to download ahead."""

from ytproxy.follower.autoplay import AutoplaySong, queue_songs
from ytproxy.follower.queue import MpdFollower, mpd_candidates

__all__ = ["AutoplaySong", "MpdFollower", "mpd_candidates", "queue_songs"]
