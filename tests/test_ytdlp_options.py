"""What each yt-dlp call is given (runtime, cookies, the person's options), what
ytproxy reads back from its info dict, and the player-client policy built on
yt-dlp's private tables (the tables themselves: tests/test_ytdlp_private.py)."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from ytproxy.config import ResolverConfig
from ytproxy.errors import ResolverFailed
from ytproxy.resolve.jsruntime import JsRuntime, find_js_runtime, runtime_version
from ytproxy.resolve.resolver import (
    Resolver,
    plain_http_format,
    stream_info_from,
    ytdlp_cache_dir,
)
from ytproxy.resolve.ytdlp_clients import (
    FALLBACK_CLIENTS,
    clients_in_force,
    clients_named,
    options_avoiding,
    po_token_providers,
)

DENO = Path(sys.executable).parent / "deno"


# -- yt-dlp's private tables, as ytproxy.resolve.ytdlp_clients uses them -------------


def test_yt_dlp_still_has_the_innertube_client_table_ytproxy_reads() -> None:
    # If this fails, yt-dlp moved or reshaped INNERTUBE_CLIENTS: client failover
    # cannot tell which clients made a refused URL; fix ytproxy/private/ytdlp.py.
    tv = clients_named(["TVHTML5"])
    assert {"tv", "tv_samsung"} <= set(tv), tv
    assert clients_named(["VISIONOS"]) == ["visionos"]
    assert clients_named(["visionos"]) == ["visionos"]  # c= is matched case-blind
    assert clients_named(["NO_SUCH_CLIENT"]) == []


def test_yt_dlp_still_has_the_default_clients_and_token_policies_doctor_reads() -> None:
    # If this fails, yt-dlp moved or reshaped _DEFAULT_*_CLIENTS, GVS_PO_TOKEN_POLICY
    # or WEBPO_CLIENTS: doctor cannot tell which clients are asked and which need a
    # PO token; fix ytproxy/private/ytdlp.py.
    plain = clients_in_force({}, cookies=False)
    signed = clients_in_force({}, cookies=True)
    assert plain.clients and signed.clients and plain.clients != signed.clients
    assert "visionos" not in signed.clients  # it takes no cookies
    assert clients_in_force({}, cookies=False, js_runtime=False).clients == ("visionos",)
    assert "visionos" not in plain.need_token  # needs no token (FACTS.md)
    web = clients_in_force({"extractor_args": {"youtube": {"player_client": ["web", "mweb"]}}},
                           cookies=False)
    assert web.clients == ("web", "mweb") and web.need_token == ("web", "mweb")
    assert web.provider_serves == ("web", "mweb")
    android = clients_in_force({"extractor_args": {"youtube": {"player_client": "android"}}},
                               cookies=False)
    assert android.need_token == ("android",) and android.provider_serves == ()
    assert signed.premium and "web_creator" in signed.premium


def test_the_persons_player_client_is_read_as_yt_dlp_reads_it() -> None:
    def asked(*clients: str, cookies: bool = False) -> tuple[str, ...]:
        options = {"extractor_args": {"youtube": {"player_client": list(clients)}}}
        return clients_in_force(options, cookies=cookies).clients

    default = clients_in_force({}, cookies=False).clients
    assert asked("default", "mweb") == (*default, "mweb")
    assert asked("default", f"-{default[0]}") == default[1:]
    assert asked("no_such_client") == default  # skipped, as yt-dlp skips it
    assert "visionos" not in asked("visionos", "web", cookies=True)
    assert clients_in_force({}, cookies=True, music=True).clients[-1] == "web_music"


def test_po_token_providers_are_the_ones_yt_dlp_loads() -> None:
    providers = po_token_providers()
    assert po_token_providers() == providers  # loading twice registers nothing twice
    try:
        import yt_dlp_plugins.extractor.getpot_bgutil as plugin  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("pip install -e '.[pot]' brings bgutil-ytdlp-pot-provider")
    assert providers["bgutil:http"] == plugin.__version__


def test_avoiding_a_client_keeps_the_persons_list_and_adds_others() -> None:
    options = {"extractor_args": {"youtube": {"player_client": ["default", "ios"],
                                              "skip": ["dash"]}}, "geo_bypass": False}
    out = options_avoiding(options, ["TVHTML5"])
    clients = out["extractor_args"]["youtube"]["player_client"]
    assert clients[:2] == ["default", "ios"]
    assert "-tv_samsung" in clients and "-tv" in clients
    assert "tv" not in clients and "visionos" in clients
    assert out["extractor_args"]["youtube"]["skip"] == ["dash"]
    assert out["geo_bypass"] is False
    # The caller's options are not changed in place.
    assert options["extractor_args"]["youtube"]["player_client"] == ["default", "ios"]
    assert set(FALLBACK_CLIENTS) - {"tv", "tv_simply"} <= set(clients)


def test_avoiding_nothing_known_changes_nothing() -> None:
    options = {"format": "251"}
    assert options_avoiding(options, ["NO_SUCH_CLIENT"]) == options


# -- the JavaScript runtime -----------------------------------------------------


def test_auto_finds_the_deno_the_install_brought_next_to_the_interpreter() -> None:
    assert DENO.is_file(), "pip install '.[test]' brings deno (yt-dlp's deno extra)"
    assert find_js_runtime("auto") == JsRuntime("deno", str(DENO))
    assert find_js_runtime("deno") == JsRuntime("deno", str(DENO))
    version = runtime_version(str(DENO))
    assert version is not None and version.startswith("deno ")


def test_a_runtime_named_by_path_or_missing(tmp_path: Path) -> None:
    assert find_js_runtime(str(DENO)) == JsRuntime("deno", str(DENO))
    assert find_js_runtime(str(tmp_path / "nothing")) is None
    assert find_js_runtime("bun") is None or find_js_runtime("bun").name == "bun"  # type: ignore[union-attr]
    fake_node = tmp_path / "nodejs-20"
    fake_node.write_text("#!/bin/sh\necho v20.20.2\n")
    fake_node.chmod(0o755)
    assert find_js_runtime(str(fake_node)) == JsRuntime("node", str(fake_node))


# -- the options of one call ---------------------------------------------------


def options_of(config: ResolverConfig) -> dict[str, object]:
    return Resolver(config)._options(noplaylist=True, format="x")


def test_every_call_names_the_runtime_found_and_keeps_a_cache() -> None:
    options = options_of(ResolverConfig())
    assert options["js_runtimes"] == {"deno": {"path": str(DENO)}}
    assert options["cachedir"] == str(ytdlp_cache_dir())
    assert options["quiet"] is True and options["noplaylist"] is True
    assert "cookiefile" not in options and "cookiesfrombrowser" not in options


def test_no_runtime_found_is_a_warning_and_no_js_runtimes_option(
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING)
    options = options_of(ResolverConfig(js_runtime=str(tmp_path / "missing")))
    assert "js_runtimes" not in options
    assert "no JavaScript runtime found" in caplog.text


def test_the_persons_options_are_merged_and_ytproxys_own_win() -> None:
    config = ResolverConfig(ytdlp_options={
        "extractor_args": {"youtube": {"player_client": ["default", "tv"]}},
        "socket_timeout": 3, "cachedir": False})
    options = options_of(config)
    assert options["extractor_args"] == {"youtube": {"player_client": ["default", "tv"]}}
    assert options["socket_timeout"] == 3 and options["cachedir"] is False
    assert options["format"] == "x" and options["quiet"] is True


def test_cookies_file_is_given_to_every_call_and_browser_cookies_as_a_tuple(
    tmp_path: Path,
) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    cookies.chmod(0o600)
    options = options_of(ResolverConfig(cookies_file=str(cookies),
                                        cookies_from_browser="firefox:work"))
    assert options["cookiefile"] == str(cookies)
    assert options["cookiesfrombrowser"] == ("firefox", "work", None, None)


def test_cookies_file_readable_by_others_warns_once_without_its_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tsecret-value-42\n")
    cookies.chmod(0o644)
    resolver = Resolver(ResolverConfig(cookies_file=str(cookies)))
    resolver._options()
    resolver._options()
    warnings = [r for r in caplog.records if "can be read by other users" in r.getMessage()]
    assert len(warnings) == 1
    assert "chmod 600" in warnings[0].getMessage()
    assert "secret-value-42" not in caplog.text
    assert stat.S_IMODE(cookies.stat().st_mode) == 0o644  # ytproxy changes nothing


def test_a_missing_cookies_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone.txt"
    with pytest.raises(ResolverFailed, match=r"cannot read resolver\.cookies_file .*gone\.txt"):
        options_of(ResolverConfig(cookies_file=str(missing)))


# -- what is read back -------------------------------------------------------


def test_plain_http_format_limits_every_alternative() -> None:
    assert plain_http_format("bestaudio[acodec=opus]/bestaudio/best") == (
        "bestaudio[acodec=opus][protocol~='^https?$']/bestaudio[protocol~='^https?$']"
        "/best[protocol~='^https?$']")
    assert plain_http_format("251") == "251[protocol~='^https?$']"
    assert plain_http_format("bv+ba/b") == "bv+ba/b[protocol~='^https?$']"


def info(**extra: object) -> dict[str, object]:
    return {"url": "https://rr1---sn-x.googlevideo.com/videoplayback?expire=2000000000"
                   "&c=TVHTML5&ip=2001:db8::1&clen=1234",
            "ext": "webm", "format_id": "251", "protocol": "https",
            "http_headers": {"User-Agent": "UA"}, **extra}


def test_stream_info_keeps_format_id_available_at_client_and_cookie() -> None:
    result = stream_info_from(info(available_at=1_900_000_000, http_headers={
        "User-Agent": "UA", "Cookie": "SID=abc"}), url_ttl=60, now=0)
    assert result.format_id == "251"
    assert result.available_at == 1_900_000_000
    assert result.client == "TVHTML5"
    assert result.size == 1234
    assert result.http_headers == {"User-Agent": "UA", "Cookie": "SID=abc"}


def test_a_manifest_format_is_refused_with_what_to_change() -> None:
    with pytest.raises(ResolverFailed, match=r"m3u8_native format .*resolver\.format"):
        stream_info_from(info(protocol="m3u8_native"), url_ttl=60, now=0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_cookies_file(tmp_path: Path) -> None:  # pragma: no cover - root here
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("x")
    cookies.chmod(0)
    with pytest.raises(ResolverFailed, match="cannot read"):
        options_of(ResolverConfig(cookies_file=str(cookies)))
