"""What a listener gets: from the cache or relayed from upstream, held while
the resolver is out of reach, at the size upstream serves (never another
file's), counted as a play.  ``ytproxy.http.streams`` asks ``Playback`` and
writes the answer; nothing here knows HTTP.

``service`` decides (``Playback.listen``), ``holding`` holds a listener while
the resolver is out of reach, ``plays`` counts plays in the store."""

from ytproxy.playback.service import Answer, Playback, RangeFor

__all__ = ["Answer", "Playback", "RangeFor"]
