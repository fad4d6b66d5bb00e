"""Asking a running daemon how it is: ``GET /status`` and ``GET /health``, with short timeouts.

Used by ``ytproxy status`` and ``ytproxy doctor``.  The daemon is on loopback
(or wherever ``server.host`` says): never through an outbound proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from ytproxy.config import Config
from ytproxy.library.playlists import proxy_base_url

__all__ = [
    "DaemonHealth",
    "DaemonNotAnswering",
    "DaemonReport",
    "daemon_base_url",
    "fetch_health",
    "fetch_report",
    "not_answering_message",
    "request_json",
]

DEFAULT_TIMEOUT = 3.0


class DaemonNotAnswering(Exception):
    """Nothing (or not ytproxy) answers at the configured address."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(reason)
        self.base_url = base_url
        self.reason = reason


@dataclass(frozen=True)
class DaemonHealth:
    """What ``/health`` said: ``status`` is "ok", "degraded" or "down"."""

    http_status: int
    status: str
    reasons: list[str]

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.status == "ok"


@dataclass(frozen=True)
class DaemonReport:
    base_url: str
    status: dict[str, Any]
    health: DaemonHealth


def daemon_base_url(config: Config) -> str:
    """``http://HOST:PORT`` of the configured daemon (a wildcard bind is asked on loopback)."""
    return proxy_base_url(config.server.host, config.server.port)


def not_answering_message(exc: DaemonNotAnswering) -> str:
    where = exc.base_url.removeprefix("http://")
    return (f"ytproxy is not answering on {where} ({exc.reason}) — start it with "
            "`ytproxy serve` or `systemctl --user start ytproxy`")


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds, sock_connect=min(seconds, 2.0))


def _session(seconds: float, token: str) -> aiohttp.ClientSession:
    # server.token, when set, goes with every request: reads do not need it
    # today, and a daemon that starts asking for it should find it there.
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return aiohttp.ClientSession(timeout=_timeout(seconds), trust_env=False, headers=headers)


async def _get_json(session: aiohttp.ClientSession, base_url: str, path: str,
                    method: str = "GET", body: Any = None) -> tuple[int, Any]:
    try:
        async with session.request(method, base_url + path, json=body) as resp:
            text = await resp.text()
            status = resp.status
    except aiohttp.ClientConnectorError as exc:
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else str(exc.os_error)
        raise DaemonNotAnswering(base_url, reason.lower()) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
        raise DaemonNotAnswering(base_url, reason or exc.__class__.__name__) from exc
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        raise DaemonNotAnswering(
            base_url, f"something that is not ytproxy answered {path} with HTTP {status}"
        ) from None


def _health_from(status: int, body: Any) -> DaemonHealth:
    if not isinstance(body, dict) or "status" not in body:
        return DaemonHealth(status, "unknown", [f"/health answered HTTP {status}"])
    reasons = body.get("reasons")
    return DaemonHealth(
        status, str(body["status"]),
        [str(r) for r in reasons] if isinstance(reasons, list) else [],
    )


async def fetch_health(base_url: str, timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
                       *, token: str = "") -> DaemonHealth:
    """``/health`` of the daemon at ``base_url``; raises DaemonNotAnswering."""
    async with _session(timeout, token) as session:
        return _health_from(*await _get_json(session, base_url, "/health"))


async def fetch_report(base_url: str, timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
                       *, token: str = "") -> DaemonReport:
    """``/status`` and ``/health`` together; raises DaemonNotAnswering."""
    async with _session(timeout, token) as session:
        (status_code, status), health = await asyncio.gather(
            _get_json(session, base_url, "/status"),
            _get_json(session, base_url, "/health"),
        )
    if status_code != 200 or not isinstance(status, dict) or "version" not in status:
        raise DaemonNotAnswering(
            base_url, f"something that is not ytproxy answered /status with HTTP {status_code}"
        )
    return DaemonReport(base_url, status, _health_from(*health))


async def request_json(base_url: str, method: str, path: str, body: Any = None, *,
                       timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
                       token: str = "") -> tuple[int, Any]:
    """Any JSON endpoint of the daemon (``ytproxy cache``); raises DaemonNotAnswering."""
    async with _session(timeout, token) as session:
        return await _get_json(session, base_url, path, method, body)
