"""Every use of a library's private or undocumented parts, and nothing else.

``aiohttp`` (and asyncio's transports, as aiohttp uses them), ``mpd``
(python-mpd2) and ``ytdlp`` (yt-dlp's player-client tables and PO-token
registry): each piece says why no public API does its job.  Everything else
in ytproxy uses public APIs only, and reaches these parts through the
functions here, never the private names themselves.
``tests/test_aiohttp_private.py``, ``tests/test_mpd_private.py`` and
``tests/test_ytdlp_private.py`` check each piece against the installed library
and fail naming the piece that changed.
"""

from ytproxy.lazy import lazy_names

__all__ = [
    "IDLE_RESULT",
    "DefaultClients",
    "ProtocolRunner",
    "QuietMPDClient",
    "RequestHandler",
    "answer_as_http1",
    "close_when_done",
    "default_clients",
    "head_error_kind",
    "innertube_clients",
    "loaded_pot_providers",
    "needs_gvs_token",
    "payload_writer",
    "protocol_factory",
    "read_size_settable",
    "set_read_limit",
    "set_tls_read_buffer",
    "with_version",
    "wrap_request_handler",
]

# Imported when first asked for (ytproxy.lazy): the ytdlp part loads yt-dlp,
# which the daemon never needs, and the mpd part python-mpd2.
_MODULE_OF = {
    **dict.fromkeys(["ProtocolRunner", "RequestHandler", "answer_as_http1", "close_when_done",
                     "head_error_kind", "payload_writer", "protocol_factory",
                     "read_size_settable", "set_read_limit", "set_tls_read_buffer",
                     "with_version", "wrap_request_handler"], "aiohttp"),
    **dict.fromkeys(["IDLE_RESULT", "QuietMPDClient"], "mpd"),
    **dict.fromkeys(["DefaultClients", "default_clients", "innertube_clients",
                     "loaded_pot_providers", "needs_gvs_token"], "ytdlp"),
}

__getattr__ = lazy_names(__name__, _MODULE_OF, globals())
