"""Hostile requests, each answered with its 4xx and a JSON error; connection limits.

Requests go out on raw sockets: aiohttp's client (rightly) refuses to send
most of them.  Everything stays on loopback; per-client tests tell clients
apart by source address (all of 127.0.0.0/8 is loopback on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, RunningProxy, proxy_config, random_audio
from ytproxy.config import LimitsConfig
from ytproxy.http.app import IN_FLIGHT, SLOTS, create_app
from ytproxy.http.listener import (
    CONNECTIONS,
    MAX_BODY,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    ConnectionLimits,
    Runner,
)
from ytproxy.redact import RedactingFilter

VID = "h0st1le_Vid"
SIZE = 50_000
DATA = random_audio(SIZE, seed=5)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = field(repr=False, default=b"")

    def json(self) -> dict[str, object]:
        answer = json.loads(self.body)
        assert isinstance(answer, dict)
        return answer


def parse_response(data: bytes) -> RawResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(status, headers, body, head)


async def send_raw(port: int, request: bytes, *, source: str | None = None,
                   within: float = 10.0) -> RawResponse:
    """Send bytes, read until the server closes, parse the one response."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    try:
        async with asyncio.timeout(within):
            writer.write(request)
            # The server may answer (413, 431…) before taking all of it.
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            data = b""
            try:
                while not _complete(data) and (chunk := await reader.read(65536)):
                    data += chunk
            except ConnectionResetError:
                pass  # what arrived before the reset is the answer
    finally:
        writer.close()
    return parse_response(data)


