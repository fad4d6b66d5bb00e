"""The answer-shape table: which headers each kind of player gets."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from ytproxy.http.clients import answer_shape

MPD = "Music Player Daemon 0.23.12"
VLC = "VLC/3.0.24 LibVLC/3.0.24"
GST = "GStreamer souphttpsrc 1.22.0 libsoup/2.74.3"


@pytest.mark.parametrize(("headers", "client", "icy_name", "whole_length", "icy_inline"), [
    # The requests each player sent, as measured (see ytproxy/http/clients.py).
    ({"User-Agent": MPD, "Icy-MetaData": "1"}, "mpd", True, False, True),
    ({"User-Agent": VLC, "Range": "bytes=0-"}, "vlc", False, True, False),
    # VLC's Shoutcast module, should anything still send it there.
    ({"User-Agent": VLC, "Icy-MetaData": "1"}, "vlc", False, True, False),
    # icydemux cannot seek nor tell the length: no inline metadata for GStreamer.
    ({"User-Agent": GST, "icy-metadata": "1"}, "gstreamer", True, True, False),
    ({"User-Agent": "libmpv", "Icy-MetaData": "1", "Range": "bytes=0-"},
     "other", True, True, True),
    ({"User-Agent": "Lavf/59.27.100", "Icy-MetaData": "1"}, "other", True, True, True),
    ({"User-Agent": "curl/7.88.1"}, "other", True, True, False),
    ({}, "other", True, True, False),
    # MPD sends Icy-MetaData: 1 on every request: without it, not MPD's shape.
    ({"User-Agent": MPD}, "other", True, True, False),
    ({"User-Agent": MPD, "Icy-MetaData": "0"}, "other", True, True, False),
])
def test_answer_shape_table(headers: dict[str, str], client: str, icy_name: bool,
                            whole_length: bool, icy_inline: bool) -> None:
    shape = answer_shape(CIMultiDict(headers))
    assert (shape.client, shape.icy_name, shape.whole_length, shape.icy_inline) == (
        client, icy_name, whole_length, icy_inline)
