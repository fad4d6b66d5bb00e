"""What upstream has cost since the daemon started: a counter per kind of event,
each one a method (a misspelt one is a type error, not a new metric), read as
one frozen ``UpstreamStats`` by /status and /metrics."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["RetryCause", "UpstreamCounters", "UpstreamStats", "retry_label"]

# Why a range was tried again (``RangeStream._recover``); an ``int`` is the
# HTTP status upstream answered (labelled ``http_<status>``).
RetryCause = Literal[
    "breaker_open", "unreachable", "not_yet_available", "resolver",
    "timeout", "reset", "connect", "truncated", "error",
] | int


def retry_label(cause: RetryCause) -> str:
    """The cause as /status and ``ytproxy_upstream_retries{cause=…}`` name it."""
    return f"http_{cause}" if isinstance(cause, int) else cause


@dataclass(frozen=True)
class UpstreamStats:
    """The counters at one moment."""

    requests: int  # range requests sent
    bytes: int  # body bytes fetched
    resumes: int  # ranges resumed at the byte after a failure
    refreshes: int  # stream URLs refreshed after a refusal
    failovers: int  # fresh URLs asked of another player client
    retries: MappingProxyType[str, int]  # by ``retry_label``, in the order first seen


class UpstreamCounters:
    """The fetcher's running counts; its streams add to them as things happen."""

    def __init__(self) -> None:
        self._requests = 0
        self._bytes = 0
        self._resumes = 0
        self._refreshes = 0
        self._failovers = 0
        self._retries: dict[str, int] = {}

    def requested(self) -> None:
        self._requests += 1

    def fetched(self, nbytes: int) -> None:
        self._bytes += nbytes

    def resumed(self) -> None:
        self._resumes += 1

    def refreshed(self) -> None:
        self._refreshes += 1

    def failed_over(self) -> None:
        self._failovers += 1

    def retried(self, cause: RetryCause) -> None:
        label = retry_label(cause)
        self._retries[label] = self._retries.get(label, 0) + 1

    def snapshot(self) -> UpstreamStats:
        return UpstreamStats(requests=self._requests, bytes=self._bytes,
                             resumes=self._resumes, refreshes=self._refreshes,
                             failovers=self._failovers,
                             retries=MappingProxyType(dict(self._retries)))
