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

A test session makes a loop per test; a monitor costs about 2 ms to build,
start and stop (six histograms, two threads). So a monitor whose loop
closes is parked instead of stopped (its hooks removed, its sampler paused,
its threads kept) and attached to the next loop that starts: a new loop
costs a tick, a select wrapper and run hooks (``_attach``:
``LoopMonitorBase._install_hooks``, without new threads).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..loop import monitor as _monitor_module

__all__ = ["LoopTracker", "Stall"]

START, END = 1, 2
# How long settle() waits for the reporters to catch up, at most. They
# normally take microseconds; this bounds a reporter stuck behind a
# callback that never returns.
SETTLE_TIMEOUT = 2.0
# Parked monitors kept for the next loops (more are stopped): loops open at
# the same time in one test.
MAX_PARKED = 4
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


class _MonitorState:
    """The stalls of one monitor, over the loops it watched (touched under
    the tracker's lock)."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.name = ""  # the loop it watches now
        self.stalls: dict[int, Stall] = {}
        self.reports: dict[int, Any] = {}  # stall_id -> the "started" StallEvent
        self.handled = 0  # highest stall id whose end was handled (ids never repeat)
        self.parked = False
        # The run during which the loop was attached began before the
        # monitor's run_forever hook: its end is followed here. Later runs
        # go through that hook, which follows them itself.
        self.outer_run = False


def _monitor_class(base: type) -> type:
    class _TestLoopMonitor(base):  # type: ignore[misc]
        """A LoopMonitor that hands every raw sampler event to the tracker
        (after the monitor's own handling, whose listener gave the tracker
        the started report and its stack), and that parks instead of
        stopping when its loop closes."""

        _lw_tracker: LoopTracker | None = None
        _lw_state: _MonitorState | None = None

        def _handle(self, event: Any) -> None:
            try:
                super()._handle(event)
            finally:
                tracker = self._lw_tracker
                if tracker is not None and self._lw_state is not None:
                    tracker._on_event(self._lw_state, event)

        def stop(self) -> None:
            tracker = self._lw_tracker
            if tracker is None or tracker.closing or _monitor_module._EXITING:
                super().stop()
                return
            self._park()

        def _park(self) -> None:
            with self._lock:
                state = self._lw_state
                if not self._running or state is None or state.parked:
                    return
                loop, tick = self._loop, self._tick
                self._close_run_period(time.monotonic_ns(), read_cpu=False)
                if tick is not None:
                    tick.deactivate()
                    tick.disarm_from_any_thread()  # pauses the sampler
                self._remove_hooks()
                state.parked = True
            tracker = self._lw_tracker
            assert tracker is not None  # parking is the tracker's
            tracker._on_parked(self, loop)

        def _attach(self, loop: Any) -> None:
            """Watch `loop` from now on, with the sampler and reporter this
            monitor already has (LoopMonitorBase._start_locked without
            creating the core or the threads)."""
            state = self._lw_state
            assert state is not None  # attached by the tracker, which set it
            with self._lock:
                self._loop = loop
                self._install_hooks(loop)
                state.parked = False
            if loop.is_running() and asyncio._get_running_loop() is loop:
                self._loop_started()

    _TestLoopMonitor.__name__ = _TestLoopMonitor.__qualname__ = "TestLoopMonitor"
    return _TestLoopMonitor


class LoopTracker:
    """Gives every loop that starts running a monitor, and keeps its stalls.

    Args:
        monitor_class: the LoopMonitor class of the implementation in use.
        resolution, stall_threshold: the options of the monitors it makes.
    """

    def __init__(self, monitor_class: type, resolution: float, stall_threshold: float) -> None:
        self._monitor_class = _monitor_class(monitor_class)
        self.resolution = resolution
        self.stall_threshold = stall_threshold
        self._cond = threading.Condition(threading.Lock())
        self._attached: dict[Any, _MonitorState] = {}  # loop -> its monitor's state
        self._parked: list[_MonitorState] = []
        self._all: list[_MonitorState] = []  # every monitor not stopped
        self._local = threading.local()
        self._original: Any = None
        self._hook: Any = None
        self.closing = False
        self.loops_watched = 0
        self.monitors_made = 0
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
        self.closing = True
        with self._cond:
            states, self._all = self._all, []
            self._attached.clear()
            self._parked.clear()
        for state in states:
            state.monitor.stop()

    def _on_running_loop(self, loop: Any) -> None:
        if loop is None:
            previous = getattr(self._local, "loop", None)
            self._local.loop = None
            state = self._attached.get(previous) if previous is not None else None
            if state is not None and (state.outer_run or not _run_hooked(state.monitor)):
                state.outer_run = False
                state.monitor._loop_stopped()
            return
        self._local.loop = loop
        state = self._attached.get(loop)
        if state is None:
            self._watch(loop)
        elif state.monitor.running and not _run_hooked(state.monitor):
            state.monitor._loop_started()

    def _watch(self, loop: Any) -> None:
        if self.closing:
            return
        self.loops_watched += 1
        name = f"loop {self.loops_watched} ({type(loop).__module__}.{type(loop).__qualname__})"
        with self._cond:
            state = self._parked.pop() if self._parked else None
            if state is not None:
                state.name = name
                self._attached[loop] = state
        if state is not None:
            state.outer_run = True
            state.monitor._attach(loop)
            return
        monitor = self._monitor_class(loop, resolution=self.resolution,
                                      stall_threshold=self.stall_threshold)
        self.monitors_made += 1
        state = _MonitorState(monitor)
        state.name = name
        state.outer_run = True
        monitor._lw_state = state
        monitor._lw_tracker = self
        monitor._stall_listeners.append(lambda report: self._on_report(state, report))
        with self._cond:
            self._attached[loop] = state
            self._all.append(state)
        monitor.start()
        if monitor.running:
            monitor._loop_started()

    def _on_parked(self, monitor: Any, loop: Any) -> None:
        """Called by a monitor whose loop closed."""
        state = monitor._lw_state
        extra = None
        with self._cond:
            if self._attached.get(loop) is state:
                del self._attached[loop]
            if len(self._parked) < MAX_PARKED:
                self._parked.append(state)
            else:
                extra = state
        if extra is not None:  # stopped for good; settle() forgets it
            extra.monitor._lw_tracker = None
            extra.monitor.stop()
            extra.monitor._lw_tracker = self

    # -- the reporters' side ------------------------------------------------
    def _on_report(self, state: _MonitorState, report: Any) -> None:
        if report.kind == "started":
            with self._cond:
                state.reports[report.stall_id] = report

    def _on_event(self, state: _MonitorState, event: Any) -> None:
        kind, stall_id, _heartbeat_ns, started_ns, _detected_ns, duration_ns = event[:6]
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
        yet (between two phases) are dropped. Monitors stopped for good
        are forgotten here."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        found: list[Stall] = []
        with self._cond:
            for state in list(self._all):
                monitor = state.monitor
                while monitor.running:
                    _sampling, loop_running, in_stall, stall_id = monitor._core.read_live()[:4]
                    # A stall going on in a running loop is not waited for.
                    target = stall_id - 1 if (in_stall and loop_running) else stall_id
                    left = deadline - time.monotonic()
                    if state.handled >= target or left <= 0:
                        break
                    # woken by the reporter's end of a stall; the timeout only
                    # re-reads the sampler, which pauses and ends stalls itself
                    self._cond.wait(min(left, 0.05 + 2 * self.resolution))
                if state.stalls:
                    now = time.monotonic()
                    for stall_id, stall in list(state.stalls.items()):
                        if not stall.ended:
                            stall.duration = max(stall.duration, now - stall.started_at)
                        del state.stalls[stall_id]
                        if stall.started_at >= since:
                            found.append(stall)
                if not monitor.running:
                    self._all.remove(state)
        found.sort(key=lambda s: s.started_at)
        return found

    def running_monitors(self) -> int:
        with self._cond:
            return sum(1 for s in self._all if s.monitor.running)


def _run_hooked(monitor: Any) -> bool:
    """Whether the monitor follows its loop's runs through run_forever."""
    return bool(monitor._follows_runs())


def default_monitor_class() -> type:
    """The LoopMonitor of the implementation loopwatch selected."""
    from .._selector import LoopMonitor

    return LoopMonitor


def uvloop_imported() -> bool:
    return "uvloop" in sys.modules
