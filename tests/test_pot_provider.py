"""PO-token providers (issue 25, item 3): ``[resolver] pot_provider_url`` as
check-config reads it and as every yt-dlp call receives it (the real yt-dlp,
through the FakeTube plugin), and ``ytproxy doctor``'s lines on it: a stand-in
provider server on loopback answering the plugin's ``/ping`` (right version,
another major version, another patch version), none listening, no plugin; and
which player clients yt-dlp asks, read from yt-dlp itself."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.local_servers import FakeMpd, free_port, http_server, running_daemon, write_toml
from tests.fakes.tube import FakeTube
from tests.proxy_fixture import ProxyFactory, random_audio
from tests.test_cli import cli_env, run_ytproxy
from tests.test_config_ytdlp import check_config
from ytproxy.cli.doctor import Check, run_checks
from ytproxy.config import ConfigError, config_from_mapping, load_config
from ytproxy.resolve.resolver import Resolver

VID = "PoTokenTr01"
# The plugin's extractor_args table (getpot_bgutil_http.py reads base_url there).
POT_PROVIDER_ARGS = "youtubepot-bgutilhttp"
# yt-dlp loads the plugin from this environment (`pip install '.[pot]'`).
HAS_PLUGIN = importlib.util.find_spec("yt_dlp_plugins.extractor.getpot_bgutil") is not None
needs_plugin = pytest.mark.skipif(not HAS_PLUGIN, reason="pip install -e '.[pot]' brings "
                                  "bgutil-ytdlp-pot-provider, which these tests check")


def plugin_version() -> str:
    """The installed plugin's own version (what it compares the server's with)."""
    import yt_dlp_plugins.extractor.getpot_bgutil as plugin  # type: ignore[import-not-found]

    return str(plugin.__version__)


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def mpd() -> AsyncIterator[FakeMpd]:
    server = FakeMpd()
    await server.start()
    yield server
    await server.close()


class StandInProvider:
    """bgutil's provider server as its plugin sees it: ``GET /ping`` answers
    ``{"server_uptime": s, "version": v}``; every request is recorded."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _ping(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.json_response({"server_uptime": 4000.5, "version": self.version})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ping", self._ping)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def provider() -> AsyncIterator[StandInProvider]:
    server = StandInProvider(plugin_version() if HAS_PLUGIN else "2.0.0")
    await server.start()
    yield server
    await server.close()


def config_file(tmp_path: Path, source_port: int, mpd_port: int,
                **resolver: Any) -> Path:
    """Everything doctor checks healthy on loopback, plus these [resolver] keys."""
    return write_toml(tmp_path / "config.toml", {
        "server": {"port": free_port()},
        "store": {"path": str(tmp_path / "data" / "tracks.db")},
        "resolver": {"source_url_template": f"http://127.0.0.1:{source_port}/watch?v={{id}}",
                     **resolver},
        "upstream": {"allowed_hosts": ["*.example.org"]},  # skipped: nothing sent
        "mpd": {"host": "127.0.0.1", "port": mpd_port, "lookahead": 0},
    })


async def doctor_lines(tmp_path: Path, path: Path,
                       **env: str) -> tuple[int, list[str], str]:
    """``python -m ytproxy --config PATH doctor``: exit status, its lines, all of it."""
    result = await run_ytproxy({**cli_env(tmp_path), **env}, "--config", str(path), "doctor",
                               "--timeout", "2")
    return result.rc, result.out.splitlines(), result.out + result.err


def named(checks: list[Check], name: str) -> Check:
    (check,) = [c for c in checks if c.name == name]
    return check


# -- the setting ---------------------------------------------------------------


def test_the_url_is_taken_and_empty_is_the_default() -> None:
    assert config_from_mapping({}).resolver.pot_provider_url == ""
    config = config_from_mapping({"resolver": {"pot_provider_url": "http://127.0.0.1:4416"}})
    assert config.resolver.pot_provider_url == "http://127.0.0.1:4416"


@pytest.mark.parametrize("value", ["127.0.0.1:4416", "ftp://127.0.0.1:4416",
                                   "http://", "http://127.0.0.1:99999",
                                   "http://127.0.0.1:4416/?x=1", "http://h:4416/#f"])
def test_a_bad_url_is_refused_naming_the_key_and_the_value(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"resolver": {"pot_provider_url": value}})
    (error,) = info.value.errors
    assert "resolver.pot_provider_url" in error and repr(value) in error
    assert "http://127.0.0.1:4416" in error  # an example of a good one


