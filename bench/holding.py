"""``python -m bench.holding``: what holding requests costs while upstream is down.

The real daemon, ten tracks resolved and stored while the stand-in upstream is
up; then the upstream stops (connections refused) and ten listeners ask for
them.  Each request is held (MPD waits for headers with no timeout of its own);
the daemon's CPU over the hold is read from /proc and printed as a share of
one core.  Then the upstream comes back on the same port and every held
request must be answered 200 with its bytes.  All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.servers import HOST, Daemon, Upstream, make_media, write_watch_page

LISTENERS = 10
MB = 1_000_000


def fetch(url: str, timeout: float) -> tuple[int, int]:
    """(status, bytes) of a whole GET, with no proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, len(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.holding", description=__doc__)
    parser.add_argument("--hold", type=float, default=30.0,
                        help="seconds the upstream stays down while CPU is measured (30)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ytproxy-bench-hold-") as tmp:
        work = Path(tmp)
        root = work / "www"
        media = make_media(root, {"track.webm": (2 * MB, False)})["track.webm"]
        upstream = Upstream(work, root)
        upstream.start()
        expire = int(time.time() + 6 * 3600)
        ids = [f"HoldBench{i:02d}" for i in range(LISTENERS)]
        for track_id in ids:
            url = upstream.url(f"{media.path}?clen={media.size}&expire={expire}")
            write_watch_page(root, track_id, url, track_id)
        daemon = Daemon(work, upstream.port, extra={
            "retry": {"hold_budget": args.hold + 60.0},
            "limits": {"max_streams": 50},
        })
        daemon.start()
        try:
            base = f"http://{HOST}:{daemon.port}"
            for track_id in ids:  # resolved and stored while upstream is up
                status, size = fetch(f"{base}/proxy/{track_id}", 60)
                assert status == 200 and size == media.size, (track_id, status, size)
            upstream.stop()
            assert daemon.stats is not None
            with concurrent.futures.ThreadPoolExecutor(LISTENERS) as pool:
                held = [pool.submit(fetch, f"{base}/proxy/{t}", args.hold + 120) for t in ids]
                deadline = time.monotonic() + 30
                while daemon.status()["upstream"]["holding"]["held_total"] < LISTENERS:
                    assert time.monotonic() < deadline, daemon.status()["upstream"]
                    time.sleep(0.2)
                cpu0, t0 = daemon.stats.cpu_seconds(), time.monotonic()
                time.sleep(args.hold)
                cpu1, t1 = daemon.stats.cpu_seconds(), time.monotonic()
                holding = daemon.status()["upstream"]["holding"]
                upstream.start()  # back, on the same port
                back = time.monotonic()
                answers = [f.result() for f in held]
                served = time.monotonic() - back
        finally:
            daemon.stop()
            upstream.stop()
    share = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    result = {
        "held_requests": holding["held_total"],
        "hold_seconds": round(t1 - t0, 1),
        "daemon_cpu_percent_of_one_core": round(share, 3),
        "all_served_after_return": all(a == (200, media.size) for a in answers),
        "seconds_to_serve_all_after_return": round(served, 2),
    }
    print(json.dumps(result, indent=2))
    print(f"holding {holding['held_total']} requests for {t1 - t0:.0f} s: daemon CPU "
          f"{share:.3f} % of one core (target < 1 %); all {LISTENERS} served "
          f"{served:.1f} s after upstream returned: {result['all_served_after_return']}")
    return 0 if result["all_served_after_return"] else 1


if __name__ == "__main__":
    sys.exit(main())
