"""Drive a real MPD (Music Player Daemon) from tests.

Register with ``pytest_plugins = ["tests.mpd_harness"]`` to get the ``mpd`` fixture.

MPD plays in real time (the null output is synchronised to the clock), so tests
should seek rather than wait.

Blocking vs. async: ``mpc()``, ``status()``, ``current_song()`` and ``command()``
block the calling thread.  When the HTTP server MPD talks to runs on the test's
own event loop (aiohttp test server, ytproxy app), a blocking call that makes MPD
fetch something -- above all ``seek``, which MPD answers only after the decoder has
re-opened the stream -- deadlocks until its timeout.  Use the ``*_async`` variants
(``mpc_async``, ``status_async``, ``current_song_async``, ``command_async``) there;
``wait_for`` is async and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ports import free_port

__all__ = [
    "FFMPEG_SKIP_REASON",
    "MPD_SKIP_REASON",
    "MpdError",
    "MpdInstance",
    "MpdStatus",
    "ffmpeg_missing_reason",
    "make_test_audio",
    "mpd",
    "mpd_missing_reason",
    "require_ffmpeg",
    "require_mpd",
    "run_mpd",
]

MPD_SKIP_REASON = "mpd not installed (apt-get install mpd mpc)"
MPC_SKIP_REASON = "mpc not installed (apt-get install mpd mpc)"
FFMPEG_SKIP_REASON = "ffmpeg not installed (apt-get install ffmpeg)"

HOST = "127.0.0.1"
_STARTUP_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------- skips


def mpd_missing_reason() -> str | None:
    """The skip reason when mpd or mpc is missing, else None."""
    if shutil.which("mpd") is None:
        return MPD_SKIP_REASON
    if shutil.which("mpc") is None:
        return MPC_SKIP_REASON
    return None


def ffmpeg_missing_reason() -> str | None:
    """The skip reason when ffmpeg is missing, else None."""
    return FFMPEG_SKIP_REASON if shutil.which("ffmpeg") is None else None


def _skip_or_fail(reason: str | None) -> None:
    # CI installs these packages, so a missing one there is a broken run, not a skip.
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must install it", pytrace=False)
    pytest.skip(reason)


def require_mpd() -> None:
    """Skip the calling test when mpd or mpc is not installed (fail under CI)."""
    _skip_or_fail(mpd_missing_reason())


def require_ffmpeg() -> None:
    """Skip the calling test when ffmpeg is not installed (fail under CI)."""
    _skip_or_fail(ffmpeg_missing_reason())


# --------------------------------------------------------------------------- audio


def make_test_audio(path: Path, *, seconds: float, kind: str = "webm",
                    kbps: int | None = None) -> bytes:
    """Write ``seconds`` of generated stereo audio to ``path`` and return its bytes.

    The signal is a slow upward sine sweep (220 Hz -> 880 Hz over the whole track,
    so every position sounds different) plus quiet pink noise (so encoders cannot
    squeeze it to nothing).

    ``kind="webm"``: Opus in WebM at a constant 160 kbit/s, like YouTube itag 251
    (~2.4 MB for 120 s, well above MPD's 512 KiB read-ahead).
    ``kind="m4a"``: AAC-LC 128 kbit/s in DASH-style fragmented MP4 (ftyp, moov,
    sidx, moof/mdat...), like YouTube itag 140 (~1.9 MB for 120 s).

    ``kbps``: another constant bit rate (Opus goes up to 510): the more bytes a
    second, the fewer seconds MPD's fixed input buffer (512 KiB) holds.
    """
    require_ffmpeg()
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if kind == "webm":
        codec = ["-c:a", "libopus", "-b:a", f"{kbps or 160}k", "-vbr", "off",
                 "-compression_level", "0"]
        container = ["-f", "webm"]
    elif kind == "m4a":
        codec = ["-c:a", "aac", "-b:a", f"{kbps or 128}k"]
        container = [
            "-movflags", "+dash+global_sidx", "-frag_duration", "10000000", "-f", "mp4",
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown kind {kind!r} (expected 'webm' or 'm4a')")
    sweep = (
        f"aevalsrc=exprs='0.5*sin(2*PI*(220*t+({660 / (2 * seconds)!r})*t*t))'"
        f":s=48000:c=stereo:d={seconds!r}"
    )
    noise = f"anoisesrc=color=pink:amplitude=0.05:seed=1:r=48000:d={seconds!r}"
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", sweep,
        "-f", "lavfi", "-i", noise,
        "-filter_complex", "[0][1]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo",
        *codec, *container, str(path),
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()}")
    return path.read_bytes()


# --------------------------------------------------------------------------- protocol


class MpdError(Exception):
    """MPD answered ``ACK [code@index] {command} message``."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


def _quote(arg: str) -> str:
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_command(name: str, args: tuple[str, ...]) -> bytes:
    return (" ".join([name, *(_quote(a) for a in args)]) + "\n").encode()


class _Incomplete(Exception):
    pass


def _split_response(data: bytes) -> tuple[list[str], str | None]:
    """Return (lines before the terminator, ACK line or None) if ``data`` is complete."""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line == "OK":
            return lines[:i], None
        if line.startswith("ACK "):
            return lines[:i], line
    raise _Incomplete


def _response_done(data: bytes) -> bool:
    if not data.endswith(b"\n"):
        return False
    last = data[:-1].rsplit(b"\n", 1)[-1]
    return last == b"OK" or last.startswith(b"ACK ")


def _pairs(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep:
            out.setdefault(key, value)
    return out


@dataclass(frozen=True)
class MpdStatus:
    """MPD's ``status`` plus ``currentsong`` answers, read atomically."""

    state: str  # "play" | "pause" | "stop"
    elapsed: float  # 0.0 when nothing is loaded
    duration: float | None
    error: str | None  # MPD's "error:" field
    song: dict[str, str] = field(default_factory=dict)  # currentsong: file, Name, Title...
    raw: dict[str, str] = field(default_factory=dict)  # every status field

    @property
    def name(self) -> str | None:
        return self.song.get("Name")

    @property
    def title(self) -> str | None:
        return self.song.get("Title")

    @property
    def file(self) -> str | None:
        return self.song.get("file")

    @property
    def songid(self) -> str | None:
        return self.raw.get("songid")

    def __str__(self) -> str:
        return (
            f"state={self.state} elapsed={self.elapsed:.3f} duration={self.duration} "
            f"error={self.error!r} song={self.song}"
        )


_STATUS_LIST = b"command_list_ok_begin\nstatus\ncurrentsong\ncommand_list_end\n"


def _parse_status(lines: list[str]) -> MpdStatus:
    sep = [i for i, line in enumerate(lines) if line == "list_OK"]
    if len(sep) != 2:
        raise RuntimeError(f"unexpected status answer: {lines!r}")
    raw = _pairs(lines[: sep[0]])
    song = _pairs(lines[sep[0] + 1 : sep[1]])
    duration_s = raw.get("duration")
    if duration_s is None and ":" in raw.get("time", ""):
        duration_s = raw["time"].split(":", 1)[1]
    duration = float(duration_s) if duration_s else None
    if duration == 0:
        duration = None  # "time: x:0" means unknown
    return MpdStatus(
        state=raw.get("state", "stop"),
        elapsed=float(raw.get("elapsed", "0") or 0),
        duration=duration,
        error=raw.get("error"),
        song=song,
        raw=raw,
    )


# --------------------------------------------------------------------------- instance


@dataclass
class MpdInstance:
    """A running MPD. ``root`` holds its config, log, db, state and directories."""

    port: int
    root: Path
    process: asyncio.subprocess.Process

    @property
    def conf_path(self) -> Path:
        return self.root / "mpd.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "mpd.log"

    @property
    def capture_path(self) -> Path:
        """Raw samples the capture output wrote (``run_mpd(capture=...)``)."""
        return self.root / "capture.raw"

    @property
    def music_dir(self) -> Path:
        return self.root / "music"

    # -- mpc

    def _mpc_cmd(self, args: tuple[str, ...]) -> list[str]:
        return ["mpc", "-h", HOST, "-p", str(self.port), *args]

    def mpc(self, *args: str, check: bool = True, timeout: float = 10) -> str:
        """Run ``mpc -h 127.0.0.1 -p PORT *args`` (blocking) and return its stdout."""
        cmd = self._mpc_cmd(args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}\n"
                f"stdout: {proc.stdout.strip()}"
            )
        return proc.stdout

    async def mpc_async(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 10,  # noqa: ASYNC109
    ) -> str:
        """Like ``mpc()`` without blocking the event loop."""
        cmd = self._mpc_cmd(args)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(timeout):
                out_b, err_b = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"{' '.join(cmd)} timed out after {timeout}s") from None
        out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()}\nstdout: {out.strip()}"
            )
        return out

    # -- raw protocol

    def _request(self, payload: bytes, timeout: float) -> list[str]:
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("MPD closed the connection before its greeting")
                data += chunk
            if not data.startswith(b"OK MPD "):
                raise ConnectionError(f"unexpected MPD greeting {data!r}")
            sock.sendall(payload)
            data = b""
            while not _response_done(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return self._finish(data)

    async def _request_async(self, payload: bytes, limit: float) -> list[str]:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(HOST, self.port)
            try:
                greeting = await reader.readline()
                if not greeting.startswith(b"OK MPD "):
                    raise ConnectionError(f"unexpected MPD greeting {greeting!r}")
                writer.write(payload)
                await writer.drain()
                data = b""
                while not _response_done(data):
                    line = await reader.readline()
                    if not line:
                        break
                    data += line
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        return self._finish(data)

    @staticmethod
    def _finish(data: bytes) -> list[str]:
        try:
            lines, ack = _split_response(data)
        except _Incomplete:
            raise ConnectionError(f"incomplete MPD answer {data!r}") from None
        if ack is not None:
            raise MpdError(ack)
        return lines

    def command(self, name: str, *args: str, timeout: float = 10) -> list[str]:
        """Send one protocol command (blocking); return its answer lines. ACK -> MpdError."""
        return self._request(_format_command(name, args), timeout)

    async def command_async(
        self,
        name: str,
        *args: str,
        timeout: float = 10,  # noqa: ASYNC109
    ) -> list[str]:
        return await self._request_async(_format_command(name, args), timeout)

    def status(self) -> MpdStatus:
        """``status`` + ``currentsong`` in one command list (blocking)."""
        return _parse_status(self._request(_STATUS_LIST, 5))

    async def status_async(self) -> MpdStatus:
        return _parse_status(await self._request_async(_STATUS_LIST, 5))

    def current_song(self) -> dict[str, str]:
        """MPD's ``currentsong`` fields (file, Name, Title, Id, Pos, ...)."""
        return _pairs(self.command("currentsong"))

    async def current_song_async(self) -> dict[str, str]:
        return _pairs(await self.command_async("currentsong"))

    # -- waiting and diagnostics

    async def wait_for(
        self,
        predicate: Callable[[MpdStatus], bool],
        timeout: float,  # noqa: ASYNC109 - the harness API; a deadline is clearer here
        what: str,
    ) -> MpdStatus:
        """Poll status every 0.2 s until ``predicate`` holds; AssertionError on timeout.

        (MPD's ``idle`` does not report elapsed-time progress, so polling it is.)
        """
        deadline = time.monotonic() + timeout
        last: MpdStatus | None = None
        last_exc: BaseException | None = None
        while True:
            if self.process.returncode is not None:
                raise AssertionError(
                    f"MPD exited ({self.process.returncode}) while waiting for {what}; "
                    f"last status: {last}\n{self.log_tail()}"
                )
            try:
                last = await self.status_async()
                last_exc = None
            except (OSError, ConnectionError, TimeoutError, RuntimeError, MpdError) as exc:
                last_exc = exc
            else:
                if predicate(last):
                    return last
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        extra = f"; last status error: {last_exc!r}" if last_exc else ""
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; last status: {last}{extra}\n"
            f"{self.log_tail()}"
        )

    def log_text(self) -> str:
        """MPD's log file contents ("" before it exists)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        tail = self.log_text().splitlines()[-lines:]
        stderr = _read(self.root / "mpd.stderr").strip()
        out = "--- MPD log tail ---\n" + "\n".join(tail)
        if stderr:
            out += "\n--- MPD stderr ---\n" + stderr
        return out


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- running


def _write_conf(root: Path, port: int, extra_binds: tuple[str, ...] = (),
                capture: str | None = None, audio_buffer_kib: int | None = None) -> Path:
    (root / "music").mkdir(parents=True, exist_ok=True)
    (root / "playlists").mkdir(parents=True, exist_ok=True)
    conf = root / "mpd.conf"
    # More addresses to listen on besides 127.0.0.1:port (a unix socket path).
    binds = "".join(f'bind_to_address     "{b}"\n' for b in extra_binds)
    # A second output beside the real-time null one, writing what MPD plays
    # as raw samples in this format ("rate:bits:channels") to ``capture.raw``.
    pipe = "" if capture is None else f"""
