"""loopwatch: event-loop lag and stuck-session monitoring for asyncio services.

``loopwatch.IMPLEMENTATION`` says which implementation is in use:
``"native"`` (the C core) or ``"python"`` (the pure-Python twin, chosen by
``LOOPWATCH_NO_EXTENSIONS=1`` or when the extension cannot load).
"""

from __future__ import annotations

from .loop.stats import LatencyStats, LoopStats, LoopWindow, StackFrame, StallEvent
from ._selector import IMPLEMENTATION, Histogram, LoopMonitor, TimerWheel, watch
from .sessions.registry import RegistryFull, SessionEvent, SessionRegistry, SessionScope, SessionView

__all__ = [
    "IMPLEMENTATION",
    "Histogram",
    "LatencyStats",
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
    "TimerWheel",
    "__version__",
    "watch",
]
__version__ = "0.1.0"
