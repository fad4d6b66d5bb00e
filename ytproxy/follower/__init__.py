"""MPD look-ahead: an MPD client that follows the queue and names the next
songs that are this daemon's tracks, for the cache to download ahead."""