def _complete(data: bytes) -> bool:
    """A whole response with a Content-Length is in (the server may linger after it)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def request(method: str, target: str, *headers: str, body: bytes = b"",
            version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1", "Connection: close",
             *headers]
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding"))
                        for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def ranged(value: str, *more: str) -> bytes:
    return request("GET", f"/proxy/{VID}", f"Range: {value}", *more)


def posted(body: bytes, *headers: str) -> bytes:
    return request("POST", "/tracks", "Content-Type: application/json", *headers, body=body)


# (request bytes, expected status, expected error code — None for a success)
HOSTILE: dict[str, tuple[bytes, int, str | None]] = {
    # ------------------------------------------------------------ traversal, NUL, encodings
    "encoded-slash-traversal": (request("GET", "/proxy/..%2F..%2Fetc%2Fpasswd"), 400,
                                "bad_path"),
    "encoded-dot-segments": (request("GET", "/proxy/%2e%2e/%2e%2e/etc/passwd"), 400, "bad_path"),
    "encoded-dotdot-alone": (request("GET", "/proxy/%2E%2E"), 400, "bad_path"),
    "raw-dot-segments": (request("GET", "/proxy/../status"), 400, "bad_path"),
    "raw-root-traversal": (request("GET", "/../../etc/passwd"), 400, "bad_path"),
    "single-dot-segment": (request("GET", "/./status"), 400, "bad_path"),
    "encoded-nul-in-id": (request("GET", f"/proxy/{VID}%00"), 400, "bad_path"),
    "encoded-nul-tracks": (request("GET", "/tracks/%00"), 400, "bad_path"),
    "encoded-newline": (request("GET", "/proxy/abc%0d%0aSet-Cookie:x"), 400, "bad_path"),
    "raw-nul-byte": (b"GET /proxy/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "overlong-utf8-dots": (request("GET", "/proxy/%C0%AE%C0%AE%C0%AFetc"), 400, "bad_path"),
    "invalid-utf8": (request("GET", "/proxy/%FF%FE"), 400, "bad_path"),
    "bad-percent-escape": (request("GET", "/proxy/%ZZ"), 400, "bad_path"),
    "truncated-percent-escape": (request("GET", "/proxy/abc%2"), 400, "bad_path"),
    "encoded-backslash": (request("GET", "/proxy/..%5C..%5Cwin.ini"), 400, "bad_path"),
    "raw-backslash": (request("GET", "/proxy/..\\..\\win.ini"), 400, "bad_path"),
    "double-encoded-traversal": (request("GET", "/proxy/%252e%252e%252fetc"), 400, "bad_id"),
    "playlist-traversal": (request("GET", "/playlist/..%2F..%2Fetc%2Fpasswd.m3u"), 400,
                           "bad_path"),
    "playlist-dotfile": (request("GET", "/playlist/..m3u.m3u"), 400, "bad_playlist_name"),
    "unicode-id": (request("GET", "/proxy/%F0%9F%8E%B5abcdefg"), 400, "bad_id"),
    "unknown-route": (request("GET", "/etc/passwd"), 404, "not_found"),
    "connect-authority-form": (request("CONNECT", "127.0.0.1:22"), 404, "not_found"),
    "asterisk-form-options": (request("OPTIONS", "*"), 404, "not_found"),
    "asterisk-form-get": (request("GET", "*"), 400, "bad_request"),
    # -------------------------------------------------------------------- ids by route
    "proxy-id-short": (request("GET", "/proxy/abc"), 400, "bad_id"),
    "proxy-id-12": (request("GET", f"/proxy/{VID}x"), 400, "bad_id"),
    "proxy-id-overlong": (request("GET", "/proxy/" + "a" * 3000), 400, "bad_id"),
    "proxy-id-bad-char": (request("GET", "/proxy/abc.def+ghi"), 400, "bad_id"),
    "head-proxy-bad-id": (request("HEAD", "/proxy/abc"), 400, None),
    "get-track-bad-id": (request("GET", "/tracks/abc"), 400, "bad_id"),
    "get-track-overlong": (request("GET", "/tracks/" + "b" * 3000), 400, "bad_id"),
    "delete-track-bad-id": (request("DELETE", "/tracks/abc%20def"), 400, "bad_id"),
    "delete-track-traversal": (request("DELETE", "/tracks/..%2F..%2Fdb"), 400, "bad_path"),
    "delete-track-unknown": (request("DELETE", "/tracks/AAAAAAAAAAA"), 404, "not_found"),
    "playlist-name-overlong": (request("GET", "/playlist/" + "p" * 65 + ".m3u"), 400,
                               "bad_playlist_name"),
    "playlist-name-unknown": (request("GET", "/playlist/nope.m3u"), 404, "playlist_not_found"),
    # --------------------------------------------------------------------------- methods
    "put-tracks": (request("PUT", "/tracks", body=b"{}"), 405, "method_not_allowed"),
    "patch-proxy": (request("PATCH", f"/proxy/{VID}"), 405, "method_not_allowed"),
    "post-proxy": (request("POST", f"/proxy/{VID}", body=b"x"), 405, "method_not_allowed"),
    "delete-proxy": (request("DELETE", f"/proxy/{VID}"), 405, "method_not_allowed"),
    "options-status": (request("OPTIONS", "/status"), 405, "method_not_allowed"),
    "trace-root": (request("TRACE", "/"), 405, "method_not_allowed"),
    "propfind-tracks": (request("PROPFIND", "/tracks"), 405, "method_not_allowed"),
    "head-status": (request("HEAD", "/status"), 405, None),
    "unknown-method": (request("BREW", "/status"), 405, "method_not_allowed"),
    "lowercase-method": (request("get", "/status"), 405, "method_not_allowed"),
    # ----------------------------------------------------------------- the request head
    "request-line-over-limit": (request("GET", "/proxy/" + "a" * MAX_REQUEST_LINE), 414,
                                "uri_too_long"),
    "huge-header": (request("GET", "/status", "X-Big: " + "a" * 9000), 431,
                    "header_too_large"),
    "huge-header-name": (request("GET", "/status", "X" * 9000 + ": 1"), 431,
                         "header_too_large"),
    "too-many-headers": (request("GET", "/status",
                                 *(f"X-H{i}: {i}" for i in range(MAX_HEADERS + 5))), 431,
                         "too_many_headers"),
    "bad-http-version": (request("GET", "/status", version="HTTP/9.9"), 400, "bad_request"),
    "unknown-expectation": (request("GET", "/status", "Expect: teapot"), 417,
                            "expectation_failed"),
    "no-http-version": (b"GET /status HTTPX\r\n\r\n", 400, "bad_request"),
    "header-without-colon": (request("GET", "/status", "NoColonHere"), 400, "bad_request"),
    "space-in-header-name": (request("GET", "/status", "Bad Name: 1"), 400, "bad_request"),
    "obs-fold": (request("GET", "/status", "X-A: 1", " folded"), 400, "bad_request"),
    "tls-handshake": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400,
                      "bad_request"),
    "cl-and-te": (request("POST", "/tracks", "Content-Length: 2",
                          "Transfer-Encoding: chunked", body=b"{}"), 400, "bad_request"),
    "bad-content-length": (request("POST", "/tracks", "Content-Length: abc", body=b"{}"),
                           400, "bad_request"),
    "double-content-length": (request("POST", "/tracks", "Content-Length: 2",
                                      "Content-Length: 3", body=b"{}"), 400, "bad_request"),
    # --------------------------------------------------------------------------- Range
    "range-not-a-number": (ranged("bytes=abc"), 416, "bad_range"),
    "range-end-before-start": (ranged("bytes=5-1"), 416, "bad_range"),
    "range-suffix-zero": (ranged("bytes=-0"), 416, "bad_range"),
    "range-at-end": (ranged(f"bytes={SIZE}-"), 416, "bad_range"),
    "range-past-end": (ranged(f"bytes={SIZE + 10}-{SIZE + 20}"), 416, "bad_range"),
    "range-empty-spec": (ranged("bytes="), 416, "bad_range"),
    "range-dash-only": (ranged("bytes=-"), 416, "bad_range"),
    "range-double-dash": (ranged("bytes=--5"), 416, "bad_range"),
    "range-three-parts": (ranged("bytes=1-2-3"), 416, "bad_range"),
    "range-hex": (ranged("bytes=0x10-"), 416, "bad_range"),
    "range-plus-sign": (ranged("bytes=+5-"), 416, "bad_range"),
    "range-negative-end": (ranged("bytes=5--1"), 416, "bad_range"),
    "range-non-ascii-digits": (ranged("bytes=\u0663-"), 416, "bad_range"),
    "range-5000-digit-start": (ranged("bytes=" + "9" * 5000 + "-"), 416, "bad_range"),
    "range-list-one-malformed": (ranged("bytes=0-1,abc"), 416, "bad_range"),
    "range-list-one-inverted": (ranged("bytes=0-1,9-5"), 416, "bad_range"),
    "range-only-commas": (ranged("bytes=,,"), 416, "bad_range"),
    "range-two-header-lines": (ranged("bytes=0-1", "Range: bytes=5-6"), 416, "bad_range"),
    # ---- ignored, as RFC 9110 allows and README documents: the whole body, 200
    "range-multi": (ranged("bytes=0-1,5-6"), 200, None),
    "range-other-unit": (ranged("items=0-5"), 200, None),
    "range-no-equals": (ranged("bytes 0-5"), 200, None),
    "range-with-if-range": (ranged("bytes=0-5", 'If-Range: "etag"'), 200, None),
    # ---- odd but valid: one range
    "range-5000-digit-end": (ranged("bytes=10-" + "9" * 5000), 206, None),
    "range-trailing-comma": (ranged("bytes=0-5,"), 206, None),
    "range-leading-zeros": (ranged("bytes=" + "0" * 40 + "7-9"), 206, None),
    # ----------------------------------------------------------------------- JSON bodies
    "json-malformed": (posted(b"{nope"), 400, "bad_json"),
    "json-empty-body": (posted(b""), 400, "bad_json"),
    "json-not-utf8": (posted(b'{"id": "\xff\xfe"}'), 400, "bad_json"),
    "json-deep-nesting": (posted(b"[" * 50_000), 400, "bad_json"),
    "json-huge-integer": (posted(b"1" * 5000), 400, "bad_json"),
    "json-array": (posted(b'["id"]'), 400, "bad_request"),
    "json-string": (posted(b'"id"'), 400, "bad_request"),
    "json-null": (posted(b"null"), 400, "bad_request"),
    "json-no-field": (posted(b'{"colour": "red"}'), 400, "bad_request"),
    "json-both-fields": (posted(b'{"id": "AAAAAAAAAAA", "url": "https://x.test/"}'), 400,
                         "bad_request"),
    "json-unknown-field": (posted(b'{"id": "AAAAAAAAAAA", "extra": 1}'), 400, "bad_request"),
    "json-id-not-string": (posted(b'{"id": 5}'), 400, "bad_request"),
    "json-id-empty": (posted(b'{"id": "  "}'), 400, "bad_request"),
    "json-id-nul": (posted(b'{"id": "\\u0000AAAAAAAAAA"}'), 400, "bad_request"),
    "json-url-surrogate": (posted(b'{"url": "http://127.0.0.1/\\ud800"}'), 400, "bad_request"),
    "json-url-overlong": (posted(b'{"url": "https://x.test/' + b"a" * 3000 + b'"}'), 400,
                          "bad_request"),
    "json-id-bad": (posted(b'{"id": "bad id"}'), 400, "bad_id"),
    "json-url-not-http": (posted(b'{"url": "file:///etc/passwd"}'), 400, None),
    "json-bogus-charset": (request("POST", "/tracks",
                                   "Content-Type: application/json; charset=x-nope",
                                   body=b'{"id": "bad id"}'), 400, "bad_id"),
    "body-over-limit": (posted(b" " * (MAX_BODY + 1)), 413, "request_entity_too_large"),
    "chunked-body-over-limit": (
        request("POST", "/tracks", "Transfer-Encoding: chunked",
                "Content-Type: application/json",
                body=b"".join(b"4000\r\n" + b" " * 0x4000 + b"\r\n" for _ in range(6))
                + b"0\r\n\r\n"), 413, "request_entity_too_large"),
    "bad-chunk-size": (request("POST", "/tracks", "Transfer-Encoding: chunked",
                               "Content-Type: application/json",
                               body=b"zz\r\n{}\r\n0\r\n\r\n"), 400, None),
}


@pytest.fixture
async def proxy(googlevideo: FakeGooglevideo, make_proxy: ProxyFactory) -> RunningProxy:
    googlevideo.add_track(VID, DATA, title="Hostile")
    running = await make_proxy()
    # Store it, so Range cases reach the relay without a resolve each.
    async with running.session.head(running.url(f"/proxy/{VID}")) as resp:
        assert resp.status == 200
    return running


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_request_gets_its_status_and_a_json_error(
    proxy: RunningProxy, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw, status, code = HOSTILE[case]
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    answer = await send_raw(proxy.server.port, raw)  # type: ignore[arg-type]
    assert answer.status == status, (case, answer.status, answer.body[:300])
    if status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), answer
        if raw.startswith(b"HEAD "):
            assert answer.body == b""
        else:
            body = answer.json()
            assert set(body) == {"error", "message"}, body
            assert isinstance(body["message"], str) and body["message"]
            if code is not None:
                assert body["error"] == code, (case, body)
            assert len(answer.body) < 2000, "an error must not echo the whole request"
    if status == 405:
        assert answer.headers.get("allow"), answer.headers
    if status == 416:
        assert answer.headers["content-range"] == f"bytes */{SIZE}"
    if status == 200 and case.startswith("range"):
        assert answer.body == DATA
    if status == 206:
        first, last = answer.headers["content-range"].removeprefix("bytes ").split("/")[0] \
            .split("-")
        assert answer.body == DATA[int(first): int(last) + 1]
    # aiohttp's own "Error handling request" tracebacks are for bugs, not clients.
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200


async def test_allow_names_the_routes_methods(proxy: RunningProxy) -> None:
    port = proxy.server.port
    assert port is not None
    answers = {
        "/tracks": await send_raw(port, request("PUT", "/tracks", body=b"{}")),
        f"/proxy/{VID}": await send_raw(port, request("DELETE", f"/proxy/{VID}")),
        "/status": await send_raw(port, request("OPTIONS", "/status")),
    }
    allowed = {path: {m.strip() for m in a.headers["allow"].split(",")}
               for path, a in answers.items()}
    assert allowed == {"/tracks": {"GET", "POST"}, f"/proxy/{VID}": {"GET", "HEAD"},
                       "/status": {"GET"}}
    unknown = await send_raw(port, request("BREW", "/status"))
    assert {m.strip() for m in unknown.headers["allow"].split(",")} == {
        "GET", "HEAD", "POST", "DELETE"}


@pytest.mark.parametrize(("version", "answered"), [
    ("HTTP/2.0", b"HTTP/1.1 200 "), ("HTTP/1.2", b"HTTP/1.0 400 "),  # llhttp refuses 1.2
    ("HTTP/0.9", b"HTTP/1.0 200 "), ("HTTP/1.0", b"HTTP/1.0 200 "),
])
async def test_odd_http_versions_are_answered_in_http1(
    proxy: RunningProxy, version: str, answered: bytes
) -> None:
    """aiohttp would echo the request's version ("HTTP/2.0 200 OK"): unreadable over HTTP/1."""
    port = proxy.server.port
    assert port is not None
    answer = await send_raw(port, request("GET", "/health", version=version))
    assert answer.raw_head.startswith(answered), answer.raw_head


