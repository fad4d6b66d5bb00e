"""A hypothesis-driven HTTP fuzz of the running daemon: paths, methods, headers, bodies.

The real app runs on loopback against the fake googlevideo (two stored
tracks, a few unknown ids the fake does not have).  Hypothesis builds raw
requests — well-formed, odd and broken — and sends each on its own socket
from a worker thread while the daemon serves on the test's event loop.  Every
answer must be a status other than 5xx (except the documented 502 and 503),
errors must be JSON ``{"error", "message"}``, the daemon must still be healthy
at the end, and nothing may have logged a traceback or an ERROR.

``YTPROXY_FUZZ_REQUESTS`` sets the number of requests (default 2000, the CI
floor); ``YTPROXY_FUZZ_SEED`` picks another reproducible run (default 0).
``YTPROXY_FUZZ_REPORT=PATH`` writes the counts by status and route as JSON.

No request leaves loopback: the only URLs in bodies point at 127.0.0.1 or
use schemes ytproxy refuses, and ids resolve through the fake's watch page.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import string
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fakes.googlevideo import FakeGooglevideo
from tests.proxy_fixture import ProxyFactory, random_audio
from ytproxy.errors import BadPath, BadRange
from ytproxy.http.ranges import parse_range
from ytproxy.http.validation import check_path

REQUESTS = int(os.environ.get("YTPROXY_FUZZ_REQUESTS", "2000"))
SEED = int(os.environ.get("YTPROXY_FUZZ_SEED", "0"))
# One request may take this long before the fuzz calls the daemon hung.
REQUEST_TIMEOUT = 15.0

STORED = ("fuzzTrack01", "fuzz-Track2")
UNKNOWN = ("AAAAAAAAAAA", "zzzzzzzzzz_", "-----------")  # valid ids the fake does not have
DOCUMENTED_5XX = {502, 503}
ID_ALPHABET = string.ascii_letters + string.digits + "_-"

# ------------------------------------------------------------------------- strategies


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]
           ) -> st.SearchStrategy[Any]:
    """``common`` nine times in ten: most requests should get past the parser."""
    return st.integers(0, 9).flatmap(lambda n: rare if n == 0 else common)


ids = st.one_of(
    st.sampled_from(STORED * 3 + UNKNOWN),
    st.text(ID_ALPHABET, min_size=0, max_size=14),
    st.sampled_from(["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%00", f"{STORED[0]}%00",
                     "%", "%Z", "%C0%AE", "%FF", "a%2Fb", "%5C", ".", "~", "%20",
                     "a" * 300, "%E2%80%AE", "*", ";", "%3B", f"{STORED[0]}.mp3"]),
    # Anything, percent-encoded as a client would (raw bytes below, in `raw_text`).
    st.text(min_size=0, max_size=16).map(lambda t: quote(t, safe="")),
)
# Text as it comes: non-ASCII, controls, spaces; the parser's business, mostly.
raw_text = st.text(max_size=16)
playlist_names = st.one_of(st.sampled_from(["mix", "Road Trip", "..", ".hidden", "-x"]),
                           st.text(min_size=0, max_size=70).map(lambda t: quote(t, safe="")))
# (path, the methods its route answers): most requests use one of those methods,
# so they get past the router into the handlers.
targets = mostly(
    st.one_of(
        st.builds(lambda i: (f"/proxy/{i}", ["GET", "HEAD"]),
                  mostly(st.sampled_from(STORED), ids)),
        st.builds(lambda i: (f"/tracks/{i}", ["GET", "DELETE"]), ids),
        st.just(("/tracks", ["GET", "POST", "POST"])),
        st.builds(lambda n: (f"/playlist/{n}.m3u", ["GET"]), playlist_names),
        st.sampled_from(["/", "/status", "/health", "/metrics", "/tracks", "/playlists",
                         "/playlist.m3u", "/proxy/", "/proxy", "/tracks/", "//status",
                         "/status/", "/STATUS", "*", "/%2e%2e/status", "/./health"]
                        ).map(lambda path: (path, ["GET"])),
        st.lists(st.one_of(ids, st.sampled_from(["proxy", "tracks", "playlist", ".."])),
                 max_size=5).map(lambda segments: ("/" + "/".join(segments), ["GET"])),
    ),
    st.builds(lambda a, b: (f"/{a}/{b}", ["GET"]),
              st.sampled_from(["proxy", "tracks", "playlist"]), raw_text),
)
queries = mostly(st.just(""), st.one_of(
    st.text(string.ascii_letters + string.digits + "=&%-.", max_size=30),
    raw_text,
).map(lambda q: "?" + q))
methods = mostly(
    st.sampled_from(["GET"] * 12 + ["HEAD"] * 3 + ["POST"] * 5 + [
        "DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "CONNECT", "BREW", "get",
        "M-SEARCH"]),
    st.text(string.ascii_letters + "-_!#", min_size=1, max_size=10),
)
versions = mostly(st.just("HTTP/1.1"),
                  st.sampled_from(["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "HTTP/1.1 ",
                                   "HTTPS/1.1", "http/1.1", ""]))
range_specs = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", st.one_of(st.just(""), st.integers(0, 80_000)),
              st.one_of(st.just(""), st.integers(0, 80_000))),
    st.text("0123456789-, x", max_size=12),
)
range_values = st.one_of(
    st.lists(range_specs, min_size=1, max_size=3).map(lambda s: "bytes=" + ",".join(s)),
    st.sampled_from(["bytes=0-", "bytes=-0", "bytes=-5", "items=0-1", "bytes",
                     "bytes=" + "9" * 40 + "-", "bytes=0-" + "9" * 4400, "bytes=\u0663-"]),
    st.text(string.printable.strip(), max_size=20),
)
header_values = mostly(st.text(string.printable.strip() + " ", max_size=40),
                       st.text(st.characters(exclude_characters="\r\n"), max_size=40))
good_headers = st.one_of(
    st.tuples(st.just("Range"), range_values),
    st.tuples(st.just("Icy-MetaData"), st.sampled_from(["1", "0", "yes", ""])),
    st.tuples(st.just("If-Range"), header_values),
    st.tuples(st.just("Content-Type"),
              st.sampled_from(["application/json", "application/json; charset=latin-1",
                               "application/json; charset=x-nope", "text/plain",
                               "multipart/form-data; boundary=x", ";;;", ""])),
    st.tuples(st.sampled_from(["Accept", "User-Agent", "Authorization", "Cookie",
                               "X-Forwarded-For", "Accept-Encoding", "Expect", "Connection"]),
              st.one_of(header_values, st.sampled_from(["100-continue", "gzip", "close",
                                                        "keep-alive", "Bearer x"]))),
    st.tuples(st.text(string.ascii_letters + "-_!#$%&'*+.^`|~", min_size=1, max_size=12),
              header_values),
)
headers = mostly(
    st.lists(good_headers, max_size=5, unique_by=lambda h: h[0].lower()),
    st.lists(st.one_of(good_headers, st.tuples(st.text(max_size=8), st.text(max_size=8))),
             max_size=5),  # anything, even broken
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=8,
)
track_fields = st.one_of(
    st.builds(lambda i: {"id": i}, ids),
    st.builds(lambda u: {"url": u}, st.sampled_from([
        "file:///etc/passwd", "ftp://127.0.0.1/x", "javascript:alert(1)", "not a url",
        "http://127.0.0.1:9/watch", "https://127.0.0.1:9/", "http://[::1]:9/", "",
        "https://www.youtube.com/watch?v=" + STORED[0]])),
    st.dictionaries(st.sampled_from(["id", "url", "name", "extra"]), json_values, max_size=3),
)
bodies = st.one_of(
    st.just(b""),
    track_fields.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.sampled_from([b"{", b"[" * 2000, b"1" * 5000, b'{"id": "\xff"}', b"\x00" * 8]),
)


def _no_outside_urls(body: bytes) -> bool:
    """Belt and braces: nothing hypothesis invents may send yt-dlp off this machine."""
    text = body.decode("utf-8", "replace").lower()
    return "://" not in text or all(
        part.startswith(("127.0.0.1", "[::1]", "/etc", "www.youtube.com/watch?v=fuzz"))
        for part in text.split("://")[1:])


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, bytes, str]:
    path, allowed = draw(targets)
    method = draw(mostly(st.sampled_from(allowed), methods))
    path += draw(queries)
    version = draw(versions)
    lines = [f"{method} {path} {version}".rstrip(" ") if version else f"{method} {path}"]
    lines.append("Host: 127.0.0.1")
    if path.startswith("/proxy/") and draw(st.booleans()):
        lines.append(f"Range: {draw(range_values)}")
    lines += [f"{name}: {value}" for name, value in draw(headers)]
    body = draw(bodies) if method in ("POST", "PUT", "PATCH") or draw(st.booleans()) else b""
    if not _no_outside_urls(body):
        body = b"{}"
    if body and draw(st.integers(0, 9)) == 0:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    lines.append("Connection: close")
    # Lone surrogates go out as the (invalid) UTF-8 bytes they would be.
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
    route = path.split("?")[0].split("/")[1] if path.startswith("/") else path[:10]
    return method, head + payload, route


# -------------------------------------------------------------------------- the exchange


def exchange(port: int, method: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh socket; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
        # Answered early (431, 413…)? The answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=method.upper())
        try:
            response.begin()
            body = response.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
async def test_http_fuzz_finds_no_5xx_no_crash_and_no_traceback(
    googlevideo: FakeGooglevideo, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for number, track_id in enumerate(STORED):
        googlevideo.add_track(track_id, random_audio(20_000 + 7_000 * number, seed=number),
                              title=f"Fuzz {number}")
    proxy = await make_proxy(limits={"idle_timeout": 2.0})
    for track_id in STORED:  # stored, so most plays do not need yt-dlp
        async with proxy.session.head(proxy.url(f"/proxy/{track_id}")) as resp:
            assert resp.status == 200
    port = proxy.server.port
    assert port is not None

    statuses: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    by_route: Counter[str] = Counter()
    lock = threading.Lock()

    @seed(SEED)
    @settings(max_examples=REQUESTS, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @given(http_requests())
    def fuzz(case: tuple[str, bytes, str]) -> None:
        method, raw, route = case
        try:
            status, answer_headers, body = exchange(port, method, raw)
        except (http.client.HTTPException, OSError) as exc:
            raise AssertionError(f"no answer to {raw[:300]!r}: {exc!r}") from exc
        with lock:
            statuses[status] += 1
            by_route[route if route in _ROUTES else "other"] += 1
        assert status < 500 or status in DOCUMENTED_5XX, (status, raw[:300], body[:300])
        if status >= 400 and method.upper() != "HEAD" and body:
            assert answer_headers.get("content-type", "").startswith("application/json"), (
                status, raw[:300], answer_headers)
            answer = json.loads(body)
            assert set(answer) >= {"error", "message"}, (raw[:300], answer)
            with lock:
                codes[f"{status} {answer['error']}"] += 1
                messages[str(answer["message"])[:60]] += 1

    started = time.monotonic()
    try:
        await asyncio.to_thread(fuzz)
    finally:
        # What ran, for the record (shown with -s, or written to $YTPROXY_FUZZ_REPORT).
        summary: dict[str, Any] = {
            "requests": sum(statuses.values()), "seconds": round(time.monotonic() - started, 1),
            "seed": SEED, "statuses": dict(sorted(statuses.items())),
            "errors": dict(codes.most_common()), "routes": dict(by_route.most_common()),
            "top_messages": dict(messages.most_common(15)),
        }
        print(f"\nfuzz: {json.dumps(summary)}")
        if os.environ.get("YTPROXY_FUZZ_REPORT"):
            report = Path(os.environ["YTPROXY_FUZZ_REPORT"])
            report.write_text(json.dumps(summary, indent=2))  # noqa: ASYNC240
    assert summary["requests"] >= REQUESTS, summary

    # The daemon is still up and healthy, and still streams.
    async with proxy.session.get(proxy.url("/health")) as resp:
        assert resp.status == 200, await resp.text()
    async with proxy.session.get(proxy.url(f"/proxy/{STORED[0]}")) as resp:
        assert resp.status == 200 and len(await resp.read()) == 20_000
    # Nothing logged a traceback, and nothing logged an ERROR.
    bad = [r for r in caplog.records
           if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not bad, [f"{r.name} {r.levelname}: {r.getMessage()[:300]}" for r in bad[:5]]


_ROUTES = {"proxy", "tracks", "playlist", "playlists", "playlist.m3u", "status", "health",
           "metrics", ""}


# ------------------------------------------------------------- the parsers, on their own


@settings(max_examples=1000, deadline=None, database=None)
@given(header=st.one_of(range_values, st.text(max_size=60)), size=st.integers(0, 10**12))
def test_parse_range_answers_a_range_inside_the_body_or_416(header: str, size: int) -> None:
    try:
        chosen = parse_range(header, size)
    except BadRange as exc:
        assert exc.status == 416 and exc.size == size
        assert len(str(exc)) < 300  # never the whole header back
        return
    if chosen is not None:
        start, end = chosen
        assert 0 <= start <= end < size


@settings(max_examples=1000, deadline=None, database=None)
@given(path=st.one_of(targets.map(lambda target: target[0]), st.text(max_size=40)))
def test_check_path_passes_or_refuses_with_bad_path(path: str) -> None:
    try:
        check_path(path)
    except BadPath as exc:
        assert exc.status == 400
        return
    # What routing sees: no query, no fragment (check_path looks at no more).
    decoded = unquote(path.partition("?")[0].partition("#")[0])
    assert "\x00" not in decoded and "\\" not in decoded
    assert not {".", ".."} & set(decoded.split("/"))
