"""yt-dlp calls in worker processes that exit when idle.

yt-dlp and the extractors one call loads cost ~50 MB, held for good once
imported; the daemon needs them for a moment every few hours per track.  So
each call runs in a worker process (``python -m ytproxy.resolve.ytdlp_process``), which
exits after ``IDLE_EXIT`` seconds without a call, and the daemon itself stays
the size of what it relays.

A worker reads one JSON request per line on stdin (``{"url", "options", "env"}``,
the last the daemon's proxy variables) and
answers one JSON line on stdout: ``{"info": {...}}`` (yt-dlp's sanitized info
dict, or null) or ``{"error": text, "expected": bool, "network": bool}``.
Whatever a worker writes on stderr (yt-dlp writes some warnings there, past
its ``logger``) is logged by the daemon line by line, redacted.
This module (and ``ytproxy.redact``) is all a worker imports besides yt-dlp: it
must stay light.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from ytproxy.redact import redact_secrets

__all__ = ["IDLE_EXIT", "CallTimedOut", "ExtractFailed", "WorkerLost", "YtdlpProcesses",
           "failure_cause"]

log = logging.getLogger(__name__)

# Seconds a worker waits for the next call before it exits.  Longer than a
# track: a queue of tracks played for the first time resolves one per track,
# and each new worker pays Python's start and yt-dlp's import (~0.5 s).
IDLE_EXIT = 300.0
# The environment a call reads as the daemon has it now, not as it was when
# its worker started (yt-dlp honours these itself when no proxy is configured).
_CALL_ENV = tuple(name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
                  for name in (base, base.upper()))
# yt-dlp messages a reply carries at most.
_MAX_CHATTER = 500
# Distinct stderr lines of workers remembered (repeats are logged at DEBUG).
_MAX_SAID = 200
# Written on stderr after each call: the daemon has logged what the call wrote
# there before it takes the answer (a CLI command may exit right after).
_CALL_DONE = b"\0ytproxy: call done\n"
# A worker idle this close to its exit (seconds, at most a tenth of it) is not
# handed a call: it may be leaving.
_IDLE_MARGIN = 5.0
# Seconds to wait for a worker whose pipe closed to be reaped (it is exiting).
_REAP_WAIT = 5.0


class ExtractFailed(Exception):
    """A yt-dlp failure, told across the process boundary as plain data.

    ``expected`` is yt-dlp's own word that the failure is the source's (not a
    bug); ``network`` that the cause was an OS-level (socket) error.
    """

    def __init__(self, text: str, expected: bool = False, network: bool = False) -> None:
        super().__init__(text)
        self.expected = expected
        self.network = network


class WorkerLost(Exception):
    """The worker process died during a call (killed, out of memory); ``how``:
    its signal or exit status."""

    def __init__(self, how: str) -> None:
        super().__init__(f"the yt-dlp worker process died ({how})")
        self.how = how


class CallTimedOut(Exception):
    """A call outlived its deadline; its worker was killed."""


# ------------------------------------------------------------------ the worker side


class _Chatter:
    """yt-dlp's messages, kept for the reply when the daemon logs at DEBUG (its
    errors come back as exceptions either way)."""

    def __init__(self, keep: bool) -> None:
        self.lines: list[str] | None = [] if keep else None

    def debug(self, msg: str) -> None:
        if self.lines is not None and len(self.lines) < _MAX_CHATTER:
            self.lines.append(msg)

    info = warning = error = debug


def failure_cause(exc: BaseException) -> tuple[bool, bool]:
    """(expected, network) for a yt-dlp exception, from the error it wraps:
    yt-dlp's own word that the failure is the source's, and whether an
    OS-level (socket) error caused it."""
    cause = getattr(exc, "exc_info", None)
    inner = cause[1] if isinstance(cause, tuple) and len(cause) > 1 else None
    return bool(getattr(inner, "expected", False)), isinstance(inner, OSError | TimeoutError)


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    import yt_dlp  # heavy; imported once per worker process

    env = request.get("env")
    if isinstance(env, dict):
        for name in _CALL_ENV:
            if isinstance(env.get(name), str):
                os.environ[name] = env[name]
            else:
                os.environ.pop(name, None)

    options = request["options"]
    avoid = request.get("avoid_clients")
    if avoid:
        from ytproxy.resolve.ytdlp_clients import options_avoiding

        options = options_avoiding(options, avoid)
    chatter = _Chatter(bool(request.get("debug")))
    try:
        with yt_dlp.YoutubeDL({**options, "logger": chatter}) as ydl:
            info = ydl.extract_info(request["url"], download=False)
            clean = ydl.sanitize_info(info) if isinstance(info, dict) else None
            if isinstance(clean, dict):
                _add_cookie_header(clean, ydl.cookiejar)
    except Exception as exc:
        expected, network = failure_cause(exc)
        return {"error": str(exc) or type(exc).__name__, "expected": expected,
                "network": network, "chatter": chatter.lines}
    return {"info": clean if isinstance(clean, dict) else None, "chatter": chatter.lines}


def _add_cookie_header(info: dict[str, Any], jar: Any) -> None:
    """Put the ``Cookie`` header yt-dlp itself would send for the chosen
    format's URL into its ``http_headers``, which the relay sends with every
    range.  (Since 2023 yt-dlp keeps cookies out of ``http_headers`` and
    scopes them per URL through its cookie jar; this asks the jar the same way.)"""
    url = info.get("url")
    headers = info.get("http_headers")
    if not isinstance(url, str) or not isinstance(headers, dict):
        return
    cookie = jar.get_cookie_header(url)
    if cookie:
        headers["Cookie"] = cookie
    else:
        headers.pop("Cookie", None)


def serve(idle_exit: float) -> None:
    """The worker's loop: answer requests on stdin until EOF or ``idle_exit`` s idle."""
    stdin = sys.stdin.buffer
    # Answers go to the real stdout; anything yt-dlp prints goes to stderr (a
    # pipe the daemon logs from: _relay_stderr).
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while True:
        ready, _, _ = select.select([stdin], [], [], idle_exit)
        if not ready:
            return
        line = stdin.readline()
        if not line:
            return
        try:
            reply = _answer(json.loads(line))
        except Exception as exc:  # a bad request: say so, keep serving
            reply = {"error": f"bad request to the yt-dlp worker: {exc}"}
        # All this call wrote to stderr is before the mark, the mark before the answer.
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), _CALL_DONE)
        stdout.write(json.dumps(reply, default=str) + "\n")
        stdout.flush()


