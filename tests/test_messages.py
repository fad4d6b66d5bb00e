"""yt-dlp's real wordings (its source, 2026.11) → one sentence a person can act on."""

from __future__ import annotations

import time

import pytest

from ytproxy.errors import ResolverFailed, ResolverUnavailable, TrackGone, YoutubeRefused
from ytproxy.resolve.messages import clock_time, describe, first_line
from ytproxy.resolve.resolver import classify_error

VID = "dQw4w9WgXcQ"
# yt_dlp/extractor/youtube/_video.py: the reason, then yt-dlp's advice.
RATE_LIMITED = (
    f"ERROR: [youtube] {VID}: This content isn't available, try again later. The current "
    "session has been rate-limited by YouTube for up to an hour. It is recommended to use "
    "`-t sleep` to add a delay between video requests to avoid exceeding the rate limit. For "
    "more information, refer to  https://github.com/yt-dlp/yt-dlp/wiki/Extractors"
    "#this-content-isnt-available-try-again-later")
# _youtube_login_hint: _login_hint(method="cookies") and the cookie how-to (YouTube's own
# reason has a typographic apostrophe).
_COOKIES_HINT = (
    "Use --cookies-from-browser or --cookies for the authentication. See  "
    "https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how to "
    "manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/Extractors"
    "#exporting-youtube-cookies  for tips on effectively exporting YouTube cookies")
BOT_CHECK = f"ERROR: [youtube] {VID}: Sign in to confirm you\u2019re not a bot. {_COOKIES_HINT}"
BOT_CHECK_ASCII = f"ERROR: [youtube] {VID}: Sign in to confirm you're not a bot. {_COOKIES_HINT}"
AGE = (f"ERROR: [youtube] {VID}: Sign in to confirm your age. This video may be inappropriate "
       f"for some users. {_COOKIES_HINT}")
PRIVATE = (f"ERROR: [youtube] {VID}: Private video. Sign in if you've been granted access to "
           f"this video. {_COOKIES_HINT}")
UNAVAILABLE = (f"ERROR: [youtube] {VID}: Video unavailable. This video is no longer available "
               "because the YouTube account associated with this video has been terminated.")
# What yt-dlp 2026.11 said here with no network (requests handler, urllib3's
# NameResolutionError), and the urllib handler's wording.
DNS = (f"ERROR: [youtube] {VID}: Unable to download API page: HTTPSConnection(host="
       "'www.youtube.com', port=443): Failed to resolve 'www.youtube.com' ([Errno -2] Name or "
       "service not known) (caused by TransportError(\"HTTPSConnection(host='www.youtube.com', "
       "port=443): Failed to resolve 'www.youtube.com' ([Errno -2] Name or service not "
       "known)\"))")
DNS_URLLIB = (f"ERROR: [youtube] {VID}: Unable to download API page: <urlopen error [Errno -3] "
              "Temporary failure in name resolution> (caused by TransportError('<urlopen error "
              "[Errno -3] Temporary failure in name resolution>'))")
TOO_OLD = (f"ERROR: [youtube] {VID}: Unable to extract yt initial data; please report this "
           "issue on  https://github.com/yt-dlp/yt-dlp/issues?q= , filling out the appropriate "
           "issue template. Confirm you are on the latest version using  yt-dlp -U")


@pytest.mark.parametrize(("text", "kind", "words"), [
    (RATE_LIMITED, "rate_limited", "rate-limits this address"),
    (BOT_CHECK, "bot_check", "PO-token provider"),
    (BOT_CHECK_ASCII, "bot_check", "cookies"),
    (AGE, "age_restricted", "age-restricted"),
    (PRIVATE, "private", "private"),
    (UNAVAILABLE, "unavailable", "unavailable"),
    (DNS, "network", "cannot look up www.youtube.com"),
    (DNS_URLLIB, "network", "cannot reach YouTube"),
    (TOO_OLD, "too_old", "pip install -U"),
])
def test_each_wording_gets_its_kind_and_one_short_sentence(text: str, kind: str,
                                                           words: str) -> None:
    said = describe(text)
    assert said.kind == kind
    assert words in said.sentence
    # One sentence, with none of yt-dlp's command-line advice or its repetition.
    assert len(said.sentence) < 200 and "\n" not in said.sentence
    for flag in ("--cookies", "-t sleep", "caused by", "yt-dlp -U", "https://"):
        assert flag not in said.sentence


def test_a_rate_limit_names_when_it_ends() -> None:
    until = time.time() + 3600
    said = describe(RATE_LIMITED, until=until)
    assert f"until {clock_time(until)}" in said.sentence
    assert "cookies" in said.sentence  # signed in, the limit is higher
    assert "cookies" not in describe(RATE_LIMITED, until=until, cookies=True).sentence


def test_bot_check_with_cookies_says_to_export_fresh_ones() -> None:
    assert "fresh cookies" in describe(BOT_CHECK, cookies=True).sentence


def test_unknown_text_is_kept_short() -> None:
    said = describe("ERROR: " + "x" * 400 + " (caused by Foo('x'))")
    assert said.kind == "other" and len(said.sentence) < 260 and "caused by" not in said.sentence


def test_first_line_drops_the_repetition() -> None:
    assert first_line(DNS).count("Failed to resolve") == 1
    assert not first_line(DNS).startswith("ERROR")


@pytest.mark.parametrize(("text", "error", "state"), [
    (RATE_LIMITED, YoutubeRefused, "rate_limited"),
    (BOT_CHECK, YoutubeRefused, "bot_check"),
    (AGE, ResolverFailed, None),
    (PRIVATE, TrackGone, None),
    (UNAVAILABLE, TrackGone, None),
    (DNS, ResolverUnavailable, None),
    (TOO_OLD, ResolverFailed, None),
])
def test_classified_errors_carry_the_sentence_and_keep_the_raw_text(
        text: str, error: type[Exception], state: str | None) -> None:
    classified = classify_error(Exception(text), f"https://www.youtube.com/watch?v={VID}")
    assert type(classified) is error
    assert str(classified) == describe(text).sentence
    assert classified.detail == text.removeprefix("ERROR: ")
    if state is not None:
        assert isinstance(classified, YoutubeRefused) and classified.state == state
    # The DNS line said once, not three times (issue 25).
    assert str(classified).count("Failed to resolve") == 0
    assert len(str(classified)) < 200
