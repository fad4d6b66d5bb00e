"""The fallback upstream when nginx is not installed: an aiohttp static file server.

Serves ``--root`` on 127.0.0.1 and honours ``Range`` (aiohttp's ``FileResponse``).

    python -m bench.fileserver --root DIR --port PORT
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from bench.listeners import raise_nofile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    app = web.Application()
    app.router.add_static("/", args.root)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
