"""loopwatch: event-loop lag and stuck-session monitoring for asyncio services.

``loopwatch.IMPLEMENTATION`` says which implementation is in use:
``"native"`` (the C core) or ``"python"`` (the pure-Python twin, chosen by
``LOOPWATCH_NO_EXTENSIONS=1`` or when the extension cannot load).
"""

from __future__ import annotations

from .loop.stats import LatencyStats, LoopStats, LoopWindow, StackFrame, StallEvent
from ._selector import IMPLEMENTATION, Histogram, LoopMonitor, SessionRegistry, TimerWheel, watch
from .sessions.registry import RegistryFull, SessionEvent, SessionScope, SessionView
from .status.client import StatusUnavailable, query_status
from .status.paths import StatusFolderError, status_socket_path
from .gateway.liveness import LivenessReport, LivenessThresholds
from .gateway.diagnostics import Diagnostics
from .hdr.log import HistogramLogReader, HistogramLogWriter

__all__ = [
    "IMPLEMENTATION",
    "Diagnostics",
    "Histogram",
    "HistogramLogReader",
    "HistogramLogWriter",
    "LatencyStats",
    "LivenessReport",
    "LivenessThresholds",
    "LoopMonitor",
    "LoopStats",
    "LoopWindow",
    "RegistryFull",
    "SessionEvent",
    "SessionRegistry",
    "SessionScope",
    "SessionView",
    "StackFrame",
    "StallEvent",
    "StatusFolderError",
    "StatusUnavailable",
    "TimerWheel",
    "__version__",
    "query_status",
    "status_socket_path",
    "watch",
]
__version__ = "0.1.0"
