"""The command line: ``ytproxy serve|add|import|list|remove|m3u|status|cache|doctor``
(``main``), and the views that ask a running daemon (``client``, ``status_view``,
``cache_view``) or check a setup (``doctor``, ``reachability``)."""

# The function: ``ytproxy.cli.main`` names it here, not its module (which
# ``from ytproxy.cli.main import ...`` still reaches, as the script does).
from ytproxy.cli.main import main

__all__ = ["main"]
