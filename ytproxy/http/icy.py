"""ICY (SHOUTcast/Icecast) metadata: response headers and the inline framer.

With ``icy-metaint: N`` every N audio bytes are followed by one metadata
block: a length byte L, then L*16 bytes of ``StreamTitle='…';`` padded with
NUL (L = 0 when nothing changed).  Each answer is framed from its own first
byte, a ``206``'s too, as ffmpeg and mpv count.  Inline metadata is opt-in:
it costs MPD its seeking (see ytproxy.http.clients).
"""

from __future__ import annotations

from ytproxy.models import safe_display_name

__all__ = ["IcyFramer", "metadata_block", "parse_icy_stream"]

_MAX_BLOCK = 255 * 16


def metadata_block(title: str) -> bytes:
    """One ICY metadata block carrying ``StreamTitle``, truncated to fit 4080 bytes.

    ICY has no escaping: ``'`` ends the value in most parsers and ``;`` ends
    the field in those that split on it, so they become ``’`` and ``；``; a
    NUL would end the block (``safe_display_name`` takes control characters).
    """
    escaped = safe_display_name(title).replace("'", "’").replace(";", "；")
    text = f"StreamTitle='{escaped}';".encode()
    if len(text) > _MAX_BLOCK:
        body = escaped.encode()[: _MAX_BLOCK - len("StreamTitle='';")]
        text = b"StreamTitle='" + body.decode(errors="ignore").encode() + b"';"
    blocks = -(-len(text) // 16)
    return bytes([blocks]) + text.ljust(blocks * 16, b"\0")


class IcyFramer:
    """Interleaves a metadata block after every ``metaint`` audio bytes.

    The title is sent at the first block and again only when it changes.
    """

    def __init__(self, metaint: int, title: str) -> None:
        self.metaint = metaint
        self._until_meta = metaint
        self._title = title
        self._sent_title: str | None = None

    def set_title(self, title: str) -> None:
        self._title = title

    def frame(self, data: bytes) -> bytes:
        """``data`` with the metadata blocks due inside it, as one buffer: the
        relay writes each piece once (one send, one HTTP chunk), whatever the
        number of metadata blocks it crosses."""
        if len(data) < self._until_meta:
            self._until_meta -= len(data)
            return data
        view = memoryview(data)
        parts: list[bytes | memoryview] = []
        while len(view) >= self._until_meta:
            parts.append(view[: self._until_meta])
            view = view[self._until_meta:]
            self._until_meta = self.metaint
            if self._title != self._sent_title:
                self._sent_title = self._title
                parts.append(metadata_block(self._title))
            else:
                parts.append(b"\0")
        if view:
            parts.append(view)
            self._until_meta -= len(view)
        return b"".join(parts)


def parse_icy_stream(data: bytes, metaint: int) -> tuple[bytes, list[str]]:
    """Split an ICY body back into audio and the metadata texts (used by tests and tools)."""
    audio = bytearray()
    metas: list[str] = []
    pos = 0
    while pos < len(data):
        audio += data[pos: pos + metaint]
        pos += metaint
        if pos >= len(data):
            break
        length = data[pos] * 16
        pos += 1
        if length:
            metas.append(data[pos: pos + length].rstrip(b"\0").decode(errors="replace"))
        pos += length
    return bytes(audio), metas
