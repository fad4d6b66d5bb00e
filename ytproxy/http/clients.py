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
GStreamer             ``User-Agent: GStreamer         yes       yes             no
                      souphttpsrc …`` (its default)
anyone else (mpv,     —                               yes       yes             if asked
ffmpeg, curl,
browsers)
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
- GStreamer 1.22's icydemux, which souphttpsrc's ``icy-metaint`` brings in,
  answers no duration query and keeps counting metadata across a seek
  (gsticydemux.c resets its count only on a state change): with inline
  metadata, gst-discoverer says "Seekable: no" and a seek plays noise.  Its
  only title would be StreamTitle: ``icy-name`` becomes an ``organization``
  tag that matroskademux, after souphttpsrc, drops (``gst-launch-1.0 -t``).
- "if asked": only with ``Icy-MetaData: 1`` in the request, and only when
  ``[icy] inline_metadata`` is on.  Every answer's metadata blocks are counted
  from its own first byte, a ``206``'s too: ffmpeg and mpv restart their count
  on each answer and seek exactly.  MPD 0.23 never asks for a range of such a
  stream (an answer with ``icy-metaint`` makes its input unseekable) yet lets
  ffmpeg seek in it: in WebM forward by reading on (silent meanwhile), and
  backwards not at all; in fragmented MP4 it lands elsewhere, or the song ends.
  MPD 0.24.7 and later refuse to seek it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from multidict import MultiMapping

__all__ = ["Shape", "answer_shape"]


@dataclass(frozen=True, slots=True)
class Shape:
    """What one answer carries, apart from the bytes."""

    #: The kind of client, for logs and tests: "mpd", "vlc", "gstreamer" or "other".
    client: str
    #: Send ``icy-name: Artist - Title``.
    icy_name: bool
    #: Send ``Content-Length`` on a whole-body (200) answer (else it is chunked).
    whole_length: bool
    #: The client asked for inline ICY metadata and can be sent it.
    icy_inline: bool


_MPD = Shape("mpd", icy_name=True, whole_length=False, icy_inline=True)
_VLC = Shape("vlc", icy_name=False, whole_length=True, icy_inline=False)
_GSTREAMER = Shape("gstreamer", icy_name=True, whole_length=True, icy_inline=False)
_OTHER = Shape("other", icy_name=True, whole_length=True, icy_inline=True)


def answer_shape(headers: MultiMapping[str] | Mapping[str, str]) -> Shape:
    """The shape of the answer to a request with these headers (see the module's table)."""
    agent = headers.get("User-Agent", "").strip()
    if agent.startswith("VLC/"):
        return _VLC
    if agent.startswith("GStreamer souphttpsrc"):
        return _GSTREAMER
    if headers.get("Icy-MetaData", "").strip() != "1":
        return replace(_OTHER, icy_inline=False)
    return _MPD if agent.startswith("Music Player Daemon") else _OTHER
