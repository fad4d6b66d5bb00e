"""Which answer each kind of player gets, decided from its request alone.

Measured with the players themselves (Debian 12: MPD 0.23.12, VLC 3.0.24,
GStreamer 1.22.0, mpv 0.35.1, ffmpeg 5.1); the table is ``answer_shape``:

====================  ==============================  ========  ==============  ========
client                recognised by                   icy-name  Content-Length  inline
                                                                on a 200        metadata
====================  ==============================  ========  ==============  ========
MPD                   ``User-Agent: Music Player      yes       no (chunked)    if asked
                      Daemon …`` and ``Icy-MetaData:
                      1`` (sent on every request)
VLC                   ``User-Agent: VLC/…``           no        yes             no
anyone else (mpv,     —                               yes       yes             if asked
GStreamer, ffmpeg,
curl, browsers)
====================  ==============================  ========  ==============  ========

- MPD 0.23 wraps a seekable stream of known size in a buffer that drops stream
  tags, so a whole body with ``Content-Length`` would lose its Name: MPD's
  whole-body answers go out chunked; its seeks (``Range``) get exact ``206``s.
- VLC 3.0 hands any answer carrying ``icy-name`` to its old Shoutcast module
  ("redirecting to: icyx://…"), which asks again over HTTP/1.0 with
  ``Icy-MetaData: 1`` and no ``Range`` and reconnects at every end of stream:
  the song plays over and over and cannot be sought.  VLC asks first without
  ``Icy-MetaData``, so any ICY header is left out for it.
- GStreamer's souphttpsrc sends ``icy-metadata: 1`` on every request and mpv
  and ffmpeg send ``Icy-MetaData: 1``: unlike MPD they need ``Content-Length``
  on a 200 to know the length and to seek.
- "if asked": only with ``Icy-MetaData: 1`` in the request, and only when
  ``[icy] inline_metadata`` is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from multidict import MultiMapping

__all__ = ["Shape", "answer_shape"]


@dataclass(frozen=True, slots=True)
class Shape:
    """What one answer carries, apart from the bytes."""

    #: The kind of client, for logs and tests: "mpd", "vlc" or "other".
    client: str
    #: Send ``icy-name: Artist - Title``.
    icy_name: bool
    #: Send ``Content-Length`` on a whole-body (200) answer (else it is chunked).
    whole_length: bool
    #: The client asked for inline ICY metadata and can be sent it.
    icy_inline: bool


_MPD = Shape("mpd", icy_name=True, whole_length=False, icy_inline=True)
_VLC = Shape("vlc", icy_name=False, whole_length=True, icy_inline=False)
_OTHER = Shape("other", icy_name=True, whole_length=True, icy_inline=True)


def answer_shape(headers: MultiMapping[str] | Mapping[str, str]) -> Shape:
    """The shape of the answer to a request with these headers (see the module's table)."""
    agent = headers.get("User-Agent", "").strip()
    if agent.startswith("VLC/"):
        return _VLC
    if headers.get("Icy-MetaData", "").strip() != "1":
        return replace(_OTHER, icy_inline=False)
    return _MPD if agent.startswith("Music Player Daemon") else _OTHER