def test_check_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "pot.toml"
    path.write_text('[resolver]\npot_provider_url = "localhost:4416"\n', encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 1
    assert f"{path}: resolver.pot_provider_url must be the http:// or https:// URL" \
        in result.stderr


def test_the_url_in_two_places_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"resolver": {
            "pot_provider_url": "http://127.0.0.1:4416",
            "ytdlp_options": {"extractor_args": {POT_PROVIDER_ARGS: {
                "base_url": ["http://127.0.0.1:8080"]}}}}})
    (error,) = info.value.errors
    assert f"extractor_args.{POT_PROVIDER_ARGS}.base_url" in error
    assert "resolver.pot_provider_url" in error


def test_the_plugins_argument_joins_the_persons_extractor_args() -> None:
    from ytproxy.ytdlp_options import with_extractor_arg

    theirs = {"youtube": {"player_client": ["default", "mweb"]},
              POT_PROVIDER_ARGS: {"other": ["x"]}}
    merged = with_extractor_arg(theirs, POT_PROVIDER_ARGS, "base_url", "http://h:1")
    assert merged == {"youtube": {"player_client": ["default", "mweb"]},
                      POT_PROVIDER_ARGS: {"other": ["x"], "base_url": ["http://h:1"]}}
    assert theirs[POT_PROVIDER_ARGS] == {"other": ["x"]}  # not changed in place
    assert with_extractor_arg(None, "a", "b", "c") == {"a": {"b": ["c"]}}


def test_options_carry_the_url_without_a_trailing_slash_and_nothing_when_unset() -> None:
    resolver = Resolver(config_from_mapping({"resolver": {
        "pot_provider_url": "http://127.0.0.1:4416/"}}).resolver)
    assert resolver._options()["extractor_args"] == {
        POT_PROVIDER_ARGS: {"base_url": ["http://127.0.0.1:4416"]}}
    assert "extractor_args" not in Resolver(config_from_mapping({}).resolver)._options()


async def test_every_yt_dlp_call_carries_the_url_as_the_plugins_base_url(
    faketube: FakeTube, make_tube_proxy: ProxyFactory,
) -> None:
    data = random_audio(50_000)
    faketube.add_track(VID, data, title="With a provider")
    proxy = await make_tube_proxy(resolver={
        "pot_provider_url": "http://127.0.0.1:4416",
        "ytdlp_options": {"extractor_args": {"youtube": {"player_client": ["default", "mweb"]}}},
    })
    async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.read() == data
    (player,) = faketube.player_requests
    args = player.seen["extractor_args"]
    assert isinstance(args, dict)
    assert args[POT_PROVIDER_ARGS]["base_url"] == ["http://127.0.0.1:4416"]
    assert args["youtube"]["player_client"] == ["default", "mweb"]  # the person's, kept
    assert player.clients == ["default", "mweb"]


# -- doctor --------------------------------------------------------------------


@needs_plugin
async def test_doctor_reports_the_providers_version_and_the_clients_it_serves(
    tmp_path: Path, mpd: FakeMpd, provider: StandInProvider, no_env_proxy: None,
) -> None:
    async with http_server() as source_port:
        path = config_file(tmp_path, source_port, mpd.port, pot_provider_url=provider.url)
        async with running_daemon(path):
            rc, lines, text = await doctor_lines(tmp_path, path)
    assert rc == 0, text
    (line,) = [li for li in lines if li.startswith("ok    pot provider")]
    version = plugin_version()
    assert f"bgutil provider {version} at {provider.url}" in line
    assert f"plugin {version}" in line and "up 67 min" in line
    assert provider.requests == ["/ping"]


@needs_plugin
@pytest.mark.parametrize("version", ["1.9.9", "9.0.0"])
async def test_another_major_version_fails_doctor(
    tmp_path: Path, mpd: FakeMpd, provider: StandInProvider, no_env_proxy: None,
    version: str,
) -> None:
    provider.version = version
    async with http_server() as source_port:
        path = config_file(tmp_path, source_port, mpd.port, pot_provider_url=provider.url)
        async with running_daemon(path):
            rc, lines, text = await doctor_lines(tmp_path, path)
    assert rc == 1, text
    fails = [li for li in lines if li.startswith("fail")]
    assert len(fails) == 1 and fails[0].startswith("fail  pot provider"), text
    assert f"provider {version}" in fails[0] and f"plugin {plugin_version()}" in fails[0]
    assert "refuses a server of another major version" in fails[0]
    fix = lines[lines.index(fails[0]) + 1]
    assert f"bgutil-ytdlp-pot-provider=={version}" in fix and plugin_version() in fix


@needs_plugin
async def test_another_patch_version_is_a_warning_as_the_plugin_itself_warns(
    tmp_path: Path, provider: StandInProvider, no_env_proxy: None,
) -> None:
    major = plugin_version().split(".", 1)[0]
    provider.version = f"{major}.999.0"
    path = write_toml(tmp_path / "c.toml", {"resolver": {"pot_provider_url": provider.url},
                                            "store": {"path": str(tmp_path / "t.db")}})
    config = load_config(str(path))
    from ytproxy.cli.po_token import check_pot_provider, read_ytdlp_view

    check = await check_pot_provider(config, read_ytdlp_view(config, True), 2.0)
    assert check.level == "warn", check
    assert "the versions differ" in check.detail and f"{major}.999.0" in check.detail


