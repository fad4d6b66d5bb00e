"""Configuration: defaults, look-up order, every contract key, errors named together."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ytproxy.config import (
    Config,
    ConfigError,
    LimitsConfig,
    ResolverConfig,
    RetryConfig,
    config_from_mapping,
    find_config_file,
    load_config,
    render_config,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No YTPROXY_* from the developer's shell; HOME and XDG point at empty tmp dirs."""
    for name in list(os.environ):
        if name.startswith("YTPROXY_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    xdg = tmp_path / "xdg"
    home.mkdir()
    xdg.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    return xdg


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ytproxy", *args],
        capture_output=True, text=True, timeout=60, env=env if env is not None else dict(
            os.environ), cwd=REPO,
    )


# -- defaults and look-up -------------------------------------------------


def test_each_section_checks_its_own_keys() -> None:
    # The rule is declared with the key; checks of keys together are the section's too.
    assert RetryConfig(attempts=101).problems("retry") == [
        ("retry.attempts", "retry.attempts must be between 0 and 100, got 101")]
    assert RetryConfig(base_delay=2.0, max_delay=1.0).problems("retry") == [
        ("retry.max_delay", "retry.max_delay must be >= retry.base_delay, got 1.0")]
    assert [key for key, _ in ResolverConfig(
        timeout=0.0, ytdlp_options={"quiet": False}).problems("resolver")] == [
        "resolver.timeout", "resolver.ytdlp_options"]
    for name in ("server", "store", "resolver", "upstream", "limits", "icy", "retry",
                 "breaker", "mpd", "cache", "library"):
        assert getattr(Config(), name).problems(name) == [], name  # the defaults are valid


def test_defaults_with_no_file() -> None:
    assert find_config_file() is None
    config = load_config()
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 6602
    assert config.store.path == "~/.local/share/ytproxy/tracks.db"
    assert config.resolver.source_url_template == "https://www.youtube.com/watch?v={id}"
    assert config.resolver.workers == 2
    assert config.resolver.format == "bestaudio[acodec=opus]/bestaudio/best"
    assert config.upstream.chunk_size == 1_048_576
    assert config.upstream.allowed_hosts == ("*.googlevideo.com", "*.youtube.com")
    assert config.limits.max_streams == 10
    assert config.icy.inline_metadata is False
    # Every key equals the dataclass default.
    assert dataclasses.replace(config, source=None) == Config()


def test_store_path_expands_home(tmp_path: Path) -> None:
    config = load_config()
    assert config.store.resolved_path == tmp_path / "home/.local/share/ytproxy/tracks.db"


def test_check_config_with_no_file_prints_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YTPROXY_")}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "built-in defaults" in out
    for line in (
        "[server]", 'host = "127.0.0.1"', "port = 6602",
        "[store]", 'path = "~/.local/share/ytproxy/tracks.db"',
        "[resolver]", 'source_url_template = "https://www.youtube.com/watch?v={id}"',
        "workers = 2", 'format = "bestaudio[acodec=opus]/bestaudio/best"',
        "[upstream]", "chunk_size = 1048576",
        'allowed_hosts = ["*.googlevideo.com", "*.youtube.com"]',
        "[limits]", "max_streams = 10",
        "[icy]", "inline_metadata = false",
    ):
        assert line in out.splitlines(), line
    assert result.stderr == ""


def test_render_config_is_valid_toml_that_round_trips(tmp_path: Path) -> None:
    config = load_config()
    rendered = write(tmp_path / "rendered.toml", render_config(config))
    again = load_config(str(rendered))
    assert dataclasses.replace(again, source=None) == dataclasses.replace(config, source=None)


