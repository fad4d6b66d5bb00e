"""M3U playlists that point MPD at the proxy, and the rules for naming them.

A playlist's name becomes a file name in MPD's playlist directory
(``NAME.m3u``, loaded with ``mpc load NAME``) and a path segment in
``/playlist/NAME.m3u``, so names are kept to a small, portable alphabet.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from ytproxy.errors import InvalidPlaylistName
from ytproxy.models import Track, TrackId, is_video_id, safe_display_name

__all__ = [
    "MAX_PLAYLIST_NAME",
    "check_playlist_name",
    "proxy_base_url",
    "remove_m3u_file",
    "render_m3u",
    "safe_playlist_name",
    "write_m3u_file",
]

MAX_PLAYLIST_NAME = 64
# First character: no dot (a hidden file), no space, no dash (mpc would read
# `mpc load -x` as an option); last character: no space.
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_. -]*[A-Za-z0-9_.-])?")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_. -]+")


def proxy_base_url(host: str, port: int) -> str:
    """The URL MPD should use; a wildcard bind is reached through loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})


def proxied_track(uri: str, host: str, port: int) -> TrackId | None:
    """The track id in ``uri`` when it is this daemon's ``/proxy/<id>`` URL (as
    playlists and ``mpc add`` give MPD), else None."""
    try:
        parts = urlsplit(uri)
        uri_port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or uri_port != port or not parts.hostname:
        return None
    name, bound = parts.hostname.lower(), host.lower()
    wildcard = bound in ("0.0.0.0", "::", "")
    loopback = bound in _LOOPBACK_NAMES or bound.startswith("127.")
    if not (name == bound or wildcard or (loopback and name in _LOOPBACK_NAMES)):
        return None
    track_id = parts.path.removeprefix("/proxy/")
    return TrackId(track_id) if parts.path.startswith("/proxy/") and is_video_id(track_id) else None


def render_m3u(tracks: Iterable[Track], base_url: str) -> str:
    lines = ["#EXTM3U"]
    for track in tracks:
        seconds = round(track.duration) if track.duration is not None else -1
        lines.append(f"#EXTINF:{seconds},{safe_display_name(track.name)}")
        lines.append(f"{base_url}/proxy/{track.id}")
    return "\n".join(lines) + "\n"


def check_playlist_name(name: str) -> str:
    """``name`` if it can be a playlist name, else ``InvalidPlaylistName`` naming it."""
    if len(name) > MAX_PLAYLIST_NAME or _NAME_RE.fullmatch(name) is None:
        raise InvalidPlaylistName(
            f"{name!r} is not a usable playlist name: use 1-{MAX_PLAYLIST_NAME} letters, "
            "digits, spaces, '.', '_' or '-', starting with a letter, digit or '_' "
            "and not ending with a space (it becomes NAME.m3u in MPD's playlist directory)"
        )
    return name


def safe_playlist_name(title: str | None, fallback: str) -> str:
    """A valid playlist name made from a playlist's title ("Café: Best/Of" → "Cafe Best Of")."""
    ascii_title = (
        unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode("ascii")
    )
    name = " ".join(_UNSAFE_RUN.sub(" ", ascii_title).split())
    name = name.lstrip(".- ")[:MAX_PLAYLIST_NAME].rstrip()
    if name and _NAME_RE.fullmatch(name):
        return name
    return check_playlist_name(fallback)


def write_m3u_file(directory: Path, name: str, text: str) -> Path:
    """Write ``directory/NAME.m3u`` atomically: MPD never reads a half-written file.

    Raises ``OSError`` (e.g. the directory does not exist: it is MPD's, so it
    is not created here).
    """
    check_playlist_name(name)
    target = directory / f"{name}.m3u"
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644  # mkstemp's 0600 would hide the file from an MPD running as its own user
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return target


def remove_m3u_file(directory: Path, name: str) -> Path | None:
    """Remove ``directory/NAME.m3u``; the path removed, or None when there was none."""
    check_playlist_name(name)
    target = directory / f"{name}.m3u"
    try:
        target.unlink()
    except FileNotFoundError:
        return None
    return target
