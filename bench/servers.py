"""The processes a benchmark run starts, all on 127.0.0.1: the upstream (and an HTTPS
one with a self-signed certificate), nginx as a peer proxy (default buffers, and tuned
for big bodies), and the ytproxy daemon (with its CPU time and memory read from /proc)."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.listeners import raise_nofile

__all__ = ["BareRelay", "Daemon", "Media", "Nginx", "ProcStats", "Upstream", "free_port",
           "make_certificate", "make_media", "peer_proxy", "tls_upstream", "tuned_peer_proxy",
           "write_watch_page"]

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
_BLOCK = 1 << 20
# The stand-in upstream's socket send buffer (see Upstream.start).
UPSTREAM_SNDBUF = 128 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {within:g} s")


@dataclass(frozen=True)
class Media:
    """A file the upstream serves, and the track id whose watch page points at it."""

    name: str
    size: int

    @property
    def path(self) -> str:
        return f"/media/{self.name}"


def make_media(root: Path, files: dict[str, tuple[int, bool]]) -> dict[str, Media]:
    """Write ``name -> (size, sparse)`` under ``root/media``.

    Dense files repeat one random MiB (incompressible to anything that would
    try, cheap to make); sparse ones are holes that cost no disk.
    """
    media_dir = root / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    block = os.urandom(_BLOCK)
    made: dict[str, Media] = {}
    for name, (size, sparse) in files.items():
        path = media_dir / name
        with path.open("wb") as f:
            if sparse:
                f.truncate(size)
            else:
                left = size
                while left > 0:
                    f.write(block[: min(left, _BLOCK)])
                    left -= _BLOCK
        path.chmod(0o644)
        made[name] = Media(name, size)
    return made


def write_watch_page(root: Path, track_id: str, media_url: str, title: str) -> None:
    """``/watch/<id>.html``: the page yt-dlp's generic extractor reads (``<audio><source>``)."""
    watch = root / "watch"
    watch.mkdir(parents=True, exist_ok=True)
    page = (f"<html><head><title>{html.escape(title)}</title></head><body>"
            f'<audio controls><source src="{html.escape(media_url, quote=True)}" '
            f'type="audio/webm"></audio></body></html>')
    path = watch / f"{track_id}.html"
    path.write_text(page, encoding="utf-8")
    path.chmod(0o644)


class ProcStats:
    """CPU seconds and memory of one process, read from /proc."""

    _TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / self._TICKS

    def children_rss(self) -> float:
        """RSS in MB of the process's descendants (ytproxy's yt-dlp workers)."""
        total, todo, seen = 0.0, [self.pid], set()
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    kids = [int(k) for k in (task / "children").read_text().split()]
                except OSError:
                    continue
                for kid in kids:
                    if kid not in seen:
                        seen.add(kid)
                        todo.append(kid)
                        with contextlib.suppress(OSError, KeyError):
                            total += ProcStats(kid).memory()["rss"]
        return total

    def memory(self) -> dict[str, float]:
        """``rss`` and ``peak`` (VmHWM) in MB (10^6 bytes, as the targets are put)."""
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):  # in KiB
                values["rss" if key == "VmRSS" else "peak"] = int(rest.split()[0]) * 1024 / 1e6
        return values


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, within: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Nginx:
    """One nginx master (one worker) with its own prefix, config and logs."""

    def __init__(self, workdir: Path, name: str, servers: str, listen_options: str = "",
                 http_extra: str = "") -> None:
        self.binary = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)
        self.prefix = workdir / name
        self.name = name
        self.servers = servers
        self.listen_options = listen_options
        self.http_extra = http_extra
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists())

    def start(self, port: int) -> None:
        assert self.binary is not None
        prefix = self.prefix
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
            (prefix / sub).chmod(0o777)
        temp = "".join(f"{kind}_temp_path {prefix}/tmp/{kind};\n" for kind in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = f"""{user}worker_processes 1;
worker_rlimit_nofile 65536;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    {temp}
    types {{ text/html html; audio/webm webm; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;
{self.http_extra}
    server {{
        listen {HOST}:{port}{self.listen_options};
{self.servers}
    }}
}}
"""
        conf_path = prefix / "nginx.conf"
        conf_path.write_text(conf)
        self.proc = subprocess.Popen(
            [self.binary, "-e", str(prefix / "logs/error.log"), "-p", str(prefix),
             "-c", str(conf_path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=(prefix / "logs/stderr.log").open("wb"),
            preexec_fn=raise_nofile,
        )
        wait_port(port, self.proc, f"nginx ({self.name})")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGQUIT)


class Upstream:
    """The stand-in for googlevideo: nginx serving the files, or aiohttp without nginx."""

    def __init__(self, workdir: Path, root: Path) -> None:
        self.workdir = workdir
        self.root = root
        self.port = free_port()
        self.kind = "nginx" if Nginx.available() else "aiohttp"
        self._nginx: Nginx | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.kind == "nginx":
            # googlevideo's socket buffers are not on the listener's machine; this
            # stand-in's are, so they are capped (a slow listener's range waits in
            # them) rather than left to grow to megabytes per connection.
            self._nginx = Nginx(self.workdir, "upstream", f"        root {self.root};\n",
                                listen_options=f" sndbuf={UPSTREAM_SNDBUF}")
            self._nginx.start(self.port)
        else:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fileserver", "--root", str(self.root),
                 "--port", str(self.port)],
                cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                stderr=(self.workdir / "fileserver.log").open("wb"),
            )
            wait_port(self.port, self._proc, "the aiohttp file server")

    def stop(self) -> None:
        if self._nginx is not None:
            self._nginx.stop()
        if self._proc is not None:
            _stop(self._proc)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