async def answer_of(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> RawResponse:
    """What a raw client gets from ytproxy's listener serving ``handler`` at /crash."""
    app = web.Application()
    app.router.add_get("/crash", handler)
    app[CONNECTIONS] = ConnectionLimits(LimitsConfig())
    runner = Runner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        return await send_raw(runner.addresses[0][1], request("GET", "/crash"))
    finally:
        await runner.cleanup()


async def test_a_crashing_handler_is_a_json_500_and_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The one 5xx the listener makes itself: a bug, so it is logged loudly."""

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    answer = await answer_of(crash)
    assert answer.status == 500
    assert answer.json()["error"] == "internal_error"
    assert "boom" not in answer.body.decode()
    crashes = [r for r in caplog.records if r.name == "ytproxy.http.listener" and r.exc_info]
    assert len(crashes) == 1 and crashes[0].levelno == logging.ERROR


async def test_a_crash_after_the_first_byte_is_logged_with_its_traceback_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once output has started only the connection can be cut; the crash is still
    an ERROR with its traceback, and a signed URL in it loses its query."""

    async def crash_midway(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first bytes")
        raise RuntimeError("boom at https://rr1.googlevideo.com/videoplayback?sig=SECRET1")

    answer = await answer_of(crash_midway)
    assert answer.status == 200 and b"first bytes" in answer.body
    assert not answer.body.endswith(b"0\r\n\r\n")  # cut, not ended
    crashes = [r for r in caplog.records if r.name == "ytproxy.http.listener" and r.exc_info]
    assert len(crashes) == 1 and crashes[0].levelno == logging.ERROR
    assert "after its answer began" in crashes[0].getMessage()
    record = crashes[0]
    record.exc_text = None  # as the daemon's handler sees it: its filter runs first
    RedactingFilter().filter(record)
    assert record.exc_text is not None and "boom" in record.exc_text
    assert "SECRET1" not in record.exc_text


# ---------------------------------------------------------------------- resource limits


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def open_idle(port: int, n: int, *, source: str, first_bytes: bytes = b"GET /pro"
                    ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """n connections that send half a request line and then nothing (slowloris)."""
    opened = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
        writer.write(first_bytes)
        opened.append((reader, writer))
    return opened


def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    async with asyncio.timeout(within):
        return await reader.read()


async def test_idle_half_open_connections_do_not_block_streams_or_the_cap(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    googlevideo.add_track(VID, DATA, title="Hostile")
    proxy = await make_proxy(limits={"max_streams": 2, "max_connections": 100,
                                     "max_connections_per_client": 60})
    port = proxy.server.port
    assert port is not None
    idle = await open_idle(port, 50, source="127.0.0.2")
    try:
        await until(lambda: proxy.app[CONNECTIONS].open == 50)
        started = time.monotonic()

        async def stream() -> tuple[int, bytes]:
            async with proxy.session.get(proxy.url(f"/proxy/{VID}")) as resp:
                return resp.status, await resp.read()

        # The cap (2) still admits two streams at once, and only the third gets 503.
        googlevideo.throttle_bytes_per_sec = 100_000  # each stream takes ~0.5 s
        answers = await asyncio.gather(stream(), stream(), stream())
        assert sorted(status for status, _ in answers) == [200, 200, 503]
        assert all(body == DATA for status, body in answers if status == 200)
        assert time.monotonic() - started < 5.0
        assert proxy.app[SLOTS].rejected == 1
        # The idle ones are all still there: nothing was evicted to make room.
        assert proxy.app[CONNECTIONS].by_client("127.0.0.2") == 50
    finally:
        close_all(idle)
    await until(lambda: proxy.app[CONNECTIONS].by_client("127.0.0.2") == 0)


async def test_slow_request_heads_are_cut_after_idle_timeout_but_paused_streams_are_not(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    big = random_audio(4_000_000, seed=9)
    googlevideo.add_track(VID, big, title="Paused")
    proxy = await make_proxy(limits={"idle_timeout": 0.5})
    port = proxy.server.port
    assert port is not None
    # A stream that the listener pauses for three idle timeouts.
    resp = await proxy.session.get(proxy.url(f"/proxy/{VID}"))
    assert resp.status == 200
    received = await resp.content.readexactly(100_000)
    # Meanwhile: one idle connection, and one dripping a byte every 0.1 s.
    idle = await open_idle(port, 1, source="127.0.0.2", first_bytes=b"")
    drip_reader, drip_writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def drip() -> None:
        for byte in b"GET /status HTTP/1.1\r\nHost: x\r\n" * 10:
            if drip_writer.is_closing():
                return
            drip_writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        assert await closed_by_server(idle[0][0], within=3.0) == b""
        assert await closed_by_server(drip_reader, within=3.0) == b""
        assert time.monotonic() - started < 2.0
    finally:
        dripping.cancel()
        close_all(idle)
        drip_writer.close()
    await asyncio.sleep(1.5)  # the stream is still paused
    received += await resp.content.read()
    resp.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(big).digest()


async def test_per_client_connection_limit(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(limits={"max_connections_per_client": 3})
    port = proxy.server.port
    assert port is not None
    held = await open_idle(port, 3, source="127.0.0.2", first_bytes=b"")
    try:
        await until(lambda: proxy.app[CONNECTIONS].by_client("127.0.0.2") == 3)
        refused = await send_raw(port, request("GET", "/health"), source="127.0.0.2")
        assert refused.status == 503
        assert refused.json()["error"] == "too_many_connections"
        assert "max_connections_per_client" in str(refused.json()["message"])
        assert int(refused.headers["retry-after"]) > 0
        # Another client is served meanwhile.
        other = await send_raw(port, request("GET", "/health"), source="127.0.0.3")
        assert other.status == 200
        # One of the three goes away: the client may connect again.
        close_all(held[:1])
        await until(lambda: proxy.app[CONNECTIONS].by_client("127.0.0.2") == 2)
        again = await send_raw(port, request("GET", "/health"), source="127.0.0.2")
        assert again.status == 200
    finally:
        close_all(held)
    await until(lambda: proxy.app[CONNECTIONS].open == 0)
    assert proxy.app[CONNECTIONS].refused == 1


async def test_total_connection_limit_and_aiohttp_clients_read_the_503(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(limits={"max_streams": 1, "max_connections": 4,
                                     "max_connections_per_client": 4})
    port = proxy.server.port
    assert port is not None
    held = [*await open_idle(port, 2, source="127.0.0.2", first_bytes=b""),
            *await open_idle(port, 2, source="127.0.0.3", first_bytes=b"")]
    try:
        await until(lambda: proxy.app[CONNECTIONS].open == 4)
        refused = await send_raw(port, request("GET", "/health"), source="127.0.0.4")
        assert refused.status == 503
        assert "limits.max_connections" in str(refused.json()["message"])
        # What a real client (aiohttp here, curl in MPD) sees: a readable 503.
        async with proxy.session.get(proxy.url("/health")) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "too_many_connections"
    finally:
        close_all(held)
    await until(lambda: proxy.app[CONNECTIONS].open == 0)
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200


async def test_a_body_that_never_arrives_gets_408(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(limits={"idle_timeout": 0.5})
    port = proxy.server.port
    assert port is not None
    started = time.monotonic()
    answer = await send_raw(port, request("POST", "/tracks", "Content-Length: 100",
                                          "Content-Type: application/json") + b'{"id": ',
                            within=5.0)
    assert answer.status == 408
    assert answer.json()["error"] == "request_timeout"
    assert time.monotonic() - started < 3.0


# ------------------------------------------------------------------ bodies cut short


@contextlib.asynccontextmanager
async def daemon_listener(googlevideo: FakeGooglevideo, tmp_path: Path
                          ) -> AsyncIterator[tuple[web.Application, int]]:
    """The app on ytproxy's Runner as ``ytproxy serve`` runs it: unlike aiohttp's
    TestServer, a handler is not cancelled when its client leaves."""
    app = create_app(proxy_config(googlevideo, tmp_path))
    runner = Runner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("framing", ["Content-Length: 1000", "Transfer-Encoding: chunked"])
async def test_a_client_that_abandons_its_body_is_one_debug_line(
    googlevideo: FakeGooglevideo, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    framing: str,
) -> None:
    """Headers, 10 bytes of a promised 1000, then the connection closes: any
    client can do it, so it must not be an ERROR with a traceback."""
    caplog.set_level(logging.DEBUG)
    async with daemon_listener(googlevideo, tmp_path) as (app, port):
        in_flight = app[IN_FLIGHT]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        part = b'{"id": "AA' if framing.startswith("Content") else b'a\r\n{"id": "AA'
        writer.write(request("POST", "/tracks", "Content-Type: application/json", framing)
                     + part)
        await writer.drain()
        await until(lambda: len(in_flight) == 1)  # the handler waits for the body
        writer.close()
        await until(lambda: len(in_flight) == 0)
        answer = await send_raw(port, request("GET", "/health"))
        assert answer.status == 200
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [f"{r.name} {r.levelname}: {r.getMessage()}" for r in loud]
    told = [r for r in caplog.records if "before its body" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno <= logging.INFO, caplog.text


async def first_response_line(port: int, head: bytes) -> tuple[bytes, asyncio.StreamReader,
                                                               asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    async with asyncio.timeout(10):
        return await reader.readline(), reader, writer


async def test_expect_100_continue_for_a_body_over_the_limit_is_413_at_once(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture,
) -> None:
    port = proxy.server.port
    assert port is not None
    head = request("POST", "/tracks", "Content-Type: application/json",
                   "Expect: 100-continue", "Content-Length: 100000000")
    line, reader, writer = await first_response_line(port, head)
    try:
        assert line.startswith(b"HTTP/1.1 413 "), line
        async with asyncio.timeout(10):
            rest = await reader.read()
    finally:
        writer.close()
    answer = parse_response(line + rest)
    assert answer.json()["error"] == "request_entity_too_large"
    assert str(MAX_BODY) in str(answer.json()["message"])
    assert answer.headers["content-type"].startswith("application/json")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_expect_100_continue_within_the_limit_still_continues(
    proxy: RunningProxy,
) -> None:
    """A body that may come is invited; the answer after it is JSON as ever."""
    port = proxy.server.port
    assert port is not None
    body = b"{nope"
    head = request("POST", "/tracks", "Content-Type: application/json",
                   "Expect: 100-continue", f"Content-Length: {len(body)}")
    line, reader, writer = await first_response_line(port, head)
    try:
        assert line == b"HTTP/1.1 100 Continue\r\n", line
        assert await reader.readline() == b"\r\n"
        writer.write(body)
        async with asyncio.timeout(10):
            rest = await reader.read()
    finally:
        writer.close()
    answer = parse_response(rest)
    assert answer.status == 400 and answer.json()["error"] == "bad_json", answer