# ------------------------------------------------------------------ the daemon side


class _Said:
    """Lines of workers' stderr already logged: yt-dlp says some on every call
    (a cookies file line it skips), and once at WARNING is enough."""

    def __init__(self) -> None:
        self._lines: dict[str, None] = {}
        self._lock = threading.Lock()

    def first_time(self, line: str) -> bool:
        with self._lock:
            if line in self._lines:
                return False
            self._lines[line] = None
            if len(self._lines) > _MAX_SAID:
                del self._lines[next(iter(self._lines))]
            return True


def _relay_stderr(stream: IO[bytes], pid: int, said: _Said,
                  calls_done: threading.Semaphore) -> None:
    """A worker's stderr, line by line, into the log (run in a thread).

    What a worker writes there bypasses yt-dlp's ``logger`` (yt-dlp writes some
    warnings straight to stderr, quoting a cookies file line; a JS runtime or a
    crash prints there too): inherited, it would reach the journal unredacted.
    Each line is redacted here and goes through the log's own filter.
    """
    with stream:
        for raw in stream:
            # The mark ends a line of its own, or one cut short (a JS runtime's).
            done = raw.endswith(_CALL_DONE)
            line = redact_secrets(raw.removesuffix(_CALL_DONE).decode("utf-8", "replace")
                                  .rstrip())
            if line.strip():
                level = logging.WARNING if said.first_time(line) else logging.DEBUG
                log.log(level, "resolver: yt-dlp (worker %d): %s", pid,
                        line.removeprefix("WARNING: "))
            if done:
                calls_done.release()