class BareRelay:
    """``bench.barerelay`` on one event loop: the least a relay on that loop can do."""

    def __init__(self, workdir: Path, upstream_port: int, loop: str) -> None:
        self.workdir = workdir
        self.upstream_port = upstream_port
        self.loop = loop
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.barerelay", "--loop", self.loop,
             "--port", str(self.port), "--upstream-port", str(self.upstream_port)],
            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
            stderr=(self.workdir / f"barerelay-{self.loop}.log").open("wb"),
        )
        wait_port(self.port, self._proc, f"the bare relay on {self.loop}")

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)


def peer_proxy(workdir: Path, upstream_port: int) -> Nginx:
    """nginx ``proxy_pass`` to the upstream, buffered, with nginx's default buffers."""
    return Nginx(workdir, "peer", f"""        location / {{
            proxy_pass http://{HOST}:{upstream_port};
            proxy_buffering on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
""")


def tuned_peer_proxy(workdir: Path, upstream_port: int) -> Nginx:
    """nginx ``proxy_pass`` as a person would tune it to relay big bodies: big
    buffers, no temporary files, kept upstream connections."""
    return Nginx(workdir, "peer-tuned", """        location / {
            proxy_pass http://ytupstream;
            proxy_buffering on;
            proxy_buffers 16 256k;
            proxy_buffer_size 256k;
            proxy_max_temp_file_size 0;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
""", http_extra=f"""    upstream ytupstream {{
        server {HOST}:{upstream_port};
        keepalive 16;
    }}""")


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (the ``openssl`` command)."""
    cert, key = workdir / "tls-cert.pem", workdir / "tls-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


def tls_upstream(workdir: Path, root: Path, cert: Path, key: Path) -> Nginx:
    """The upstream's files over HTTPS (googlevideo speaks only TLS), same socket caps."""
    return Nginx(workdir, "upstream-tls", f"""        root {root};
        ssl_certificate {cert};
        ssl_certificate_key {key};
""", listen_options=f" ssl sndbuf={UPSTREAM_SNDBUF}")


def _known_keys(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Only the keys this version of ytproxy knows (the benchmark may outlive a key)."""
    from ytproxy.config import Config

    known = {f.name: {g.name for g in dataclasses.fields(f.default_factory())}  # type: ignore[misc]
             for f in dataclasses.fields(Config) if f.name != "source"}
    return {name: {k: v for k, v in values.items() if k in known.get(name, ())}
            for name, values in sections.items() if name in known}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(key, None)  # loopback only, never through a proxy
    env.pop("YTPROXY_CONFIG", None)
    return env


class Daemon:
    """The real ytproxy daemon (``python -m ytproxy serve``) as a child process."""

    def __init__(self, workdir: Path, upstream_port: int, *, log_level: str = "info",
                 extra: dict[str, dict[str, Any]] | None = None, name: str = "daemon",
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        # Its files: {name}.toml, {name}-tracks.db, {name}-N.log ("daemon": the run's own).
        self.name = name
        self.env = env or {}
        self.port = free_port()
        self.upstream_port = upstream_port
        self.log_level = log_level
        self.extra = extra or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats: ProcStats | None = None
        self.starts = 0

    def _config(self) -> Path:
        sections: dict[str, dict[str, Any]] = {
            "server": {"host": HOST, "port": self.port, "log_level": self.log_level},
            "store": {"path": str(self.workdir / ("tracks.db" if self.name == "daemon"
                                                  else f"{self.name}-tracks.db"))},
            "resolver": {
                "source_url_template": f"http://{HOST}:{self.upstream_port}/watch/{{id}}.html",
                "max_calls_per_minute": 6000,
            },
            "upstream": {"allowed_hosts": [HOST]},
            # The relay's figures: no download-ahead cache unless asked (the
            # "cache" section's daemon); files in the run's directory either way.
            "cache": {"directory": str(self.workdir / f"{self.name}-audio"), "max_size": 0},
            # Every listener here comes from 127.0.0.1.
            "limits": {"max_streams": 5000, "max_connections": 20000,
                       "max_connections_per_client": 20000},
        }
        # The watch pages live on loopback, which a real daemon may refuse to read.
        sections["resolver"]["allow_private_sources"] = True
        for name, values in self.extra.items():
            sections.setdefault(name, {}).update(values)
        sections = _known_keys(sections)
        text = "".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                              for k, v in values.items())
                       for name, values in sections.items())
        path = self.workdir / ("ytproxy.toml" if self.name == "daemon" else f"{self.name}.toml")
        path.write_text(text)
        return path

    def start(self) -> None:
        self.starts += 1
        log = (self.workdir / f"{self.name}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ytproxy", "--config", str(self._config()), "serve"],
            cwd=REPO, env={**_env(), **self.env}, stdout=log, stderr=log,
            preexec_fn=raise_nofile,
        )
        wait_port(self.port, self.proc, "the ytproxy daemon")
        self.stats = ProcStats(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM, within=20)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{HOST}:{self.port}/status", timeout=10) as resp:
            return dict(json.load(resp))
