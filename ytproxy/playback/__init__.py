"""What a listener gets: from the cache or relayed from upstream, held while
the resolver is out of reach, at the size upstream serves (never another
file's), counted as a play.  ``ytproxy.http.streams`` asks ``Playback`` and
writes the answer; nothing here knows HTTP."""

from ytproxy.playback.holding import held_stream_for
from ytproxy.playback.plays import PlayCounts
from ytproxy.playback.service import FALLBACK_MIME, Answer, Playback, RangeFor

__all__ = ["FALLBACK_MIME", "Answer", "PlayCounts", "Playback", "RangeFor", "held_stream_for"]
