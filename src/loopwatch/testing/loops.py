"""Watches every event loop that runs during a test session and collects
its stalls.

Loops are found as ``loopwatch run`` finds them: every loop, asyncio's or
uvloop's, calls ``asyncio._set_running_loop`` when it starts and stops
running, whoever runs it (pytest-asyncio's runners, anyio's test runner,
``asyncio.run`` in a synchronous test). :class:`LoopTracker` wraps that
function, and that wrapper is all it puts on the loops: a run that starts
takes a monitor from a small pool (the one the thread used last, normally),
arms the monitor's heartbeat tick on that loop and resumes its sampler; the
run's end disarms the tick, pauses the sampler and gives the monitor back.
Loops get no instance attributes, no select wrapper and no run or close
hooks (the plugin needs stalls only, not utilization), so a new loop costs
a tick object and a run costs an arm and a disarm.

Each monitor's reporter hands every sampler event to the tracker, the ones
the monitor itself drops included: the monitor does not report a stall
whose "started" event it handles after the loop stopped running (meant for
runs it did not see begin), and that is how a stall inside a native call
holding the GIL at the very end of a test looks. :meth:`LoopTracker.settle`
is called at the end of each test phase, in the main thread, with no loop
of that thread running: it reads each sampler's stall counter and, when
every stall the samplers saw has been handled (the usual case: no stall at
all), returns at once; otherwise it waits (on a condition the reporters
signal, not a sleep) until they have been, then hands over the stalls that
started since the phase began.

A monitor costs about 2 ms to build, start and stop (six histograms, two
threads), so monitors are kept: one per loop running at the same time, up
to MAX_IDLE of them idle between runs.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import sys
import threading
import time
from typing import Any

from ..loop import monitor as _monitor_module

__all__ = ["LoopTracker", "Stall"]

START, END = 1, 2
# How long settle() waits for the reporters to catch up, at most. They
# normally take microseconds; this bounds a reporter stuck behind a
# callback that never returns.
SETTLE_TIMEOUT = 2.0
# Idle monitors kept for the next runs (more are stopped): loops running at
# the same time in one test.
MAX_IDLE = 4
_get_ident = threading.get_ident
_monotonic_ns = time.monotonic_ns
NO_REPORT = ("stack not captured: the loop had stopped running when Python code could "
             "run again (the loop thread held the GIL, likely inside native code)")


class Stall:
    """One stall of one loop, as the plugin keeps it. (A plain class, not a
    dataclass: the module is imported when the plugin activates, and a
    dataclass costs milliseconds to build.)"""

    __slots__ = ("stall_id", "started_at", "duration", "ended", "stack", "stack_error",
                 "loop_name")

    def __init__(self, stall_id: int, started_at: float, duration: float, ended: bool = False,
                 stack: tuple[Any, ...] | None = None, stack_error: str | None = None,
                 loop_name: str = "") -> None:
        self.stall_id = stall_id
        self.started_at = started_at  # time.monotonic() clock
        self.duration = duration  # whole length once ended; so far otherwise
        self.ended = ended
        self.stack = stack  # StackFrame, outermost first
        self.stack_error = stack_error
        self.loop_name = loop_name

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Stall({fields})"


class _MonitorState:
    """One monitor of the pool and its stalls, over the loops it watched
    (the stalls and reports are touched under the tracker's lock)."""

    __slots__ = ("monitor", "core", "tick", "loop", "name", "stalls", "reports", "handled")

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.core: Any = None
        self.tick: Any = None  # the monitor's tick, on `loop`
        self.loop: Any = None  # the loop it watches now, or watched last
        self.name = ""  # that loop's
        self.stalls: dict[int, Stall] = {}
        self.reports: dict[int, Any] = {}  # stall_id -> the "started" StallEvent
        self.handled = 0  # highest stall id whose end was handled (ids never repeat)


class _Tick:
    """The heartbeat of one loop for one monitor of the pool, in place of
    the monitor's own tick: every resolution while the loop runs, it stores
    the heartbeat (``core.resume(now)``, which also unpauses the sampler).

    A run's end only pauses the sampler: the pending callback stays in the
    loop and goes on at the loop's next run (the tick's own delay is not
    recorded: the plugin reads no snapshot), so a loop run three times in a
    test is scheduled on once, not armed and cancelled three times. The
    monitor's reporter reads ``thread_id`` (whose stack to take) and, like
    ``stop()``, calls the methods of the monitor's tick it needs."""

    __slots__ = ("core", "loop", "res", "active", "pending", "thread_id")

    def __init__(self, core: Any, loop: Any, resolution: float) -> None:
        self.core = core
        self.loop = loop
        self.res = resolution
        self.active = False
        self.pending = False  # a callback of this tick is scheduled on the loop
        self.thread_id: int | None = None

    def start(self) -> None:
        """In the loop's thread, as a run starts: heartbeat now, sampling."""
        self.thread_id = _get_ident()
        self.core.resume(_monotonic_ns())
        self.active = True
        if not self.pending:
            self.pending = True
            self.loop.call_later(self.res, self)

    def __call__(self) -> None:
        if self.active:
            self.core.resume(_monotonic_ns())
            self.loop.call_later(self.res, self)
        else:  # the run it was scheduled in was the last one watched
            self.pending = False

    def stop(self) -> None:
        """As the run ends (or from the reporter, when the loop stopped
        running unseen): the sampler pauses, the callback stays."""
        self.active = False
        self.core.pause()

    disarm = disarm_from_any_thread = stop
    arm = start

    def deactivate(self) -> None:
        self.active = False

    @property
    def delay_index(self) -> int:
        return 0

    def swap_delay(self) -> int:
        return 1  # the monitor's snapshot() drains an empty delay histogram

    def after_fork_child(self) -> None:
        self.active = self.pending = False


def _monitor_class(base: type) -> type:
    class _TestLoopMonitor(base):  # type: ignore[misc]
        """A LoopMonitor that hands every raw sampler event to the tracker
        (after the monitor's own handling, whose listener gave the tracker
        the started report and its stack), that puts nothing on its loop
        but the tick (the tracker follows the runs), and that stops only
        with the tracker."""

        _lw_tracker: LoopTracker | None = None
        _lw_state: _MonitorState | None = None

        def _install_hooks(self, loop: Any) -> None:
            # Called by start() (lock held): the tracker's tick only; no
            # select timer, no run_forever or close hook.
            self._tick = _Tick(self._core, loop, self._resolution)
            self._method = "unavailable"

        def _handle(self, event: Any) -> None:
            try:
                super()._handle(event)
            finally:
                tracker = self._lw_tracker
                if tracker is not None and self._lw_state is not None:
                    tracker._on_event(self._lw_state, event)

        def stop(self) -> None:
            # The monitor's reporter stops it when a stall's start comes in
            # after its loop closed: a pooled monitor goes on (its sampler
            # was paused when the run ended).
            tracker = self._lw_tracker
            if tracker is None or tracker.closing or _monitor_module._EXITING:
                super().stop()

    _TestLoopMonitor.__name__ = _TestLoopMonitor.__qualname__ = "TestLoopMonitor"
    return _TestLoopMonitor


class LoopTracker:
    """Gives every loop run a monitor, and keeps the stalls.

    Args:
        monitor_class: the LoopMonitor class of the implementation in use.
        resolution, stall_threshold: the options of the monitors it makes.
    """

    def __init__(self, monitor_class: type, resolution: float, stall_threshold: float) -> None:
        self._monitor_class = _monitor_class(monitor_class)
        self.resolution = resolution
        self.stall_threshold = stall_threshold
        self._cond = threading.Condition(threading.Lock())
        # Every monitor not stopped; replaced, never changed in place (under
        # the lock), so settle() reads it without copying.
        self._all: list[_MonitorState] = []
        self._idle: list[_MonitorState] = []  # monitors no loop runs with now
        self._local = threading.local()  # .state: the monitor of this thread's run
        self._original: Any = None
        self._hook: Any = None
        self.closing = False
        self.loops_watched = 0
        self.monitors_made = 0
        self.runs_watched = 0
        self.hook_error: BaseException | None = None

    # -- the hook -----------------------------------------------------------
    @property
    def installed(self) -> bool:
        return self._original is not None

    def install(self) -> None:
        if self._original is not None:
            return
        original = asyncio.events._set_running_loop
        started, stopped = self._run_started, self._run_stopped

        def _set_running_loop(loop: Any) -> None:
            original(loop)
            try:
                if loop is None:
                    stopped()
                else:
                    started(loop)
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
            self._idle = []
        for state in states:
            state.monitor.stop()

    def _run_started(self, loop: Any) -> None:
        """In the loop's thread, as `loop` starts running."""
        local = self._local
        if getattr(local, "state", None) is not None:
            self._run_stopped()  # a run whose end was not seen
        if self.closing or not loop.is_running():
            return  # a loop set as running without running: nothing to watch
        idle = self._idle
        state: _MonitorState | None = None
        while idle:
            try:
                state = idle.pop()  # the one this thread gave back last, normally
            except IndexError:  # taken by another thread meanwhile
                state = None
                break
            if state.monitor.running:  # (not when stopped by a fork)
                break
            state = None
        if state is None:
            state = self._new_monitor(loop)
            if state is None:
                return
        local.state = state
        if state.loop is not loop:
            self._bind(state, loop)
        state.tick.start()  # heartbeat now, ticking, sampler resumed
        self.runs_watched += 1

    def _run_stopped(self) -> None:
        """In the loop's thread, as its loop stops running."""
        local = self._local
        state = getattr(local, "state", None)
        if state is None:
            return
        local.state = None
        state.tick.stop()  # sampler paused
        if self.closing:
            return
        idle = self._idle
        if len(idle) < MAX_IDLE:
            idle.append(state)
        else:  # stopped for good; settle() forgets it
            state.monitor._lw_tracker = None
            state.monitor.stop()
            state.monitor._lw_tracker = self

    def _loop_name(self, loop: Any) -> str:
        for other in self._all:
            if other.loop is loop:  # a loop seen before, run by another monitor
                return other.name
        with self._cond:
            self.loops_watched += 1
            number = self.loops_watched
        return f"loop {number} ({type(loop).__module__}.{type(loop).__qualname__})"

    def _bind(self, state: _MonitorState, loop: Any) -> None:
        """Move an idle monitor to `loop` (its tick disarmed): a new tick
        on it; the sampler and reporter stay."""
        monitor = state.monitor
        name = self._loop_name(loop)
        tick = _Tick(state.core, loop, monitor.resolution)
        with monitor._lock:
            monitor._loop, monitor._tick = loop, tick
        state.loop, state.tick, state.name = loop, tick, name

    def _new_monitor(self, loop: Any) -> _MonitorState | None:
        name = self._loop_name(loop)
        monitor = self._monitor_class(loop, resolution=self.resolution,
                                      stall_threshold=self.stall_threshold)
        state = _MonitorState(monitor)
        monitor._lw_state = state
        monitor._lw_tracker = self
        monitor._stall_listeners.append(lambda report: self._on_report(state, report))
        monitor.start()  # arms the tick: the loop runs in this thread
        if not monitor.running:
            return None
        state.core, state.tick, state.loop, state.name = monitor._core, monitor._tick, loop, name
        with self._cond:
            self._all = [*self._all, state]
            self.monitors_made += 1
        return state

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
                if stall_id > state.handled:
                    state.handled = stall_id
                self._cond.notify_all()

    # -- the main thread's side ---------------------------------------------
    def settle(self, since: float) -> list[Stall]:
        """The stalls that started at or after `since` (time.monotonic()),
        once every stall the samplers have seen so far has been handled: an
        ended one with its whole length, one still going on (a loop running
        in another thread) with its length so far. Each stall is handed out
        once; stalls that started before `since` and were not handed out
        yet (between two phases) are dropped. Monitors stopped for good
        are forgotten here.

        Each sampler's stall counter is compared with the highest stall
        whose end its reporter handled: equal (no stall since the last
        phase, the usual case), nothing is waited for and, with no stall
        kept either, nothing else is done."""
        found: list[Stall] = []
        stopped = False
        for state in self._all:
            if state.monitor.running:
                # (sampling, loop running, in stall, stall id)
                live = state.core.read_live()
                # A stall going on in a running loop is not waited for.
                target = live[3] - 1 if (live[2] and live[1]) else live[3]
                if state.handled < target:
                    self._wait_handled(state)
            else:
                stopped = True
            if state.stalls:
                self._take(state, since, found)
        if stopped:
            with self._cond:
                self._all = [s for s in self._all if s.monitor.running]
        if len(found) > 1:
            found.sort(key=lambda s: s.started_at)
        return found

    def _wait_handled(self, state: _MonitorState) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        monitor = state.monitor
        with self._cond:
            while monitor.running:
                _sampling, loop_running, in_stall, stall_id = state.core.read_live()[:4]
                target = stall_id - 1 if (in_stall and loop_running) else stall_id
                left = deadline - time.monotonic()
                if state.handled >= target or left <= 0:
                    break
                # woken by the reporter's end of a stall; the timeout only
                # re-reads the sampler, which pauses and ends stalls itself
                self._cond.wait(min(left, 0.05 + 2 * self.resolution))

    def _take(self, state: _MonitorState, since: float, found: list[Stall]) -> None:
        with self._cond:
            stalls, state.stalls = state.stalls, {}
        now = time.monotonic()
        for stall in stalls.values():
            if not stall.ended:
                stall.duration = max(stall.duration, now - stall.started_at)
            if stall.started_at >= since:
                found.append(stall)

    def running_monitors(self) -> int:
        with self._cond:
            return sum(1 for s in self._all if s.monitor.running)


def default_monitor_class() -> type:
    """The LoopMonitor of the implementation loopwatch selected."""
    from .._selector import LoopMonitor

    return LoopMonitor


def uvloop_imported() -> bool:
    return "uvloop" in sys.modules
