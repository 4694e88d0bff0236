"""Events the core reports to whoever drives it (the trio layer or a test)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything :meth:`Connection.events` returns."""


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The handshake completed (ESTABLISHED reached for the first time)."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """New in-order data is readable."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class SendSpaceAvailable(Event):
    """Acknowledged data freed room in the send buffer."""


@dataclass(frozen=True, slots=True)
class EofReceived(Event):
    """The peer's FIN arrived in order: no more data will come."""


@dataclass(frozen=True, slots=True)
class ConnectionReset(Event):
    """An acceptable RST arrived (or the handshake was refused)."""

    refused: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionTimedOut(Event):
    """Handshake, user timeout or keepalive gave up."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection reached CLOSED and holds no more state."""


@dataclass(frozen=True, slots=True)
class EndpointFailed(Event):
    """The trio layer under the connection failed; ``exc`` says why."""

    exc: BaseException
