"""ytproxy: a local streaming proxy that lets MPD play YouTube tracks."""

__all__ = ["__version__"]

__version__ = "0.1.0"
