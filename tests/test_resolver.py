"""The resolver against the real yt-dlp reading the fake's watch page."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import random_audio
from ytproxy.config import ResolverConfig
from ytproxy.errors import ResolverFailed, ResolverUnavailable, TrackGone, YoutubeRefused
from ytproxy.resolve.resolver import Resolver, classify_error, expiry_from_url, strip_query

VID = "AbCdEfGhIj0"


def resolver_for(googlevideo: FakeGooglevideo) -> Resolver:
    return Resolver(
        ResolverConfig(source_url_template=googlevideo.watch_url_template, timeout=20.0)
    )


async def test_resolves_url_expiry_size_mime_and_title(googlevideo: FakeGooglevideo) -> None:
    data = random_audio(50_000)
    googlevideo.add_track(VID, data, title="Night Drive", mime="audio/webm")
    resolver = resolver_for(googlevideo)
    try:
        info = await resolver.resolve(resolver.source_url_for(VID))
    finally:
        await resolver.close()
    assert info.url.startswith(googlevideo.base_url + "/videoplayback?")
    assert abs(info.expires_at - (time.time() + googlevideo.url_ttl)) < 60
    assert info.size == len(data)  # from clen=
    assert info.mime == "audio/webm"  # from mime=
    assert info.title is not None and info.title.startswith("Night Drive")
    assert "Referer" in info.http_headers


async def test_twenty_concurrent_cold_requests_share_one_extraction(
    googlevideo: FakeGooglevideo,
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Shared")
    googlevideo.watch_delay = 0.5  # keep the first extraction in flight while the rest arrive
    resolver = resolver_for(googlevideo)
    try:
        source = resolver.source_url_for(VID)
        results = await asyncio.gather(*(resolver.resolve(source) for _ in range(20)))
    finally:
        await resolver.close()
    assert googlevideo.watch_hits[VID] == 1
    assert resolver.calls == 1 and resolver.joins == 19
    assert len({r.url for r in results}) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_call(
    googlevideo: FakeGooglevideo,
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Shared")
    googlevideo.watch_delay = 0.3
    resolver = resolver_for(googlevideo)
    try:
        source = resolver.source_url_for(VID)
        first = asyncio.create_task(resolver.resolve(source))
        second = asyncio.create_task(resolver.resolve(source))
        await asyncio.sleep(0)
        first.cancel()
        info = await second
    finally:
        await resolver.close()
    assert info.url
    assert googlevideo.watch_hits[VID] == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, TrackGone), (410, TrackGone), (429, ResolverUnavailable), (503, ResolverUnavailable)],
)
async def test_errors_are_classified(
    googlevideo: FakeGooglevideo, status: int, error: type[Exception]
) -> None:
    googlevideo.add_track(VID, random_audio(1000), title="Broken")
    googlevideo.set_watch_status(VID, status)
    resolver = resolver_for(googlevideo)
    try:
        with pytest.raises(error) as caught:
            await resolver.resolve(resolver.source_url_for(VID))
    finally:
        await resolver.close()
    assert str(caught.value)
    assert resolver.failures


async def test_a_refused_source_page_is_a_resolver_failure(
    googlevideo: FakeGooglevideo,
) -> None:
    # /videoplayback refuses a request with no Range (403): neither gone nor transient.
    resolver = Resolver(ResolverConfig(
        source_url_template=googlevideo.base_url + "/videoplayback?id={id}", timeout=20.0))
    try:
        with pytest.raises(ResolverFailed):
            await resolver.resolve(resolver.source_url_for(VID))
    finally:
        await resolver.close()


def test_classify_known_youtube_messages() -> None:
    def classify(message: str) -> type[Exception]:
        return type(classify_error(Exception(message), "https://example.invalid/x"))

    assert classify("ERROR: [youtube] abc: Video unavailable") is TrackGone
    assert classify("ERROR: [youtube] abc: Private video. Sign in if you've been granted access"
                    ) is TrackGone
    assert classify("ERROR: [youtube] abc: HTTP Error 429: Too Many Requests"
                    ) is ResolverUnavailable
    # YouTube refusing the address is a state, not a failure of the track (issue 25).
    assert classify("ERROR: [youtube] abc: Sign in to confirm you're not a bot"
                    ) is YoutubeRefused
    assert classify("ERROR: Unsupported URL: https://example.invalid/x") is ResolverFailed
    assert classify("ERROR: something new and strange") is ResolverFailed


def test_expiry_and_redaction() -> None:
    url = "https://rr1.googlevideo.com/videoplayback?expire=1700000000&sig=SECRET&ip=1.2.3.4"
    assert expiry_from_url(url) == 1_700_000_000
    assert expiry_from_url("https://x/videoplayback?sig=1") is None
    assert strip_query(url) == "https://rr1.googlevideo.com/videoplayback"
    assert "SECRET" not in strip_query(url)
