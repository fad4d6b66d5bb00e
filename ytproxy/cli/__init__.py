"""The command line: ``ytproxy serve|add|import|list|remove|m3u|status|cache|doctor``
(``main``), and the views that ask a running daemon (``client``, ``status_view``,
``cache_view``) or check a setup (``doctor``, ``reachability``)."""
