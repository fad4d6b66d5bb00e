"""ICY framer: what is injected parses back to the same audio and titles."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from ytproxy.http.icy import IcyFramer, metadata_block, parse_icy_stream


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    metaint=st.integers(min_value=1, max_value=700),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
    title=st.text(max_size=60),
)
def test_framing_round_trips(data: bytes, metaint: int, cuts: list[int], title: str) -> None:
    framer = IcyFramer(metaint, title)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    out = b"".join(framer.frame(data[a:b]) for a, b in pairwise(bounds))
    audio, metas = parse_icy_stream(out, metaint)
    assert audio == data
    blocks = len(data) // metaint
    assert len(out) == len(data) + blocks + (len(metadata_block(title)) - 1 if blocks else 0)
    if blocks:
        assert metas == [metadata_block(title)[1:].rstrip(b"\0").decode()]


def test_title_is_resent_only_when_it_changes() -> None:
    framer = IcyFramer(4, "A - B")
    out = framer.frame(b"1234")
    out += framer.frame(b"5678")
    framer.set_title("C - D")
    out += framer.frame(b"9abc")
    audio, metas = parse_icy_stream(out, 4)
    assert audio == b"123456789abc"
    assert metas == ["StreamTitle='A - B';", "StreamTitle='C - D';"]


def test_block_shape_and_limits() -> None:
    block = metadata_block("Artist - Title")
    assert block[0] * 16 == len(block) - 1
    assert block[1:].rstrip(b"\0") == b"StreamTitle='Artist - Title';"
    huge = metadata_block("x" * 10_000)
    assert len(huge) - 1 <= 4080 and huge[0] == (len(huge) - 1) // 16
    # An apostrophe would end the quoted value early in most parsers.
    assert metadata_block("it's")[1:].rstrip(b"\0") == "StreamTitle='it’s';".encode()