@needs_plugin
async def test_a_server_that_is_not_a_provider_fails_naming_the_url(tmp_path: Path) -> None:
    from ytproxy.cli.po_token import check_pot_provider, read_ytdlp_view

    async with http_server() as port:  # answers every path with an HTML page
        url = f"http://127.0.0.1:{port}"
        config = config_from_mapping({"resolver": {"pot_provider_url": url}})
        check = await check_pot_provider(config, read_ytdlp_view(config, True), 2.0)
    assert check.level == "fail", check
    assert check.detail.startswith(f"{url}/ping answered HTTP 200 without a version")
    assert plugin_version() in check.fix


@needs_plugin
async def test_none_listening_is_one_failing_line_naming_the_url(
    tmp_path: Path, mpd: FakeMpd, no_env_proxy: None,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with http_server() as source_port:
        path = config_file(tmp_path, source_port, mpd.port, pot_provider_url=url)
        async with running_daemon(path):
            rc, lines, text = await doctor_lines(tmp_path, path)
    assert rc == 1, text
    fails = [li for li in lines if li.startswith("fail")]
    assert fails == [f"fail  pot provider    nothing answers at {url} (connection refused)"], text
    assert "systemctl --user start bgutil-pot-provider" in lines[lines.index(fails[0]) + 1]


async def test_a_url_without_the_plugin_fails_naming_the_extra(
    tmp_path: Path, mpd: FakeMpd, provider: StandInProvider, no_env_proxy: None,
) -> None:
    async with http_server() as source_port:
        path = config_file(tmp_path, source_port, mpd.port, pot_provider_url=provider.url)
        async with running_daemon(path):
            # yt-dlp's own switch: it loads no plugins, as if none were installed.
            rc, lines, text = await doctor_lines(tmp_path, path, YTDLP_NO_PLUGINS="1")
    assert rc == 1, text
    (fail,) = [li for li in lines if li.startswith("fail")]
    assert fail.startswith("fail  pot provider") and provider.url in fail
    assert "pip install 'ytproxy[pot]'" in lines[lines.index(fail) + 1]
    assert provider.requests == []  # no plugin: nothing to compare with


async def test_no_url_is_a_skip_saying_what_a_provider_is_for(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", {"store": {"path": str(tmp_path / "t.db")},
                                            "mpd": {"host": ""}})
    checks = await run_checks(str(path), timeout=0.5)
    check = named(checks, "pot provider")
    assert check.level == "skip"
    assert "pot_provider_url is not set" in check.detail and "token" in check.detail


async def test_doctor_names_the_clients_yt_dlp_asks_with_and_without_cookies(
    tmp_path: Path,
) -> None:
    from yt_dlp.extractor.youtube._video import YoutubeIE

    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    cookies.chmod(0o600)
    plain = write_toml(tmp_path / "a.toml", {"store": {"path": str(tmp_path / "t.db")},
                                             "mpd": {"host": ""}})
    signed = write_toml(tmp_path / "b.toml", {"store": {"path": str(tmp_path / "t.db")},
                                              "mpd": {"host": ""},
                                              "resolver": {"cookies_file": str(cookies)}})
    chosen = tmp_path / "c.toml"
    chosen.write_text(f'[store]\npath = "{tmp_path / "t.db"}"\n[mpd]\nhost = ""\n'
                      "[resolver.ytdlp_options]\nextractor_args = {youtube = {player_client = "
                      '["mweb", "web_music"]}}\n', encoding="utf-8")
    without = named(await run_checks(str(plain), timeout=0.5), "player clients")
    assert without.level == "ok"
    assert without.detail.startswith(", ".join(YoutubeIE._DEFAULT_CLIENTS)
                                     + " (yt-dlp's defaults without cookies)")
    with_cookies = named(await run_checks(str(signed), timeout=0.5), "player clients")
    assert with_cookies.detail.startswith(", ".join(YoutubeIE._DEFAULT_AUTHED_CLIENTS)
                                          + " (yt-dlp's defaults with cookies)")
    assert "with YouTube Premium: " + ", ".join(YoutubeIE._DEFAULT_PREMIUM_CLIENTS) \
        in with_cookies.detail
    assert with_cookies.detail != without.detail
    # The person's player_client wins; both need a token, and none is set up.
    override = named(await run_checks(str(chosen), timeout=0.5), "player clients")
    assert override.level == "warn", override
    assert override.detail.startswith("mweb, web_music (resolver.ytdlp_options")
    assert "every one of them needs a PO token" in override.detail

