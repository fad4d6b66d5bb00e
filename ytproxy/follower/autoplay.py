"""Autoplay's decisions, and songs appended to MPD's queue with their names.

When MPD plays the last song of its queue with repeat off (``autoplay_due``),
the follower asks for that song's mix and appends the songs ``pick_songs``
chooses: in the mix's order, none already queued, none among the songs played
lately (``History``).  ``queue_songs`` appends with ``addid`` and gives each
song its Artist and Title (``addtagid``, which MPD allows for remote songs),
so mpc and ncmpcpp show a name before the song is ever played.  Used by the
follower and by ``ytproxy search/radio --add``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import mpd.base  # type: ignore[import-untyped]

__all__ = ["AutoplaySong", "History", "autoplay_due", "pick_songs", "queue_songs"]

log = logging.getLogger(__name__)


class AutoplaySong(NamedTuple):
    """A song that may be queued: its track id, the URL MPD plays, its names."""

    track_id: str
    uri: str
    artist: str | None = None
    title: str | None = None


def autoplay_due(status: Mapping[str, str]) -> bool:
    """Whether MPD (its ``status``) is playing the last song of its queue with
    nothing to follow: repeat and single off, no next song."""
    if status.get("state") != "play" or status.get("repeat") == "1":
        return False
    if status.get("single", "0") != "0":  # MPD stops after this song whatever comes next
        return False
    length = status.get("playlistlength", "0")
    if not length.isdigit() or int(length) == 0 or not status.get("songid"):
        return False
    return "nextsong" not in status


def pick_songs(mix: Sequence[AutoplaySong], *, queued: Collection[str],
               history: Collection[str], n: int) -> list[AutoplaySong]:
    """Up to ``n`` songs of ``mix`` in its order, each once, none whose track id
    is ``queued`` or in the ``history`` of songs played."""
    picked: list[AutoplaySong] = []
    taken: set[str] = set()
    for song in mix:
        if len(picked) >= n:
            break
        if song.track_id in queued or song.track_id in history or song.track_id in taken:
            continue
        taken.add(song.track_id)
        picked.append(song)
    return picked


class History:
    """The track ids of the last ``size`` songs played, kept in memory (a
    restart forgets them), oldest first; a song played again moves to the end."""

    def __init__(self, size: int) -> None:
        self._size = max(0, size)
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def note(self, track_id: str) -> None:
        if self._size == 0:
            return
        self._ids.pop(track_id, None)
        self._ids[track_id] = None
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))


async def queue_songs(client: Any, songs: Iterable[AutoplaySong]) -> list[str]:
    """Append ``songs`` to the queue of the MPD ``client`` (python-mpd2's asyncio
    client) in order, each named; MPD's song ids of those added, in order.

    A name MPD will not take (an MPD that refuses ``addtagid``) costs only the
    name: the song is queued all the same, and shows its Name once played.
    """
    added: list[str] = []
    for song in songs:
        song_id = str(await client.addid(song.uri))
        added.append(song_id)
        for tag, value in (("artist", song.artist), ("title", song.title)):
            if not value:
                continue
            try:
                await client.addtagid(song_id, tag, value)
            except mpd.base.CommandError as exc:
                log.debug("mpd: could not name %s (%s %r): %s", song.uri, tag, value, exc)
    return added
