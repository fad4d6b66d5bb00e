"""Every use of a library's private or undocumented parts, and nothing else.

``aiohttp`` (and asyncio's transports, as aiohttp uses them), ``mpd``
(python-mpd2) and ``ytdlp`` (yt-dlp's player-client tables and PO-token
registry): each piece says why no public API does its job.  Everything else
in ytproxy uses public APIs only, and reaches these parts through the
functions here, never the private names themselves.
``tests/test_aiohttp_private.py``, ``tests/test_mpd_private.py`` and
``tests/test_ytdlp_private.py`` check each piece against the installed library
and fail naming the piece that changed.
"""

# One module per library, each its own face (its __all__): importing this
# package loads none of them (the daemon never loads yt-dlp).
__all__ = ["aiohttp", "mpd", "ytdlp"]
