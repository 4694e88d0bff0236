"""rtcp: a reliable, TCP-like transport over UDP for Trio.

The public API mirrors trio's TCP helpers: :func:`open_rtcp_stream`,
:func:`open_rtcp_listeners` and :func:`serve_rtcp` give
:class:`RtcpStream` (a ``trio.abc.HalfCloseableStream``) and
:class:`RtcpListener` (a ``trio.abc.Listener``).  The wire codec lives in
:mod:`rtcp.segment`, the sans-I/O protocol engine in :mod:`rtcp.core`.
"""

from . import segment
from .config import Config
from .core.stats import ConnectionStats
from .endpoint import Endpoint, EndpointStats
from .segment import SegmentError
from .stream import (
    RtcpListener,
    RtcpStream,
    open_rtcp_listeners,
    open_rtcp_stream,
    serve_rtcp,
)

__version__ = "0.1.0"

#: Submodules loaded on first use (``rtcp.trace.LadderTracer``, ``rtcp.relay.open_relay``)
#: rather than by every ``import rtcp``.
_LAZY = frozenset({"trace", "relay", "transport", "core", "cli"})


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Config",
    "ConnectionStats",
    "Endpoint",
    "EndpointStats",
    "RtcpListener",
    "RtcpStream",
    "SegmentError",
    "open_rtcp_listeners",
    "open_rtcp_stream",
    "segment",
    "serve_rtcp",
]