audio_output {{
    type        "pipe"
    name        "capture"
    command     "cat >> '{root / "capture.raw"}'"
    format      "{capture}"
    mixer_type  "none"
}}
"""
    buffer = ("" if audio_buffer_kib is None
              else f'audio_buffer_size   "{audio_buffer_kib}"\n')
    conf.write_text(
        f"""\
music_directory     "{root / "music"}"
playlist_directory  "{root / "playlists"}"
db_file             "{root / "mpd.db"}"
state_file          "{root / "mpd.state"}"
pid_file            "{root / "mpd.pid"}"
log_file            "{root / "mpd.log"}"
log_level           "verbose"
bind_to_address     "{HOST}"
{binds}port                "{port}"
zeroconf_enabled    "no"
auto_update         "no"
filesystem_charset  "UTF-8"
{buffer}
input {{
    plugin "curl"
}}

audio_output {{
    type        "null"
    name        "null"
    mixer_type  "none"
}}
{pipe}"""
    )
    return conf


async def _greeting(port: int) -> bool:
    try:
        async with asyncio.timeout(1):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                return (await reader.readline()).startswith(b"OK MPD ")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(_STOP_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _open_stderr(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


async def _start(root: Path, extra_binds: tuple[str, ...] = (),
                 capture: str | None = None,
                 audio_buffer_kib: int | None = None) -> MpdInstance:
    """Start MPD on a free port; retries on a port race. Raises RuntimeError on failure."""
    failure = ""
    for _attempt in range(3):
        port = free_port()
        conf = _write_conf(root, port, extra_binds, capture, audio_buffer_kib)
        (root / "mpd.log").unlink(missing_ok=True)
        errfd = _open_stderr(root / "mpd.stderr")
        try:
            proc = await asyncio.create_subprocess_exec(
                "mpd", "--no-daemon", str(conf),
                stdin=subprocess.DEVNULL, stdout=errfd, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal must not hit MPD first
            )  # fmt: skip
        finally:
            os.close(errfd)
        inst = MpdInstance(port=port, root=root, process=proc)
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while time.monotonic() < deadline and proc.returncode is None:
            if await _greeting(port):
                return inst
            await asyncio.sleep(0.05)
        await _stop(proc)
        failure = f"MPD did not answer on port {port} (exit {proc.returncode})\n{inst.log_tail()}"
        if "Address already in use" not in failure:
            break
    raise RuntimeError(failure)


@asynccontextmanager
async def run_mpd(tmp_path: Path, *, extra_binds: tuple[str, ...] = (),
                  capture: str | None = None,
                  audio_buffer_kib: int | None = None) -> AsyncIterator[MpdInstance]:
    """Run ``mpd --no-daemon`` with a private config under ``tmp_path/"mpd"``,
    listening on 127.0.0.1 (and on ``extra_binds``, e.g. a unix socket path).
    With ``capture`` ("rate:bits:channels", e.g. "8000:16:1"), what MPD plays
    is also written, as it plays, to ``MpdInstance.capture_path``.

    ``audio_buffer_kib``: MPD's buffer of decoded audio (``audio_buffer_size``;
    4096 KiB by default, about 22 s of 48 kHz stereo), which sets how far
    ahead of playback MPD decodes, and so when it opens the next song.

    Yields once MPD greets on its port; on exit SIGTERM, then SIGKILL after 5 s.
    """
    root = tmp_path / "mpd"
    root.mkdir(parents=True, exist_ok=True)
    inst = await _start(root, extra_binds, capture, audio_buffer_kib)
    try:
        yield inst
    finally:
        await _stop(inst.process)


@pytest.fixture
async def mpd(tmp_path: Path) -> AsyncIterator[MpdInstance]:
    """A fresh MPD on a free 127.0.0.1 port with the null output; skips if not installed."""
    require_mpd()
    async with run_mpd(tmp_path) as inst:
        yield inst
