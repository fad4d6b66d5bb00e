"""A track id is checked once, where it enters, and refused with one message everywhere."""

from __future__ import annotations

import pickle

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory
from ytproxy.errors import InvalidTrackId
from ytproxy.models import TrackId

GOOD = "Zx9_-Zx9_-A"
MESSAGE_END = " is not a track id (11 characters of A-Z a-z 0-9 _ -)"


def test_a_track_id_is_the_string_it_was_made_from() -> None:
    checked = TrackId(GOOD)
    assert checked == GOOD and isinstance(checked, str) and hash(checked) == hash(GOOD)
    assert TrackId(checked) is checked  # already checked: not checked again
    assert pickle.loads(pickle.dumps(checked)) == GOOD  # crosses to the yt-dlp workers


@pytest.mark.parametrize("value", ["", "short", GOOD + "x", "Zx9_-Zx9_-!", "x&list=PLevil",
                                   "../../admin", "ÿx9_-Zx9_-A", GOOD + "\n"])
def test_anything_else_is_refused_with_the_one_message(value: str) -> None:
    with pytest.raises(InvalidTrackId) as info:
        TrackId(value)
    assert str(info.value) == repr(value) + MESSAGE_END
    assert (info.value.status, info.value.code) == (400, "bad_id")


def test_a_long_refused_id_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidTrackId) as info:
        TrackId("a" * 4000)
    assert str(info.value).endswith("…" + MESSAGE_END) and len(str(info.value)) < 150


def test_a_non_string_is_refused_too() -> None:
    with pytest.raises(InvalidTrackId):
        TrackId(12345678901)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/proxy/bad%20id", "/tracks/bad%20id", "/proxy/" + "b" * 3000])
async def test_every_route_answers_a_bad_id_with_the_same_body(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, path: str
) -> None:
    proxy = await make_proxy()
    raw = path.rsplit("/", 1)[1].replace("%20", " ")
    with pytest.raises(InvalidTrackId) as expected:
        TrackId(raw)
    async with proxy.session.get(proxy.url(path)) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body == {"error": "bad_id", "message": str(expected.value)}
    assert googlevideo.requests == []


async def test_a_prefetch_names_the_field_and_gives_the_same_words(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(cache={"max_size": 10_000_000})
    async with proxy.session.post(proxy.url("/cache/prefetch"),
                                  json={"ids": [GOOD, "bad id"]}) as resp:
        assert resp.status == 400
        body = await resp.json()
    words = 'field "ids": ' + repr("bad id") + MESSAGE_END
    assert body == {"error": "bad_request", "message": words}
