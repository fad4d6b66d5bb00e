"""One exception per failure kind; the server maps them to HTTP status in one place."""

from __future__ import annotations

__all__ = [
    "AlreadyRunning",
    "AtCapacity",
    "BadJson",
    "BadPath",
    "BadQuery",
    "BadRange",
    "BadRequest",
    "BodyCutShort",
    "BodyTimeout",
    "CacheOff",
    "CrossSiteRequest",
    "ForbiddenHost",
    "InvalidPlaylistName",
    "InvalidTrackId",
    "PlaylistNotFound",
    "ResolverFailed",
    "ResolverUnavailable",
    "SourceNotAllowed",
    "StoreError",
    "TrackGone",
    "TrackNotFound",
    "UnsupportedMediaType",
    "UpstreamFailed",
    "UpstreamGone",
    "UpstreamHostNotAllowed",
    "UpstreamUnavailable",
    "UpstreamUnreachable",
    "YoutubeRefused",
    "YtproxyError",
]


class YtproxyError(Exception):
    """Base of every error ytproxy reports to a person; ``code`` is stable for programs."""

    code = "error"
    status = 500
    retry_after: float | None = None
    # The words of whatever failed below (yt-dlp's message), for a program or
    # a bug report: JSON bodies carry it as "detail"; people read the message.
    detail: str | None = None

    def __init__(self, message: str = "", *, retry_after: float | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self._given(retry_after=retry_after, detail=detail)

    def _given(self, **values: object) -> None:
        """Set the attributes given (not None); the others keep the class's value."""
        for name, value in values.items():
            if value is not None:
                setattr(self, name, value)


class InvalidTrackId(YtproxyError):
    code = "bad_id"
    status = 400


class InvalidPlaylistName(YtproxyError):
    code = "bad_playlist_name"
    status = 400


class BadPath(YtproxyError):
    """A request path with traversal, encoded slashes, control characters or bad escapes."""

    code = "bad_path"
    status = 400


class BadQuery(YtproxyError):
    """A search query or a listing's limit that cannot be asked for (empty, too long)."""

    code = "bad_query"
    status = 400


class BadJson(YtproxyError):
    """A request body that is not JSON at all."""

    code = "bad_json"
    status = 400


class BadRequest(YtproxyError):
    """A JSON body of the wrong shape; the message names the field."""

    code = "bad_request"
    status = 400


class BodyTimeout(YtproxyError):
    """A request body that did not arrive within ``limits.idle_timeout``."""

    code = "request_timeout"
    status = 408


class BodyCutShort(YtproxyError):
    """The client closed the connection before its request body was all sent."""

    code = "incomplete_body"
    status = 400


class ForbiddenHost(YtproxyError):
    """A request whose Host header names neither this daemon nor [server] allowed_hosts
    (how a DNS-rebinding web page reaches a daemon on loopback)."""

    code = "forbidden_host"
    status = 403


class CrossSiteRequest(YtproxyError):
    """A write (or a track added on first play) asked by another site's web page."""

    code = "cross_site_request"
    status = 403


class UnsupportedMediaType(YtproxyError):
    """A request body that does not say it is JSON (a web page's form or no-cors fetch)."""

    code = "unsupported_media_type"
    status = 415


class BadRange(YtproxyError):
    code = "bad_range"
    status = 416

    def __init__(self, message: str, size: int | None) -> None:
        super().__init__(message)
        self.size = size


class SourceNotAllowed(YtproxyError):
    """A page URL ytproxy will not read: not http(s), or on this machine or the local network."""

    code = "source_not_allowed"
    status = 400


class TrackNotFound(YtproxyError):
    code = "not_found"
    status = 404


class PlaylistNotFound(YtproxyError):
    code = "playlist_not_found"
    status = 404


class TrackGone(YtproxyError):
    """The source says the video is unavailable, private or removed: retrying will not help."""

    code = "gone"
    status = 410


class ResolverFailed(YtproxyError):
    """yt-dlp could not produce a stream URL, for a reason that is not plainly transient."""

    code = "resolver_failed"
    status = 502


class ResolverUnavailable(YtproxyError):
    """yt-dlp failed in a way that may pass (network, rate limit): try again later.
    ``offline``: its breaker is open or the network failed, for every track."""

    code = "resolver_unavailable"
    status = 503
    retry_after = 30.0
    offline = False


class YoutubeRefused(ResolverUnavailable):
    """YouTube refuses this address for now (``state``: "rate_limited" or
    "bot_check"): not the track's fault; requests are held through it and the
    track plays the moment YouTube lets it."""

    code = "youtube_refused"
    offline = True
    state = "rate_limited"

    def __init__(self, message: str, *, state: str, retry_after: float | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after, detail=detail)
        self.state = state


class UpstreamFailed(YtproxyError):
    code = "upstream_failed"
    status = 502
    host: str | None = None  # the upstream host it is about, when one is

    def __init__(self, message: str = "", *, retry_after: float | None = None,
                 host: str | None = None, detail: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after, detail=detail)
        self._given(host=host)


class UpstreamGone(UpstreamFailed):
    """Upstream refuses the stream even with a freshly resolved URL."""

    code = "upstream_gone"
    status = 410


class UpstreamUnavailable(UpstreamFailed):
    """An upstream host's breaker is open: it failed repeatedly, and we let it rest.
    ``refused``: its last failure was a refused connection (see UpstreamUnreachable)."""

    code = "upstream_unavailable"
    status = 503
    retry_after = 30.0
    refused = False


class UpstreamUnreachable(UpstreamFailed):
    """No answer from upstream at all (refused, reset before an answer, DNS, TLS,
    connect or header timeout): the network or the host is down, not the track.
    ``refused``: the host's machine answered that nothing listens on the URL's
    port (the stream may have moved to another host: worth a fresh URL)."""

    code = "upstream_unreachable"
    refused = False


class UpstreamHostNotAllowed(UpstreamFailed):
    code = "upstream_host_not_allowed"


class CacheOff(YtproxyError):
    """A cache request while ``[cache] max_size = 0``."""

    code = "cache_off"
    status = 409


class AtCapacity(YtproxyError):
    code = "at_capacity"
    status = 503
    retry_after = 5.0


class StoreError(YtproxyError):
    code = "store_error"
    status = 500


class AlreadyRunning(YtproxyError):
    """Another daemon holds the lock of a store or cache directory this one needs."""

    code = "already_running"
