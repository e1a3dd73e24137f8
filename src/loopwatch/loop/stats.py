"""What the loop monitor reports: stall events and snapshots (``LoopStats``).

Shared by both implementations of :class:`loopwatch.LoopMonitor`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["LatencyStats", "LoopStats", "LoopWindow", "StackFrame", "StallEvent"]

#: The percentiles every latency summary carries.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class StackFrame(NamedTuple):
    """One frame of the loop thread's Python stack."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.function}() at {_short_path(self.filename)}:{self.lineno}"


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return rel if not rel.startswith(".." + os.sep) else path


@dataclass(frozen=True)
class StallEvent:
    """A stall of the event loop, reported while it goes on and when it ends.

    Attributes:
        kind: ``"started"`` (the loop is blocked right now) or ``"ended"``.
        stall_id: 1, 2, ... per monitor; both reports of one stall share it.
        started_at: when the loop became late, on the ``time.monotonic()``
            clock (the last heartbeat before the stall plus the resolution).
        detected_at: when the sampler saw the stall (``started``) or its end
            (``ended``), same clock.
        duration: seconds the loop had been blocked when detected
            (``started``), or the stall's whole length (``ended``).
        stack: the loop thread's Python stack taken during the stall,
            outermost frame first (``started`` reports with capture_stack
            only); None when it was not taken.
        stack_error: why ``stack`` is None when it was asked for: it says
            when Python code could not run in time, and why, as measured
            (see ``cause``), or when the stall ended before the stack could
            be taken.
        thread_id: ``threading.get_ident()`` of the loop's thread.
        loop: the monitored event loop.
        cause: why the loop did not run (``started`` reports; None in
            ``ended`` ones and when nothing tells), from the loop thread's
            CPU time and scheduler state:

            * ``"python"``: Python code could run during the stall (the
              reporter got the GIL in time): the stack shows where the loop
              is, in Python code or a call that released the GIL;
            * ``"native_code"``: Python code could not run and the loop
              thread used CPU all along (at least half the measured time):
              it held the GIL in native code (a C extension, a regex);
            * ``"not_running"``: the loop thread did not run although it
              could: runnable but waiting for a CPU (an overloaded machine),
              or the whole process was stopped or starved (the native
              sampler, which needs no GIL, could not run either);
            * ``"syscall"``: the loop thread did not run and was asleep in
              a system call while holding the GIL (a C call into sleep or
              read that does not release it).
    """

    kind: str
    stall_id: int
    started_at: float
    detected_at: float
    duration: float
    stack: tuple[StackFrame, ...] | None = None
    stack_error: str | None = None
    thread_id: int | None = None
    loop: Any = None
    cause: str | None = None

    @property
    def ongoing(self) -> bool:
        """True for the report made while the stall goes on."""
        return self.kind == "started"

    @property
    def blocking_frame(self) -> StackFrame | None:
        """The innermost frame of :attr:`stack`: where the loop is blocked."""
        return self.stack[-1] if self.stack else None

    def format(self, threshold: float | None = None, max_frames: int = 3) -> str:
        """One line for a log: what happened, how long, and where."""
        if self.kind == "ended":
            return f"event loop stall #{self.stall_id} ended after {self.duration:.3f} s"
        line = f"event loop stall #{self.stall_id} in progress: blocked for {self.duration:.3f} s"
        if threshold is not None:
            line += f" (threshold {threshold:.3f} s)"
        if self.stack:
            frames = [str(f) for f in reversed(self.stack[-max_frames:])]
            line += ", in " + " <- ".join(frames)
        elif self.stack_error:
            line += f"; {self.stack_error}"
        return line


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one latency histogram, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    count: int

    @classmethod
    def from_histogram(cls, hist: Any) -> LatencyStats:
        """Summarize a histogram of microseconds."""
        values = hist.percentiles(PERCENTILES)
        return cls(
            p50_ms=values[50.0] / 1000.0,
            p90_ms=values[90.0] / 1000.0,
            p99_ms=values[99.0] / 1000.0,
            p999_ms=values[99.9] / 1000.0,
            max_ms=hist.max / 1000.0,
            mean_ms=hist.mean / 1000.0,
            count=hist.total_count,
        )


@dataclass(frozen=True)
class LoopWindow:
    """The loop's measures over one window of time.

    Attributes:
        start: window start, ``time.monotonic()`` clock.
        duration: window length in seconds.
        delay: firing delay of the monitor's own loop callback (the measure
            of Node.js ``monitorEventLoopDelay``).
        lag: the loop's staleness sampled from outside at uniform wall times:
            the lag a request arriving at a random moment meets.
        utilization: share of the loop's running time it was not waiting in
            its selector (or its thread's CPU share: see
            ``LoopStats.utilization_method``); None when not measurable.
        cpu_core_ratio: process CPU time / wall time (1.0 = one core busy).
        stall_count: stalls that started in the window.
        longest_stall: seconds, the longest stall seen in the window
            (one still going on counts with its length so far).
        sample_count: lag samples taken (``lag.count``).
        delay_histogram, lag_histogram: the raw histograms (microseconds),
            :class:`loopwatch.Histogram` copies, encodable.
    """

    start: float
    duration: float
    delay: LatencyStats
    lag: LatencyStats
    utilization: float | None
    cpu_core_ratio: float | None
    stall_count: int
    longest_stall: float
    sample_count: int
    delay_histogram: Any
    lag_histogram: Any


@dataclass(frozen=True)
class LoopStats:
    """A monitor's snapshot: the interval since the previous snapshot and
    the whole time since the monitor started.

    Attributes:
        interval: since the last ``snapshot(reset_interval=True)`` (or start).
        total: since the monitor was first started.
        utilization_method: how utilization is measured: ``"selector_wait"``
            (exact: time spent in the selector, asyncio selector loops),
            ``"thread_cpu"`` (the loop thread's CPU time share: loops whose
            selector cannot be observed, such as uvloop) or
            ``"unavailable"``.
        resolution, stall_threshold: the monitor's options, seconds.
        running: whether the monitor was running at the snapshot.
        stalled: whether a stall was going on at the snapshot.
        dropped_events: stall reports lost because nobody took them in time.
    """

    interval: LoopWindow
    total: LoopWindow
    utilization_method: str
    resolution: float
    stall_threshold: float
    running: bool
    stalled: bool
    dropped_events: int = 0
