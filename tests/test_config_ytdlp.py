"""The [resolver] keys for real YouTube: js_runtime, cookies, ytdlp_options, and
the 10 MiB range cap, as check-config and the daemon read them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ytproxy.config import (
    MAX_CHUNK_SIZE,
    ConfigError,
    config_from_mapping,
    load_config,
    render_config,
)
from ytproxy.ytdlp_options import OWNED_YTDLP_OPTIONS, browser_cookie_spec

REPO = Path(__file__).resolve().parent.parent


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YTPROXY_")}
    return subprocess.run([sys.executable, "-m", "ytproxy", "--config", str(path),
                           "check-config"], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def test_chunk_size_above_10_mib_is_refused_by_check_config_with_the_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.toml"
    path.write_text("[upstream]\nchunk_size = 20000000\n", encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 1
    line = next(li for li in result.stderr.splitlines() if "upstream.chunk_size" in li)
    assert "20000000" in line and str(MAX_CHUNK_SIZE) in line
    assert "googlevideo throttles" in line


def test_chunk_size_of_exactly_10_mib_is_accepted() -> None:
    config = config_from_mapping({"upstream": {"chunk_size": MAX_CHUNK_SIZE}})
    assert config.upstream.chunk_size == MAX_CHUNK_SIZE


def test_ytdlp_options_table_loads_and_check_config_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "opts.toml"
    path.write_text(
        '[resolver.ytdlp_options]\n'
        'extractor_args = {youtube = {player_client = ["default", "tv"]}}\n'
        'geo_bypass = false\n', encoding="utf-8")
    config = load_config(str(path))
    assert config.resolver.ytdlp_options == {
        "extractor_args": {"youtube": {"player_client": ["default", "tv"]}},
        "geo_bypass": False,
    }
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)["resolver"]["ytdlp_options"]
    assert shown == config.resolver.ytdlp_options


@pytest.mark.parametrize("key", sorted(OWNED_YTDLP_OPTIONS))
def test_each_key_ytproxy_owns_is_refused_naming_it_and_its_replacement(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"resolver": {"ytdlp_options": {key: "x"}}})
    (error,) = info.value.errors
    assert f"resolver.ytdlp_options.{key}" in error
    assert OWNED_YTDLP_OPTIONS[key] in error


def test_refused_key_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[resolver.ytdlp_options]\nproxy = "http://127.0.0.1:3128"\n',
                    encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 1
    assert f"{path}: resolver.ytdlp_options.proxy is set by ytproxy; use upstream.proxy" \
        in result.stderr


def test_ytdlp_options_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"resolver\.ytdlp_options must be a table"):
        config_from_mapping({"resolver": {"ytdlp_options": "extractor_args=x"}})


def test_secrets_in_ytdlp_options_are_masked_in_check_config() -> None:
    config = config_from_mapping({"resolver": {"ytdlp_options": {
        "password": "hunter22", "username": "me"}}})
    text = render_config(config)
    assert "hunter22" not in text
    assert tomllib.loads(text)["resolver"]["ytdlp_options"] == {
        "password": "***", "username": "me"}


@pytest.mark.parametrize(("value", "spec"), [
    ("firefox", ("firefox", None, None, None)),
    ("Chrome:Profile 1", ("chrome", "Profile 1", None, None)),
    ("chromium+gnomekeyring:work", ("chromium", "work", "GNOMEKEYRING", None)),
    ("firefox::Personal", ("firefox", None, None, "Personal")),
    ("", None),
])
def test_cookies_from_browser_is_read_as_yt_dlp_reads_it(
    value: str, spec: tuple[str, ...] | None,
) -> None:
    assert browser_cookie_spec(value) == spec
    config = config_from_mapping({"resolver": {"cookies_from_browser": value}})
    assert config.resolver.cookies_from_browser == value


def test_unknown_browser_is_refused_naming_the_value_and_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"resolver": {"cookies_from_browser": "netscape"}})
    (error,) = info.value.errors
    assert "resolver.cookies_from_browser" in error and "'netscape'" in error
    assert "firefox" in error


@pytest.mark.parametrize(("key", "value", "says"), [
    ("max_available_wait", -1, "between 0 and 600"),
    ("max_available_wait", 601, "between 0 and 600"),
    ("js_runtime", " ", "auto"),
])
def test_bad_values_name_the_key(key: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"resolver": {key: value}})
    (error,) = info.value.errors
    assert f"resolver.{key}" in error and says in error


def test_cookies_file_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = config_from_mapping({"resolver": {"cookies_file": "~/cookies.txt"}})
    assert config.resolver.resolved_cookies_file == tmp_path / "cookies.txt"
    assert config_from_mapping({}).resolver.resolved_cookies_file is None
