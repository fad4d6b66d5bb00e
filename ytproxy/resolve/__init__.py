"""Resolving a track to a stream URL with yt-dlp: worker processes, rate limit,
breaker, single-flight, the JavaScript runtime and player clients, and the
checks on page URLs people give."""
