"""Search and radio: listings through the real yt-dlp (the FakeTube listing
plugin), one call each and none per entry, songs stored as tracks; GET /search;
the CLI as a real subprocess with no daemon running; autoplay's decisions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.tube import FakeTube
from tests.listening import CATALOGUE, add_catalogue, listening_config
from tests.ports import free_port
from tests.proxy_fixture import ProxyFactory
from tests.test_cli import Result, cli_env, run_ytproxy
from ytproxy.config import Config, ConfigError, config_from_mapping
from ytproxy.errors import BadQuery, InvalidTrackId, ResolverFailed, ResolverUnavailable
from ytproxy.follower.autoplay import AutoplaySong, History, autoplay_due, pick_songs
from ytproxy.library.listings import (
    MAX_LIMIT,
    Listings,
    Song,
    check_limit,
    check_query,
    radio_seed,
    radio_url,
    search_url,
    songs_from_listing,
)
from ytproxy.library.playlists import proxied_track
from ytproxy.library.store import Store
from ytproxy.resolve.resolver import Resolver

IDS = [song_id for song_id, _, _ in CATALOGUE]

# ------------------------------------------------------------------ pure decisions


def test_songs_from_a_flat_listing_take_yt_dlps_fields() -> None:
    info = {"_type": "playlist", "entries": [
        {"_type": "url", "ie_key": "Youtube", "id": "blueMoon001", "title": "Blue Moon",
         "artists": ["Ella Fitzgerald", "Louis Armstrong"], "channel": "Ella - Topic",
         "duration": 201},
        {"_type": "url", "ie_key": "Youtube", "id": "blueSky0002", "title": "Mr. Blue Sky",
         "channel": "ELO"},  # a music search entry may carry no artist nor duration
        {"_type": "url", "ie_key": "Youtube", "id": "blueVelvet3", "title": "Blue Velvet",
         "uploader": "Bobby Vinton", "duration": 0},
        {"_type": "url", "ie_key": "YoutubeTab", "id": "PLalbum0001", "title": "An album"},
        {"_type": "playlist", "id": "channel0001", "title": "A channel"},
        {"_type": "url", "ie_key": "Youtube", "id": "not an id", "title": "Broken"},
        {"_type": "url", "ie_key": "Youtube", "id": "blueMoon001", "title": "Again"},
        "garbage",
        {"_type": "url", "ie_key": "Youtube", "id": "kindOfBlue4", "track": "So What",
         "title": "Miles Davis - So What (Official Audio)", "artist": "Miles Davis"},
    ]}
    assert songs_from_listing(info, limit=10) == [
        Song("blueMoon001", "Blue Moon", "Ella Fitzgerald, Louis Armstrong", 201.0),
        Song("blueSky0002", "Mr. Blue Sky", "ELO", None),
        Song("blueVelvet3", "Blue Velvet", "Bobby Vinton", None),
        Song("kindOfBlue4", "So What", "Miles Davis", None),
    ]
    assert [s.id for s in songs_from_listing(info, limit=2)] == ["blueMoon001", "blueSky0002"]
    assert songs_from_listing({"_type": "playlist", "entries": []}, limit=5) == []
    assert songs_from_listing({"_type": "video", "id": "x"}, limit=5) == []
    assert Song("blueSky0002", "Mr. Blue Sky", None, None).name == "Mr. Blue Sky"
    assert Song("blueSky0002").name == "blueSky0002"


def test_queries_and_limits_are_checked_with_a_reason() -> None:
    assert check_query("  blue   moon ") == "blue moon"
    for bad, why in (("", "empty"), ("   ", "empty"), ("x" * 201, "201 characters"),
                     ("blue\x00moon", "control characters")):
        with pytest.raises(BadQuery, match=why):
            check_query(bad)
    assert check_limit(1) == 1 and check_limit(MAX_LIMIT) == MAX_LIMIT
    for bad_limit in (0, -1, MAX_LIMIT + 1):
        with pytest.raises(BadQuery, match=f"between 1 and {MAX_LIMIT}"):
            check_limit(bad_limit)


def test_templates_get_an_encoded_query_and_only_an_id() -> None:
    template = "https://music.youtube.com/search?q={query}#songs"
    assert search_url(template, "AC/DC & friends?#x") == (
        "https://music.youtube.com/search?q=AC%2FDC%20%26%20friends%3F%23x#songs")
    radio = "https://music.youtube.com/watch?v={id}&list=RDAMVM{id}"
    assert radio_url(radio, "blueMoon001") == (
        "https://music.youtube.com/watch?v=blueMoon001&list=RDAMVMblueMoon001")
    with pytest.raises(InvalidTrackId):
        radio_url(radio, "x&list=PLevil")


def test_a_radio_starts_from_an_id_a_watch_url_or_a_proxy_url() -> None:
    def ours(url: str) -> str | None:
        return proxied_track(url, "127.0.0.1", 6602)

    for given in ("blueMoon001", " blueMoon001 ",
                  "https://music.youtube.com/watch?v=blueMoon001&list=RDAMVMblueMoon001",
                  "https://youtu.be/blueMoon001", "http://127.0.0.1:6602/proxy/blueMoon001",
                  "http://localhost:6602/proxy/blueMoon001"):
        assert radio_seed(given, proxied=ours) == "blueMoon001", given
    with pytest.raises(InvalidTrackId, match="names no YouTube track"):
        radio_seed("https://example.com/song", proxied=ours)
    with pytest.raises(InvalidTrackId, match="neither"):
        radio_seed("blue moon", proxied=ours)


def song(track_id: str) -> AutoplaySong:
    return AutoplaySong(track_id, f"http://127.0.0.1:6602/proxy/{track_id}", "A", track_id)


def test_autoplay_is_due_on_the_last_song_with_nothing_after_it() -> None:
    last = {"state": "play", "repeat": "0", "random": "0", "single": "0", "consume": "0",
            "playlistlength": "3", "song": "2", "songid": "7"}
    assert autoplay_due(last)
    assert autoplay_due({**last, "random": "1"})  # random, and nothing left to choose
    assert autoplay_due({**last, "consume": "1", "playlistlength": "1", "song": "0"})
    assert not autoplay_due({**last, "nextsong": "0", "nextsongid": "5"})  # more to come
    assert not autoplay_due({**last, "repeat": "1"})
    assert not autoplay_due({**last, "single": "1"})
    assert not autoplay_due({**last, "single": "oneshot"})
    assert not autoplay_due({**last, "state": "pause"})
    assert not autoplay_due({**last, "state": "stop"})
    assert not autoplay_due({"state": "play", "repeat": "0", "playlistlength": "0"})


def test_autoplay_picks_mix_songs_neither_queued_nor_played_lately() -> None:
    mix = [song(i) for i in IDS]
    history = History(3)
    for played in ("blueMoon001", "greenOnions"):
        history.note(played)
    picked = pick_songs(mix, queued={"blueSky0002"}, history=history, n=2)
    assert [s.track_id for s in picked] == ["blueVelvet3", "kindOfBlue4"]
    assert [s.track_id for s in pick_songs(mix, queued=set(), history=history, n=10)] == [
        "blueSky0002", "blueVelvet3", "kindOfBlue4", "redRedWine6"]
    assert pick_songs(mix, queued=set(IDS), history=history, n=5) == []
    assert pick_songs([song("blueSky0002"), song("blueSky0002")], queued=set(), history=(),
                      n=5) == [song("blueSky0002")]


def test_the_history_keeps_the_last_songs_played() -> None:
    history = History(2)
    for played in ("a" * 11, "b" * 11, "a" * 11, "c" * 11):
        history.note(played)
    assert list(history) == ["a" * 11, "c" * 11]  # "b" fell out; "a" moved up when replayed
    assert "b" * 11 not in history and len(history) == 2
    none = History(0)
    none.note("a" * 11)
    assert len(none) == 0


def test_status_says_what_autoplay_did() -> None:
    from ytproxy.cli.status_view import mpd_line

    report = {"following": True, "address": "127.0.0.1:6600", "connected": True,
              "upcoming": [], "autoplay": {"songs": 5, "history": 3, "appended": 5,
                                           "failures": 1}}
    assert mpd_line(report) == ("127.0.0.1:6600 connected; next: —; autoplay: 5 appended, "
                                "1 mixes not listed")
    del report["autoplay"]
    assert mpd_line(report) == "127.0.0.1:6600 connected; next: —"


def test_the_new_keys_have_their_defaults_and_are_checked() -> None:
    config = Config()
    assert config.resolver.search_url_template == (
        "https://music.youtube.com/search?q={query}#songs")
    assert config.resolver.radio_url_template == (
        "https://music.youtube.com/watch?v={id}&list=RDAMVM{id}")
    assert (config.mpd.autoplay, config.mpd.autoplay_songs, config.mpd.autoplay_history) == (
        False, 5, 100)
    with pytest.raises(ConfigError) as bad:
        config_from_mapping({"resolver": {"search_url_template": "https://x/?q=",
                                          "radio_url_template": "https://x/mix"},
                             "mpd": {"autoplay_songs": 0, "autoplay_history": -1}})
    text = "\n".join(bad.value.errors)
    for key in ("search_url_template", "radio_url_template", "autoplay_songs",
                "autoplay_history"):
        assert key in text


def test_config_example_names_every_new_key() -> None:
    text = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    for key in ("search_url_template", "radio_url_template", "autoplay = false",
                "autoplay_songs = 5", "autoplay_history = 100"):
        assert key in text


# ------------------------------------------------------------------ the service


@pytest.fixture
async def listings(faketube: FakeTube, tmp_path: Path) -> AsyncIterator[tuple[Listings, Store]]:
    add_catalogue(faketube)
    config = Config().replace(
        "resolver", source_url_template=faketube.watch_url_template,
        search_url_template=faketube.search_url_template,
        radio_url_template=faketube.radio_url_template, timeout=20.0,
        max_calls_per_minute=6000)
    resolver = Resolver(config.resolver)
    store = await Store.open(tmp_path / "tracks.db")
    try:
        yield Listings(store=store, list_flat=resolver.listing,
                       source_url_for=resolver.source_url_for,
                       search_url_template=config.resolver.search_url_template,
                       radio_url_template=config.resolver.radio_url_template), store
    finally:
        await resolver.close()
        await store.close()


async def test_a_search_is_one_listing_and_stores_its_songs(
    faketube: FakeTube, listings: tuple[Listings, Store],
) -> None:
    service, store = listings
    songs = await service.search("  BLUE ", limit=3)
    assert [(s.id, s.artist, s.title, s.duration) for s in songs] == [
        ("blueMoon001", "Ella Fitzgerald", "Blue Moon", 180.0),
        ("blueSky0002", "Electric Light Orchestra", "Mr. Blue Sky", 181.0),
        ("blueVelvet3", "Bobby Vinton", "Blue Velvet", 182.0)]
    # One yt-dlp call, one request for the listing, none for any entry.
    assert faketube.listing_calls() == 1 and faketube.listing_calls("search", "BLUE") == 1
    assert faketube.player_requests == []
    for found in songs:
        track = await store.get(found.id)
        assert track is not None
        assert (track.artist, track.title, track.duration) == (
            found.artist, found.title, found.duration)
        assert track.source_url == faketube.watch_url_template.replace("{id}", found.id)
        assert track.stream_url is None  # resolved when played, not now
    assert await store.get("kindOfBlue4") is None  # past the limit: not stored


async def test_a_radio_is_the_mix_listed_once(
    faketube: FakeTube, listings: tuple[Listings, Store],
) -> None:
    service, store = listings
    songs = await service.radio(IDS[0], limit=4)
    assert [s.id for s in songs] == IDS[:4]  # the seed first, in the mix's order
    assert faketube.listing_calls("mix", IDS[0]) == 1 and faketube.listing_calls() == 1
    assert faketube.player_requests == []
    assert await store.count() == 4


async def test_a_stored_tracks_names_are_kept_and_its_gaps_filled(
    faketube: FakeTube, listings: tuple[Listings, Store],
) -> None:
    service, store = listings
    await store.upsert_track("blueMoon001", "https://www.youtube.com/watch?v=blueMoon001",
                             title="Blue Moon (1956)")
    songs = await service.search("blue moon")
    assert songs == [Song("blueMoon001", "Blue Moon (1956)", "Ella Fitzgerald", 180.0)]
    track = await store.get("blueMoon001")
    assert track is not None and track.source_url.startswith("https://www.youtube.com/")


async def test_listings_that_fail_say_why(
    faketube: FakeTube, listings: tuple[Listings, Store],
) -> None:
    service, store = listings
    with pytest.raises(ResolverFailed, match="cannot list the mix of greenOnions"):
        await service.radio("greenOnions")  # no mix: 404
    faketube.listing_faults["search:blue"] = 503
    with pytest.raises(ResolverUnavailable, match="503"):
        await service.search("blue")
    assert await service.search("no such words") == []
    assert await store.count() == 0


# ------------------------------------------------------------------ GET /search


async def get_json(proxy: Any, path: str, **headers: str) -> tuple[int, Any]:
    async with proxy.session.get(proxy.url(path), headers=headers) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_get_search_answers_json_and_stores_the_songs(
    faketube: FakeTube, make_tube_proxy: ProxyFactory,
) -> None:
    add_catalogue(faketube)
    proxy = await make_tube_proxy(resolver={
        "search_url_template": faketube.search_url_template,
        "radio_url_template": faketube.radio_url_template})
    status, body = await get_json(proxy, "/search?q=blue&limit=2")
    assert status == 200, body
    base = f"http://127.0.0.1:{proxy.config.server.port}"
    assert body == {"query": "blue", "results": [
        {"id": "blueMoon001", "title": "Blue Moon", "artist": "Ella Fitzgerald",
         "duration": 180.0, "name": "Ella Fitzgerald - Blue Moon",
         "url": f"{base}/proxy/blueMoon001"},
        {"id": "blueSky0002", "title": "Mr. Blue Sky", "artist": "Electric Light Orchestra",
         "duration": 181.0, "name": "Electric Light Orchestra - Mr. Blue Sky",
         "url": f"{base}/proxy/blueSky0002"}]}
    assert faketube.listing_calls() == 1 and faketube.player_requests == []
    status, stored = await get_json(proxy, "/tracks/blueSky0002")
    assert status == 200 and stored["name"] == "Electric Light Orchestra - Mr. Blue Sky"
    # What was found plays: resolved through the fake on first play.
    async with proxy.session.get(proxy.url("/proxy/blueSky0002")) as answer:
        assert answer.status == 200
        assert answer.headers["icy-name"] == "Electric Light Orchestra - Mr. Blue Sky"
        assert await answer.read() == faketube.tracks["blueSky0002"].data
    assert len(faketube.player_requests) == 1
    status, empty = await get_json(proxy, "/search?q=nothing+like+it")
    assert (status, empty) == (200, {"query": "nothing like it", "results": []})


@pytest.mark.parametrize(("query", "why"), [
    ("", "give one non-empty search query"),
    ("?q=", "give one non-empty search query"),
    ("?q=%20%20", "give one non-empty search query"),
    ("?q=a&q=b", "give one non-empty search query"),
    ("?q=" + "x" * 201, "201 characters"),
    ("?q=blue%00moon", "control characters"),
    ("?q=blue&limit=0", "from 1 to 50"),
    ("?q=blue&limit=51", "from 1 to 50"),
    ("?q=blue&limit=ten", "from 1 to 50"),
    ("?q=blue&limit=-1", "from 1 to 50"),
    ("?q=blue&page=2", "unknown parameter 'page'"),
])
async def test_get_search_refuses_bad_parameters_by_name(
    faketube: FakeTube, make_tube_proxy: ProxyFactory, query: str, why: str,
) -> None:
    proxy = await make_tube_proxy(resolver={
        "search_url_template": faketube.search_url_template})
    status, body = await get_json(proxy, "/search" + query)
    assert status == 400, body
    assert body["error"] == "bad_query" and why in body["message"], body
    assert faketube.listing_calls() == 0


async def test_get_search_needs_an_accepted_host_and_maps_failures(
    faketube: FakeTube, make_tube_proxy: ProxyFactory,
) -> None:
    proxy = await make_tube_proxy(resolver={
        "search_url_template": faketube.search_url_template})
    status, body = await get_json(proxy, "/search?q=blue", Host="evil.example")
    assert (status, body["error"]) == (403, "forbidden_host")
    # Another site's page may send a GET (not read its answer): no yt-dlp call for it.
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"},
                    {"Origin": "null"}):
        status, body = await get_json(proxy, "/search?q=blue", **headers)
        assert (status, body["error"]) == (403, "cross_site_request"), headers
    assert faketube.listing_calls() == 0
    status, body = await get_json(proxy, "/search?q=blue", **{"Sec-Fetch-Site": "same-origin"})
    assert status == 200, body
    faketube.listing_faults["search:blue"] = 500
    status, body = await get_json(proxy, "/search?q=blue")
    assert (status, body["error"]) == (503, "resolver_unavailable"), body
    assert faketube.listing_calls() == 2


# ------------------------------------------------------------------ the CLI, no daemon


@pytest.fixture
def listen_cli(tmp_path: Path, faketube: FakeTube) -> Any:
    config = listening_config(tmp_path / "config.toml", faketube, tmp_path / "tracks.db",
                              mpd_port=free_port())  # nothing listens there
    env = cli_env(tmp_path)

    async def run(*args: str) -> Result:
        return await run_ytproxy(env, "--config", str(config), *args)

    return run


async def test_cli_search_prints_a_numbered_table_and_json(
    faketube: FakeTube, listen_cli: Any, tmp_path: Path,
) -> None:
    add_catalogue(faketube)
    done = await listen_cli("search", "blue", "moon")
    assert done.rc == 0, done.err
    assert done.err == ""
    assert done.out == ("1. Ella Fitzgerald - Blue Moon  3:00  blueMoon001  "
                        "http://127.0.0.1:6602/proxy/blueMoon001\n")
    done = await listen_cli("search", "blue", "--limit", "2", "--json")
    assert done.rc == 0, done.err
    body = json.loads(done.out)
    assert body["query"] == "blue" and [r["id"] for r in body["results"]] == IDS[:2]
    assert body["results"][1]["name"] == "Electric Light Orchestra - Mr. Blue Sky"
    assert faketube.listing_calls("search") == 2 and faketube.player_requests == []
    store = await Store.open(tmp_path / "tracks.db")
    try:
        assert {t.id for t in await store.list_tracks()} == set(IDS[:2])
    finally:
        await store.close()


async def test_cli_radio_lists_the_mix(faketube: FakeTube, listen_cli: Any) -> None:
    add_catalogue(faketube)
    done = await listen_cli("radio", "https://music.youtube.com/watch?v=blueMoon001",
                            "--limit", "3")
    assert done.rc == 0, done.err
    lines = done.out.splitlines()
    assert [line.split()[0] for line in lines] == ["1.", "2.", "3."]
    assert "Ella Fitzgerald - Blue Moon" in lines[0] and "blueVelvet3" in lines[2]
    assert faketube.listing_calls("mix", "blueMoon001") == 1


async def test_cli_says_so_in_one_line_when_nothing_is_found_or_yt_dlp_fails(
    faketube: FakeTube, listen_cli: Any,
) -> None:
    add_catalogue(faketube)
    done = await listen_cli("search", "nothing", "like", "it")
    assert (done.rc, done.out) == (1, "")
    assert done.err == "ytproxy: no songs found for 'nothing like it'\n"
    done = await listen_cli("radio", "greenOnions")  # no mix: 404
    assert done.rc == 1 and done.out == ""
    assert done.err.count("\n") == 1 and done.err.startswith(
        "ytproxy: cannot list the mix of greenOnions:"), done.err
    assert "Traceback" not in done.err
    faketube.listing_faults["search:blue"] = 500
    done = await listen_cli("search", "blue")
    assert done.rc == 1 and done.err.count("\n") == 1, done.err
    assert done.err.startswith("ytproxy: could not reach the source right now") or \
        "500" in done.err, done.err
    for bad in (["search", "blue", "--limit", "0"], ["search", "blue", "--limit", "x"]):
        done = await listen_cli(*bad)
        assert done.rc == 2 and "from 1 to 50" in done.err, done.err
    done = await listen_cli("radio", "https://example.com/song")
    assert done.rc == 1 and "names no YouTube track" in done.err


async def test_cli_add_with_mpd_unreachable_prints_the_songs_and_names_mpd(
    faketube: FakeTube, listen_cli: Any, tmp_path: Path,
) -> None:
    add_catalogue(faketube)
    config_text = (tmp_path / "config.toml").read_text()
    port = config_text.split("port = ")[1].split()[0]
    done = await listen_cli("search", "blue", "--limit", "2", "--add")
    assert done.rc == 1
    assert len(done.out.splitlines()) == 2 and "blueMoon001" in done.out
    assert f"cannot queue the songs in MPD at 127.0.0.1:{port}" in done.err, done.err
    assert done.err.count("\n") == 1 and "Traceback" not in done.err


async def test_a_playlist_listing_imports_in_one_call(
    faketube: FakeTube, tmp_path: Path,
) -> None:
    """The plugin's playlist listing, read by `ytproxy import` as YouTube's are."""
    add_catalogue(faketube)
    faketube.playlists["PLbench0001"] = [IDS[2], IDS[0], IDS[4]]
    faketube.entry_ie_key = "Youtube"  # as YouTube lists its videos
    config = listening_config(tmp_path / "config.toml", faketube, tmp_path / "tracks.db",
                              extra="allow_private_sources = true\n")
    done = await run_ytproxy(cli_env(tmp_path), "--config", str(config), "import",
                             faketube.playlist_url("PLbench0001"), "--name", "Blues")
    assert done.rc == 0, done.err
    assert faketube.listing_calls("playlist", "PLbench0001") == 1
    assert faketube.listing_calls() == 1 and faketube.player_requests == []
    store = await Store.open(tmp_path / "tracks.db")
    try:
        tracks = await store.playlist_tracks("Blues")
        assert tracks is not None
        assert [(t.id, t.artist) for t in tracks] == [
            (IDS[2], "Bobby Vinton"), (IDS[0], "Ella Fitzgerald"), (IDS[4], CATALOGUE[4][1])]
    finally:
        await store.close()
