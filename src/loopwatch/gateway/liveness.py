"""The liveness line: one log line per interval on ``loopwatch.liveness``,
with the field names of the gateway report that started this project::

    liveness warning: eventLoopDelayP99Ms=12876.5 eventLoopDelayMaxMs=13020.2
      eventLoopUtilization=0.998 cpuCoreRatio=1.289 active=1 waiting=0 queued=5 intervalS=30

It is logged at WARNING when a threshold is crossed (at most once per
cooldown; a crossing inside the cooldown is logged at DEBUG), and as
``liveness: ...`` at DEBUG otherwise. Every field is also on the log
record (``extra``), so JSON formatters get them as fields.

:class:`LivenessReporter` is the logic, on an injectable clock (tested on a
fake one); :class:`loopwatch.Diagnostics` runs it from a thread of its own,
so the line comes on time while the event loop is blocked.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["LivenessReport", "LivenessReporter", "LivenessThresholds", "logger"]

#: The liveness line's logger.
logger = logging.getLogger("loopwatch.liveness")


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class LivenessThresholds:
    """When the liveness line is a warning (the report's gateway defaults).

    Attributes:
        delay_p99_ms: the interval's lag p99, milliseconds, at or above which...
        delay_max_ms: ... or its maximum at or above which ...
        utilization: ... or loop utilization at or above which ...
        cpu_core_ratio: ... or process CPU / wall time at or above which
            the line is a warning.
        cooldown: seconds between two warnings at most once.
    """

    delay_p99_ms: float = 1000.0
    delay_max_ms: float = 1000.0
    utilization: float = 0.95
    cpu_core_ratio: float = 0.9
    cooldown: float = 120.0

    def __post_init__(self) -> None:
        for name in ("delay_p99_ms", "delay_max_ms", "utilization", "cpu_core_ratio", "cooldown"):
            _non_negative(name, getattr(self, name))


@dataclass(frozen=True)
class LivenessReport:
    """One interval's liveness line.

    Attributes:
        fields: the line's fields by their report names
            (``eventLoopDelayP99Ms``, ..., ``intervalS``).
        crossed: the thresholds crossed (``"eventLoopDelayP99Ms"``, ...).
        level: ``logging.WARNING`` or ``logging.DEBUG``.
        line: the text logged.
        at: the reporter's clock when it was made.
    """

    fields: dict[str, float | int | None]
    crossed: tuple[str, ...]
    level: int
    line: str
    at: float

    @property
    def warning(self) -> bool:
        """Whether it was logged as a warning."""
        return self.level == logging.WARNING


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"


class LivenessReporter:
    """Turns one interval's loop window and session counts into the line.

    Args:
        thresholds: when to warn.
        clock: monotonic seconds (for the cooldown); injectable for tests.
        log: the logger (``loopwatch.liveness``).
    """

    def __init__(self, thresholds: LivenessThresholds | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 log: logging.Logger | None = None) -> None:
        if thresholds is None:
            thresholds = LivenessThresholds()
        if not isinstance(thresholds, LivenessThresholds):
            raise TypeError("thresholds must be a LivenessThresholds")
        self.thresholds = thresholds
        self._clock = clock
        self._log = log or logger
        self._last_warning: float | None = None
        self.last: LivenessReport | None = None
        self.warnings = 0

    def evaluate(self, window: Any, counts: dict[str, int] | None = None,
                 queued: int = 0) -> LivenessReport:
        """The line for one interval (a :class:`loopwatch.LoopWindow`) and the
        sessions' counts by state; logs it and returns it."""
        counts = counts or {}
        lag = window.lag
        fields: dict[str, float | int | None] = {
            "eventLoopDelayP99Ms": round(lag.p99_ms, 1),
            "eventLoopDelayMaxMs": round(lag.max_ms, 1),
            "eventLoopUtilization": None if window.utilization is None
            else round(window.utilization, 3),
            "cpuCoreRatio": None if window.cpu_core_ratio is None
            else round(window.cpu_core_ratio, 3),
            "active": int(counts.get("processing", 0)),
            "waiting": int(counts.get("waiting", 0)),
            "queued": int(queued),
            "intervalS": round(window.duration, 1),
        }
        t = self.thresholds
        crossed = []
        if lag.p99_ms >= t.delay_p99_ms:
            crossed.append("eventLoopDelayP99Ms")
        if lag.max_ms >= t.delay_max_ms:
            crossed.append("eventLoopDelayMaxMs")
        if window.utilization is not None and window.utilization >= t.utilization:
            crossed.append("eventLoopUtilization")
        if window.cpu_core_ratio is not None and window.cpu_core_ratio >= t.cpu_core_ratio:
            crossed.append("cpuCoreRatio")
        now = self._clock()
        cooled = self._last_warning is None or now - self._last_warning >= t.cooldown
        text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        if crossed and cooled:
            level, line = logging.WARNING, f"liveness warning: {text}"
            self._last_warning = now
            self.warnings += 1
        else:
            level, line = logging.DEBUG, f"liveness: {text}"
        report = LivenessReport(fields, tuple(crossed), level, line, now)
        self.last = report
        # The report's own field names on the record, for JSON formatters.
        extra: dict[str, Any] = dict(fields)
        extra["loopwatch_crossed"] = list(crossed)
        self._log.log(level, "%s", line, extra=extra)
        return report