def test_lookup_order(tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg_file = write(clean_env / "ytproxy" / "config.toml", "[server]\nport = 7001\n")
    env_file = write(tmp_path / "env.toml", "[server]\nport = 7002\n")
    cli_file = write(tmp_path / "cli.toml", "[server]\nport = 7003\n")

    assert find_config_file() == xdg_file
    config = load_config()
    assert config.server.port == 7001
    assert config.source == str(xdg_file)

    monkeypatch.setenv("YTPROXY_CONFIG", str(env_file))
    assert find_config_file() == env_file
    assert load_config().server.port == 7002

    assert find_config_file(str(cli_file)) == cli_file
    config = load_config(str(cli_file))
    assert config.server.port == 7003
    assert config.source == str(cli_file)


def test_xdg_defaults_to_dot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    path = write(tmp_path / "home" / ".config" / "ytproxy" / "config.toml",
                 "[limits]\nmax_streams = 3\n")
    assert find_config_file() == path
    assert load_config().limits.max_streams == 3


def test_every_contract_key_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", """
[server]
host = "0.0.0.0"
port = 6700

[store]
path = "/var/lib/ytproxy/t.db"

[resolver]
source_url_template = "https://music.youtube.com/watch?v={id}"
workers = 5
format = "bestaudio"

[upstream]
chunk_size = 65536
allowed_hosts = ["cdn.example.com", "*.googlevideo.com"]

[limits]
max_streams = 3

[icy]
inline_metadata = true
""")
    config = load_config(str(path))
    assert config.source == str(path)
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 6700
    assert config.store.path == "/var/lib/ytproxy/t.db"
    assert config.resolver.source_url_template == "https://music.youtube.com/watch?v={id}"
    assert config.resolver.workers == 5
    assert config.resolver.format == "bestaudio"
    assert config.upstream.chunk_size == 65536
    assert config.upstream.allowed_hosts == ("cdn.example.com", "*.googlevideo.com")
    assert config.limits.max_streams == 3
    assert config.icy.inline_metadata is True
    # Keys not given keep their defaults.
    assert config.server.log_level == "info"
    assert config.resolver.timeout == 30.0


def test_example_config_loads_and_equals_defaults() -> None:
    example = REPO / "config.example.toml"
    if not example.is_file():
        pytest.skip("config.example.toml not present")
    config = load_config(str(example))
    assert dataclasses.replace(config, source=None) == Config()


def test_integer_accepted_for_seconds(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[resolver]\ntimeout = 45\n")
    config = load_config(str(path))
    assert config.resolver.timeout == 45.0
    assert isinstance(config.resolver.timeout, float)


# -- errors ---------------------------------------------------------------


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    return info.value.errors


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", """
[server]
port = 70000
host = ""

[resolver]
workers = 0
source_url_template = "https://www.youtube.com/watch"

[upstream]
chunk_size = 10

[limits]
max_streams = "ten"
""")
    errors = errors_of(path)
    keys = ["server.port", "server.host", "resolver.workers",
            "resolver.source_url_template", "upstream.chunk_size", "limits.max_streams"]
    assert len(errors) == len(keys), errors
    for key in keys:
        matching = [e for e in errors if key in e]
        assert len(matching) == 1, (key, errors)
        assert str(path) in matching[0]
    assert any("{id}" in e for e in errors)


def test_unknown_key_and_section_get_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.toml", """
[server]
prot = 6700

[upstrem]
chunk_size = 65536

[resolver]
wrokers = 3
""")
    errors = errors_of(path)
    assert len(errors) == 3, errors
    assert all(str(path) in e for e in errors)
    by_key = {k: [e for e in errors if k in e] for k in ("prot", "upstrem", "wrokers")}
    assert "did you mean 'port'" in by_key["prot"][0]
    assert "server.prot" in by_key["prot"][0]
    assert "did you mean 'upstream'" in by_key["upstrem"][0]
    assert "did you mean 'workers'" in by_key["wrokers"][0]


def test_unknown_key_far_from_any_gets_no_guess(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path / "c.toml", "[server]\nzzzzqqq = 1\n"))
    assert len(errors) == 1
    assert "server.zzzzqqq" in errors[0]
    assert "did you mean" not in errors[0]


@pytest.mark.parametrize(
    ("snippet", "key", "wanted"),
    [
        ('[server]\nport = "6602"', "server.port", "integer"),
        ("[server]\nport = true", "server.port", "integer"),
        ("[server]\nport = 6602.5", "server.port", "integer"),
        ("[server]\nhost = 127", "server.host", "string"),
        ('[upstream]\nallowed_hosts = "*.googlevideo.com"', "upstream.allowed_hosts", "array"),
        ("[upstream]\nallowed_hosts = [1, 2]", "upstream.allowed_hosts", "array"),
        ('[icy]\ninline_metadata = "yes"', "icy.inline_metadata", "true or false"),
        ("[icy]\ninline_metadata = 1", "icy.inline_metadata", "true or false"),
        ('[resolver]\ntimeout = "30"', "resolver.timeout", "number"),
        ("[resolver]\nworkers = 2.0", "resolver.workers", "integer"),
    ],
)
def test_wrong_types(tmp_path: Path, snippet: str, key: str, wanted: str) -> None:
    path = write(tmp_path / "c.toml", snippet + "\n")
    errors = errors_of(path)
    assert len(errors) == 1, errors
    assert key in errors[0]
    assert wanted in errors[0]
    assert str(path) in errors[0]


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path / "c.toml", "server = 5\n"))
    assert len(errors) == 1
    assert "[server]" in errors[0] and "table" in errors[0]


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[server\nport = = 1\n")
    errors = errors_of(path)
    assert len(errors) == 1
    assert str(path) in errors[0]
    assert "TOML" in errors[0]


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    errors = errors_of(path)
    assert len(errors) == 1
    assert str(path) in errors[0]
    assert "not found" in errors[0]


def test_missing_env_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gone.toml"
    monkeypatch.setenv("YTPROXY_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(path) in str(info.value)


def test_check_config_exits_1_and_prints_every_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", """
[server]
port = 0
prot = 1

[icy]
inline_metadata = "on"
""")
    result = run_cli("--config", str(path), "check-config")
    assert result.returncode == 1
    assert result.stdout == ""
    err = result.stderr
    for key in ("server.port", "server.prot", "icy.inline_metadata"):
        lines = [line for line in err.splitlines() if key in line]
        assert len(lines) == 1, (key, err)
        assert str(path) in lines[0]
    assert "did you mean 'port'" in err


def test_check_config_prints_the_file_it_used(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.toml", "[server]\nport = 6999\n")
    result = run_cli("--config", str(path), "check-config")
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout
    assert "port = 6999" in result.stdout.splitlines()


# A Latin-1 "é" (0xE9) in a comment on line 3: what an editor set to another
# encoding writes.  It is byte 26 of the file (counted from 0), the 6th
# character of its line.
LATIN1_CONFIG = b'[server]\nport = 6999\n# caf\xe9 au lait\n[icy]\nmetaint = 8192\n'


@pytest.mark.parametrize("command", ["check-config", "serve", "doctor", "status"])
def test_a_config_that_is_not_utf8_is_an_error_naming_the_byte(
    tmp_path: Path, command: str
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(LATIN1_CONFIG)
    result = run_cli("--config", str(path), command)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    said = result.stdout if command == "doctor" else result.stderr
    [line] = [line for line in said.splitlines() if str(path) in line]
    assert "not UTF-8" in line and "0xe9" in line.lower(), line
    assert "offset 26" in line and "line 3, column 6" in line, line
    if command == "doctor":
        assert "fail  config" in said, said


def test_a_binary_config_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "random.toml"
    path.write_bytes(bytes(range(256)))  # 0x00-0x7f decode; 0x80 is the first that cannot
    errors = errors_of(path)
    assert len(errors) == 1 and str(path) in errors[0], errors
    assert "not UTF-8" in errors[0] and "offset 128" in errors[0], errors
    result = run_cli("--config", str(path), "check-config")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "offset 128" in result.stderr


def test_a_config_path_that_is_a_directory_or_bad_toml_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    syntax = write(tmp_path / "syntax.toml", "[server]\nport = = 1\n")
    for path, what in ((folder, "cannot read config file"), (syntax, "not valid TOML")):
        for command in ("check-config", "serve"):
            result = run_cli("--config", str(path), command)
            assert result.returncode == 1, (path, command, result.stderr)
            assert "Traceback" not in result.stderr, result.stderr
            assert f"{path}: {what}" in result.stderr, result.stderr


def test_a_config_file_far_larger_than_any_config_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * (2 * 1_048_576) + b"\n")
    errors = errors_of(path)
    assert len(errors) == 1 and str(path) in errors[0] and "larger than" in errors[0], errors
    # /dev/zero never ends: read as a whole it would take all memory.
    errors = errors_of(Path("/dev/zero"))
    assert len(errors) == 1 and "larger than" in errors[0], errors


# -- environment overrides ------------------------------------------------


def test_env_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YTPROXY_SERVER_PORT", "7000")
    config = load_config()
    assert config.server.port == 7000
    assert isinstance(config.server.port, int)


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "c.toml", "[server]\nport = 6800\nhost = \"127.0.0.2\"\n")
    monkeypatch.setenv("YTPROXY_SERVER_PORT", "7000")
    monkeypatch.setenv("YTPROXY_STORE_PATH", "/srv/ytproxy/tracks.db")  # a bare word
    monkeypatch.setenv("YTPROXY_RESOLVER_SOURCE_URL_TEMPLATE", "http://127.0.0.1:1/w?v={id}")
    monkeypatch.setenv("YTPROXY_UPSTREAM_ALLOWED_HOSTS", '["a.example", "b.example"]')
    monkeypatch.setenv("YTPROXY_ICY_INLINE_METADATA", "true")
    config = load_config(str(path))
    assert config.server.port == 7000
    assert config.server.host == "127.0.0.2"  # not overridden: the file's value
    assert config.store.path == "/srv/ytproxy/tracks.db"
    assert config.resolver.source_url_template == "http://127.0.0.1:1/w?v={id}"
    assert config.upstream.allowed_hosts == ("a.example", "b.example")
    assert config.icy.inline_metadata is True


def test_bad_env_value_names_the_key_and_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.toml", "[server]\nport = 6800\n[limits]\nmax_streams = 0\n")
    monkeypatch.setenv("YTPROXY_SERVER_PORT", "not-a-port")
    monkeypatch.setenv("YTPROXY_ICY_METAINT", "0")
    monkeypatch.setenv("YTPROXY_LOG_LEVEL", "debug")  # no such section
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    errors = info.value.errors
    assert len(errors) == 4, errors
    [port] = [e for e in errors if "server.port" in e]
    assert port.startswith("$YTPROXY_SERVER_PORT:") and str(path) not in port
    [metaint] = [e for e in errors if "icy.metaint" in e]
    assert metaint.startswith("$YTPROXY_ICY_METAINT:")
    [log] = [e for e in errors if "[log]" in e]
    assert log.startswith("$YTPROXY_LOG_LEVEL:")
    # The file's own mistake is still blamed on the file.
    [streams] = [e for e in errors if "limits.max_streams" in e]
    assert streams.startswith(f"{path}:")


def test_env_override_shows_in_check_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YTPROXY_")}
    env["YTPROXY_SERVER_PORT"] = "7000"
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "port = 7000" in result.stdout.splitlines()


def test_raising_max_streams_alone_makes_room_for_its_connections() -> None:
    config = config_from_mapping({"limits": {"max_streams": 2000}})
    assert config.limits.max_streams == 2000
    assert config.limits.max_connections == 4000
    assert config.limits.max_connections_per_client == 2016
    small = config_from_mapping({"limits": {"max_streams": 50}})
    assert (small.limits.max_connections, small.limits.max_connections_per_client) == (256, 66)
    assert config_from_mapping({}).limits == LimitsConfig()  # the defaults stand as written
    # Set by the person, it is theirs to get right, and a clear error otherwise.
    with pytest.raises(ConfigError, match=r"limits\.max_connections"):
        config_from_mapping({"limits": {"max_streams": 2000, "max_connections": 300}})
    with pytest.raises(ConfigError, match=r"limits\.max_connections_per_client must be between 1 "
                       r"and limits\.max_connections, got 500"):
        config_from_mapping({"limits": {"max_connections": 300,
                                        "max_connections_per_client": 500}})
    # Given, the per-client limit is kept as it is, even below max_streams.
    given = config_from_mapping({"limits": {"max_streams": 100, "max_connections_per_client": 8}})
    assert given.limits.max_connections_per_client == 8


def test_the_event_loop_is_auto_uvloop_or_asyncio() -> None:
    assert Config().server.event_loop == "auto"
    for name in ("auto", "uvloop", "asyncio", "AsyncIO"):
        assert config_from_mapping({"server": {"event_loop": name}}).server.event_loop == name
    with pytest.raises(ConfigError, match=r"server\.event_loop must be one of auto, uvloop, "
                       r"asyncio, got 'trio'"):
        config_from_mapping({"server": {"event_loop": "trio"}})


def test_the_hourly_budget_is_higher_with_cookies_unless_set() -> None:
    # 200 a guest, 1000 signed in: far below YouTube's ~300 and ~2,000 an hour.
    assert config_from_mapping({}).resolver.max_calls_per_hour == 200
    assert config_from_mapping({"resolver": {"workers": 2}}).resolver.max_calls_per_hour == 200
    signed_in = {"cookies_file": "~/cookies.txt"}
    assert config_from_mapping({"resolver": signed_in}).resolver.max_calls_per_hour == 1000
    browser = {"cookies_from_browser": "firefox"}
    assert config_from_mapping({"resolver": browser}).resolver.max_calls_per_hour == 1000
    chosen = {**signed_in, "max_calls_per_hour": 300}
    assert config_from_mapping({"resolver": chosen}).resolver.max_calls_per_hour == 300
    defaults = config_from_mapping({}).resolver
    assert defaults.max_listings_per_hour == 30 and defaults.rate_limit_pause == 3600.0


def test_budget_keys_out_of_range_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"resolver": {"max_calls_per_hour": 0, "max_listings_per_hour": 0,
                                          "rate_limit_pause": 0}})
    text = "\n".join(info.value.errors)
    for key in ("resolver.max_calls_per_hour", "resolver.max_listings_per_hour",
                "resolver.rate_limit_pause"):
        assert key in text
