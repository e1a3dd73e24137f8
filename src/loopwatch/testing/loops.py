"""Watches every event loop that runs during a test session and collects
its stalls.

Loops are found as ``loopwatch run`` finds them: every loop, asyncio's or
uvloop's, calls ``asyncio._set_running_loop`` when it starts and stops
running, whoever runs it (pytest-asyncio's runners, anyio's test runner,
``asyncio.run`` in a synchronous test). :class:`LoopTracker` wraps that
function and gives each new loop a monitor; the monitor stops when its loop
closes and is then forgotten (a test session makes thousands of loops).

Each monitor's reporter hands every sampler event to the tracker, the ones
the monitor itself drops included: the monitor does not report a stall
whose "started" event it handles after the loop stopped running (meant for
runs it did not see begin), and that is how a stall inside a native call
holding the GIL at the very end of a test looks. :meth:`LoopTracker.settle`
is called at the end of each test phase, in the main thread, with no loop
of that thread running: it waits (on a condition the reporters signal, not
a sleep) until every stall the samplers saw has been handled, then hands
over the stalls that started since the phase began.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["LoopTracker", "Stall"]

START, END = 1, 2
# How long settle() waits for the reporters to catch up, at most. They
# normally take microseconds; this bounds a reporter stuck behind a
# callback that never returns.
SETTLE_TIMEOUT = 2.0
NO_REPORT = ("stack not captured: the loop had stopped running when Python code could "
             "run again (the loop thread held the GIL, likely inside native code)")


@dataclass
class Stall:
    """One stall of one loop, as the plugin keeps it."""

    stall_id: int
    started_at: float  # time.monotonic() clock
    duration: float  # whole length once ended; so far otherwise
    ended: bool = False
    stack: tuple[Any, ...] | None = None  # StackFrame, outermost first
    stack_error: str | None = None
    loop_name: str = ""


class _LoopState:
    """The stalls of one monitored loop (touched under the tracker's lock)."""

    def __init__(self, monitor: Any, name: str) -> None:
        self.monitor = monitor
        self.name = name
        self.stalls: dict[int, Stall] = {}
        self.reports: dict[int, Any] = {}  # stall_id -> the "started" StallEvent
        self.handled = 0  # highest stall id whose end was handled


def _monitor_class(base: type) -> type:
    class _TestLoopMonitor(base):  # type: ignore[misc, valid-type]
        """A LoopMonitor that also hands every raw sampler event to the
        tracker, after the monitor's own handling (whose listeners gave the
        tracker the started report and its stack)."""

        _lw_tracker: LoopTracker | None = None
        _lw_state: _LoopState | None = None

        def _handle(self, event: Any) -> None:
            try:
                super()._handle(event)
            finally:
                tracker = self._lw_tracker
                if tracker is not None and self._lw_state is not None:
                    tracker._on_event(self._lw_state, event)

    _TestLoopMonitor.__name__ = _TestLoopMonitor.__qualname__ = f"TestLoopMonitor_{base.__module__.rsplit('.', 1)[-1]}"
    return _TestLoopMonitor


class LoopTracker:
    """Gives every loop that starts running a monitor, and keeps its stalls.

    Args:
        monitor_class: the LoopMonitor class of the implementation in use.
        resolution, stall_threshold: the monitors' options.
    """

    def __init__(self, monitor_class: type, resolution: float, stall_threshold: float) -> None:
        self._monitor_class = _monitor_class(monitor_class)
        self.resolution = resolution
        self.stall_threshold = stall_threshold
        self._cond = threading.Condition(threading.Lock())
        self._states: dict[Any, _LoopState] = {}  # loop -> state, until the monitor stops
        self._local = threading.local()
        self._original: Any = None
        self._hook: Any = None
        self._count = 0
        self.loops_watched = 0
        self.hook_error: BaseException | None = None

    # -- the hook -----------------------------------------------------------
    @property
    def installed(self) -> bool:
        return self._original is not None

    def install(self) -> None:
        if self._original is not None:
            return
        original = asyncio.events._set_running_loop

        def _set_running_loop(loop: Any) -> None:
            original(loop)
            try:
                self._on_running_loop(loop)
            except Exception as exc:  # never break the tests' loops
                if self.hook_error is None:
                    self.hook_error = exc

        self._original, self._hook = original, _set_running_loop
        asyncio.events._set_running_loop = _set_running_loop
        asyncio._set_running_loop = _set_running_loop

    def uninstall(self) -> None:
        """Restore asyncio's function and stop every monitor."""
        if self._original is not None:
            if asyncio.events._set_running_loop is self._hook:
                asyncio.events._set_running_loop = self._original
            if getattr(asyncio, "_set_running_loop", None) is self._hook:
                asyncio._set_running_loop = self._original
            self._original = self._hook = None
        with self._cond:
            states = list(self._states.values())
            self._states.clear()
        for state in states:
            state.monitor.stop()

    def _on_running_loop(self, loop: Any) -> None:
        if loop is None:
            previous = getattr(self._local, "loop", None)
            self._local.loop = None
            state = self._states.get(previous) if previous is not None else None
            if state is not None:
                state.monitor._loop_stopped()
            return
        self._local.loop = loop
        state = self._states.get(loop)
        if state is None:
            self._watch(loop)
        elif state.monitor.running:
            state.monitor._loop_started()

    def _watch(self, loop: Any) -> None:
        monitor = self._monitor_class(loop, resolution=self.resolution,
                                      stall_threshold=self.stall_threshold)
        self._count += 1
        state = _LoopState(monitor, f"loop {self._count} ({type(loop).__module__}."
                                    f"{type(loop).__qualname__})")
        monitor._lw_state = state
        monitor._lw_tracker = self
        monitor._stall_listeners.append(lambda report: self._on_report(state, report))
        with self._cond:
            self._states[loop] = state
        self.loops_watched += 1
        monitor.start()
        if monitor.running:
            monitor._loop_started()

    # -- the reporters' side ------------------------------------------------
    def _on_report(self, state: _LoopState, report: Any) -> None:
        if report.kind == "started":
            with self._cond:
                state.reports[report.stall_id] = report

    def _on_event(self, state: _LoopState, event: Any) -> None:
        kind, stall_id, _heartbeat_ns, started_ns, _detected_ns, duration_ns = event
        with self._cond:
            stall = state.stalls.get(stall_id)
            if stall is None:
                stall = Stall(stall_id, started_ns / 1e9, duration_ns / 1e9, loop_name=state.name)
                report = state.reports.pop(stall_id, None)
                if report is not None:
                    stall.stack, stall.stack_error = report.stack, report.stack_error
                else:
                    stall.stack_error = NO_REPORT
                state.stalls[stall_id] = stall
            if kind == END:
                stall.duration = duration_ns / 1e9
                stall.ended = True
                state.handled = max(state.handled, stall_id)
                self._cond.notify_all()

    # -- the main thread's side ---------------------------------------------
    def settle(self, since: float) -> list[Stall]:
        """The stalls that started at or after `since` (time.monotonic()),
        once every stall the samplers have seen so far has been handled: an
        ended one with its whole length, one still going on (a loop running
        in another thread) with its length so far. Each stall is handed out
        once; stalls that started before `since` and were not handed out
        yet (between two phases) are dropped. Monitors whose loop closed are
        forgotten here."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        found: list[Stall] = []
        with self._cond:
            for loop, state in list(self._states.items()):
                monitor = state.monitor
                while monitor.running:
                    _sampling, loop_running, in_stall, stall_id = monitor._core.read_live()[:4]
                    # A stall going on in a running loop is not waited for.
                    target = stall_id - 1 if (in_stall and loop_running) else stall_id
                    left = deadline - time.monotonic()
                    if state.handled >= target or left <= 0:
                        break
                    self._cond.wait(min(left, 0.05 + 2 * self.resolution))
                now = time.monotonic()
                for stall_id, stall in list(state.stalls.items()):
                    if not stall.ended:
                        stall.duration = max(stall.duration, now - stall.started_at)
                    del state.stalls[stall_id]
                    if stall.started_at >= since:
                        found.append(stall)
                if not monitor.running:
                    del self._states[loop]
        found.sort(key=lambda s: s.started_at)
        return found

    def running_monitors(self) -> int:
        with self._cond:
            return sum(1 for s in self._states.values() if s.monitor.running)


def default_monitor_class() -> type:
    """The LoopMonitor of the implementation loopwatch selected."""
    from .._selector import LoopMonitor

    return LoopMonitor


def uvloop_imported() -> bool:
    return "uvloop" in sys.modules
