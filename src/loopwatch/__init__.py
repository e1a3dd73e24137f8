"""loopwatch: event-loop lag and stuck-session monitoring for asyncio services.

``loopwatch.IMPLEMENTATION`` says which implementation is in use:
``"native"`` (the C core) or ``"python"`` (the pure-Python twin, chosen by
``LOOPWATCH_NO_EXTENSIONS=1`` or when the extension cannot load).
"""

from __future__ import annotations

from ._selector import IMPLEMENTATION, Histogram
from ._selector import TimerWheel
from ._sessions import RegistryFull, SessionEvent, SessionRegistry, SessionScope, SessionView
from ._selector import LoopMonitor, watch
from ._loop_stats import LatencyStats, LoopStats, LoopWindow, StackFrame, StallEvent

__all__ = ["IMPLEMENTATION", "Histogram", "__version__"]
__all__ += ["TimerWheel"]
__all__ += ["RegistryFull", "SessionEvent", "SessionRegistry", "SessionScope", "SessionView"]
__all__ += ["LoopMonitor", "watch", "LoopStats", "LoopWindow", "LatencyStats", "StallEvent", "StackFrame"]
__version__ = "0.1.0"
