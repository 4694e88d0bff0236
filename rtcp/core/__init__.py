"""The sans-I/O protocol engine: no sockets, no clocks, only segments and time.

:class:`~rtcp.core.connection.Connection` is the state machine; the modules
beside it hold its parts (sequence arithmetic, RTO estimation, range sets for
SACK and reassembly, ISNs, statistics and events).
"""

from .connection import Connection, ConnectionStateError, State, reset_for
from .stats import ConnectionStats

__all__ = ["Connection", "ConnectionStateError", "ConnectionStats", "State", "reset_for"]
