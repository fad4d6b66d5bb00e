"""The HTTP face: the aiohttp app and its routes (``app``), the ``/proxy``
handler and relay loop (``streams``), the listener's connection limits
(``listener``), auth, what web pages may ask (``origin``), request validation,
and what the daemon reports of itself (``registry``, ``monitoring``)."""

from ytproxy.http.app import NOTIFIER, create_app
from ytproxy.http.auth import bind_refusal, bind_warning
from ytproxy.http.listener import serve

__all__ = ["NOTIFIER", "bind_refusal", "bind_warning", "create_app", "serve"]
