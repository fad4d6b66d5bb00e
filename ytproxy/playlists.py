"""M3U playlists that point MPD at the proxy."""

from __future__ import annotations

from collections.abc import Iterable

from ytproxy.models import Track

__all__ = ["proxy_base_url", "render_m3u"]


def proxy_base_url(host: str, port: int) -> str:
    """The URL MPD should use; a wildcard bind is reached through loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def render_m3u(tracks: Iterable[Track], base_url: str) -> str:
    lines = ["#EXTM3U"]
    for track in tracks:
        seconds = round(track.duration) if track.duration is not None else -1
        name = track.name.replace("\n", " ").replace("\r", " ")
        lines.append(f"#EXTINF:{seconds},{name}")
        lines.append(f"{base_url}/proxy/{track.id}")
    return "\n".join(lines) + "\n"
