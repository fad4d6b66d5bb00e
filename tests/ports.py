"""Loopback ports for tests that run beside others (pytest-xdist, another suite).

A port found free by binding port 0 and closing the socket again may be handed
to any other bind(0) on the machine the moment it is closed: a test whose
"nothing listens there" then meets another test's server, or whose daemon
cannot bind the port it was configured with.  ``free_port`` keeps the port
bound (with SO_REUSEADDR, never listening) until the test ends:

- connections to it are refused while no server of the test listens there;
- a server that binds it with SO_REUSEADDR, as asyncio, aiohttp, ytproxy's
  daemon and MPD all do, can listen on it meanwhile;
- the kernel hands it to no other bind(0) until it is let go.

``tests/conftest.py`` lets go of every port a test held once its fixtures are
torn down.
"""

from __future__ import annotations

import socket

__all__ = ["HOST", "free_port", "let_go"]

HOST = "127.0.0.1"

_held: list[socket.socket] = []


def free_port() -> int:
    """A port of 127.0.0.1 that refuses connections and is this test's until it ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
    except OSError:
        sock.close()
        raise
    _held.append(sock)
    return int(sock.getsockname()[1])


def let_go() -> None:
    """Close every port ``free_port`` holds (after each test)."""
    while _held:
        _held.pop().close()
