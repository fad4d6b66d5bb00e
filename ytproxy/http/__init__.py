"""The HTTP face: the aiohttp app and its routes (``app``), the ``/proxy``
handler and relay loop (``streams``), the listener's connection limits
(``listener``), auth, what web pages may ask (``origin``), request validation,
and what the daemon reports of itself (``registry``, ``monitoring``)."""