class _Worker:
    def __init__(self, idle_exit: float, said: _Said) -> None:
        env = dict(os.environ)
        # The package's own directory first, however ytproxy was installed or run.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ytproxy.resolve.ytdlp_process", str(idle_exit)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            close_fds=True,
        )
        assert self.proc.stderr is not None
        self._calls_done = threading.Semaphore(0)
        threading.Thread(target=_relay_stderr,
                         args=(self.proc.stderr, self.proc.pid, said, self._calls_done),
                         name=f"ytproxy-ytdlp-stderr-{self.proc.pid}", daemon=True).start()
        self.idle_since = time.monotonic()

    def alive(self, idle_exit: float) -> bool:
        margin = min(_IDLE_MARGIN, idle_exit / 10)
        fresh = time.monotonic() - self.idle_since < idle_exit - margin
        return self.proc.poll() is None and fresh

    def call(self, request: bytes, limit: float) -> dict[str, Any]:
        """Blocking: one request, one answer within ``limit`` seconds (run in a
        thread).  A call past its limit kills the worker: yt-dlp stuck on a
        socket would otherwise keep the worker, and every call queued behind it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        deadline = time.monotonic() + limit
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
            while not select.select([self.proc.stdout], [], [],
                                    max(0.0, deadline - time.monotonic()))[0]:
                if time.monotonic() >= deadline:
                    self.kill()
                    self.proc.wait()  # in this call's thread, not on the event loop
                    raise CallTimedOut(f"yt-dlp took longer than {limit:g} s")
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerLost(self._death(exc)) from None
        if not line:
            raise WorkerLost(self._death(None))
        self.idle_since = time.monotonic()
        # What the call wrote on stderr is logged before its answer is used.
        self._calls_done.acquire(timeout=_REAP_WAIT)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _death(self, error: BaseException | None) -> str:
        """How the worker ended: its signal or exit status (reaped here, in the
        call's thread), else the pipe's error."""
        try:
            code = self.proc.wait(timeout=_REAP_WAIT)
        except subprocess.TimeoutExpired:
            return str(error) if error is not None else "its output closed"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}"
        return f"exit status {code}"

    def kill(self) -> None:
        """End the worker now (a call past its deadline, or one nobody waits for).
        Not waited for: it may be called on the event loop; the thread whose
        call it ends reaps it (``call`` sees EOF and waits)."""
        with contextlib.suppress(OSError):
            self.proc.kill()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the worker leaves when its call is done
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class YtdlpProcesses:
    """Up to ``workers`` worker processes, started when a call needs one, each
    gone ``idle_exit`` seconds after its last call.

    One per worker count per process (``shared``): resolvers come and go (the
    CLI, tests), the workers need not.  Calls run in threads (blocking pipes),
    so a worker serves whichever event loop asks.
    """

    @classmethod
    def shared(cls, workers: int) -> YtdlpProcesses:
        with _SHARED_LOCK:
            if workers not in _SHARED:
                _SHARED[workers] = cls(workers)
            return _SHARED[workers]

    def __init__(self, workers: int, *, idle_exit: float = IDLE_EXIT) -> None:
        self._idle_exit = idle_exit
        # One thread per worker process, each waiting on its pipe.
        self._threads = ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix="ytproxy-ytdlp")
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closing = False  # close(busy=True): a killed call is not tried again
        self._said = _Said()
        self.started = 0  # worker processes started so far

    @property
    def running(self) -> int:
        """Worker processes alive and waiting for a call."""
        with self._lock:
            return sum(1 for w in self._idle if w.proc.poll() is None)

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive(self._idle_exit):
                    return worker
                worker.stop()
            self.started += 1
        return _Worker(self._idle_exit, self._said)

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _call(self, request: bytes, limit: float, taken: list[_Worker]) -> dict[str, Any]:
        worker = self._take()
        taken.append(worker)  # the caller kills it if it stops waiting
        with self._lock:
            self._busy.add(worker)
        try:
            answer = worker.call(request, limit)
        except (WorkerLost, CallTimedOut):
            worker.stop()
            raise
        finally:
            with self._lock:
                self._busy.discard(worker)
        if worker.proc.poll() is None:
            self._give_back(worker)
        return answer

    async def extract(self, url: str, options: dict[str, Any], *,
                      avoid_clients: tuple[str, ...] = (),
                      limit: float = 60.0) -> dict[str, Any] | None:
        """yt-dlp's info dict for ``url`` (None if it gave none); raises
        ExtractFailed (yt-dlp's error), WorkerLost or CallTimedOut.
        ``avoid_clients``: player clients (googlevideo's ``c=`` names) not to
        take formats from.  ``limit``: seconds from when a worker takes the
        call (time queued behind other calls does not count).  A call that
        times out, or whose caller stops waiting, kills its worker."""
        env = {name: os.environ[name] for name in _CALL_ENV if name in os.environ}
        debug = log.isEnabledFor(logging.DEBUG)
        request = (json.dumps({"url": url, "options": options, "env": env, "debug": debug,
                               "avoid_clients": list(avoid_clients)}) + "\n").encode()
        try:
            answer = await self._run(request, limit)
        except WorkerLost as exc:
            if self._closing:
                raise
            # Killed under the call (the OOM killer, kill -9): its death says
            # nothing of the track.  Once more, in a new worker; a second death
            # is the caller's to hear.
            log.warning("resolver: %s during a call; trying it once more in a new one", exc)
            try:
                answer = await self._run(request, limit)
            except WorkerLost as again:
                raise WorkerLost(f"{exc.how}; and the new one that tried the call again: "
                                 f"{again.how}") from None
        for line in answer.get("chatter") or ():
            # Redacted here and by the log's filter: URL queries, cookie values.
            log.debug("yt-dlp: %s", redact_secrets(str(line)))
        if "error" in answer:
            raise ExtractFailed(str(answer["error"]), bool(answer.get("expected")),
                                bool(answer.get("network")))
        info = answer.get("info")
        return info if isinstance(info, dict) else None

    async def _run(self, request: bytes, limit: float) -> dict[str, Any]:
        """One try of a call, in a worker thread; a cancelled caller kills its worker."""
        loop = asyncio.get_running_loop()
        taken: list[_Worker] = []
        try:
            return await loop.run_in_executor(self._threads, self._call, request, limit, taken)
        except asyncio.CancelledError:
            for worker in taken:
                worker.kill()  # nobody waits for its answer: free its slot now
            raise

    def close(self, *, busy: bool = False) -> None:
        """Let the idle workers go now; with ``busy``, kill those in a call too
        (a daemon that stops does not wait for yt-dlp, nor tries again)."""
        if busy:
            self._closing = True
        with self._lock:
            idle, self._idle = self._idle, []
            calling = list(self._busy) if busy else []
        for worker in idle:
            worker.stop()
        for worker in calling:
            worker.kill()


_SHARED: dict[int, YtdlpProcesses] = {}
_SHARED_LOCK = threading.Lock()


if __name__ == "__main__":
    serve(float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_EXIT)
