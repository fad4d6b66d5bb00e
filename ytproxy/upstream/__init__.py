"""Fetching from upstream: bounded ranges (``fetcher``), how much each read
takes (``reads``), a stream's bytes with retries and resumes (``stream``), and
what it all cost (``counters``)."""

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
from ytproxy.upstream.holds import Held
from ytproxy.upstream.stream import MAX_CLIENTS_PER_GAP, RangeStream, Refresh, probe_size

__all__ = [
    "FIRST_RANGE",
    "MAX_CLIENTS_PER_GAP",
    "FileChanged",
    "Held",
    "OpenRange",
    "RangeStream",
    "Refresh",
    "RetryCause",
    "UpstreamFetcher",
    "UpstreamRefused",
    "UpstreamStats",
    "address_family",
    "host_allowed",
    "probe_size",
    "upstream_connector",
]
