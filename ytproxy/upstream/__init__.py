"""Fetching from upstream: bounded ranges (``fetcher``), how much each read
takes (``reads``), what a stream reads from (``source``), a stream's bytes
with retries and resumes (``stream``), behind the face every body has
(``body``), and what it all cost (``counters``)."""

from ytproxy.upstream.body import Body, Change, PacedBody
from ytproxy.upstream.counters import RetryCause, UpstreamStats
from ytproxy.upstream.fetcher import (
    FIRST_RANGE,
    FileChanged,
    OpenRange,
    UpstreamFetcher,
    UpstreamRefused,
    address_family,
    host_allowed,
    upstream_connector,
)
from ytproxy.upstream.holds import Held, Holds
from ytproxy.upstream.source import Refresh, StreamSource
from ytproxy.upstream.stream import MAX_CLIENTS_PER_GAP, RangeStream, probe_size

__all__ = [
    "FIRST_RANGE",
    "MAX_CLIENTS_PER_GAP",
    "Body",
    "Change",
    "FileChanged",
    "Held",
    "Holds",
    "OpenRange",
    "PacedBody",
    "RangeStream",
    "Refresh",
    "RetryCause",
    "StreamSource",
    "UpstreamFetcher",
    "UpstreamRefused",
    "UpstreamStats",
    "address_family",
    "host_allowed",
    "probe_size",
    "upstream_connector",
]
