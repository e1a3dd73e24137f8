"""LoopMonitor: the part shared by both implementations.

The implementation-specific pieces are three small classes that each
implementation module (``loop.native`` native, ``loop.twin`` pure Python) provides
and plugs into :class:`LoopMonitorBase`:

* the *core*: the sampler thread (a native pthread that never takes the
  GIL, or a Python thread), the heartbeat it watches, the two interval lag
  histograms it records into, and the queue of stall events it fills;
* the *ping*: the loop's reader callback on the fd the sampler pings after
  each pass: it stores the heartbeat and records how long the ping waited
  (the delay). Nothing runs in the loop between pings, and an idle loop is
  not pinged (the sampler sees it asleep in its selector). The *tick*, a
  timer callback every ``resolution``, is the fallback for a loop that
  cannot watch a file descriptor;
* the *select timer* (``exact_utilization=True`` only): a wrapper around an
  asyncio selector's ``select`` that adds up the time the loop waits for I/O.

Everything else lives here: options, starting and stopping, following the
loop (run / stop / close), the reporter thread that turns stall events into
``on_stall`` calls and log lines with the loop thread's stack, snapshots,
fork and interpreter-exit handling.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import math
import os
import selectors
import sys
import threading
import time
import weakref
from typing import Any, Callable, Optional, Tuple

from .. import _forking
from .stats import LatencyStats, LoopStats, LoopWindow, StackFrame, StallEvent

__all__ = ["LoopMonitorBase", "logger"]

#: Stall reports go to this logger, one line each (WARNING).
logger = logging.getLogger("loopwatch.loop")

# Histograms of microseconds from 1 us to one hour, 3 significant figures.
HISTOGRAM_ARGS = (1, 3_600_000_000, 3)
MIN_RESOLUTION = 100e-6
MAX_RESOLUTION = 60.0
# How late after the stall passed the threshold the reporter may still take
# the loop thread's stack (at least; 2 x resolution when larger). Python code
# that late was kept from running, usually by a loop thread holding the GIL
# in native code, and the stack it would see now may be from after the
# blocking call. Wide enough for the scheduling delays of a loaded machine.
MIN_STACK_TIMEOUT = 0.1
MAX_STACK_FRAMES = 100
REPORTER_JOIN_TIMEOUT = 5.0

START, END = 1, 2
#: What a core's wait_event returns while its sampler is suspended for a fork.
SUSPENDED = "suspended"
#: A sampler event: (kind, stall_id, heartbeat_ns, started_ns, detected_ns,
#: duration_ns, readings); readings (START only, else None) are the loop
#: thread's (cpu_ns, at_ns, state, run_delay_ns, sampler_late_ns) when the
#: stall was seen (see explain_stall).
Readings = Tuple[Optional[int], int, Optional[str], Optional[int], int]
Event = Tuple[int, int, int, int, int, int, Optional[Readings]]
#: The loop thread used at least this share of a CPU over the measured
#: window: it was running (native code holding the GIL).
NATIVE_CPU_SHARE = 0.5
#: On an overloaded machine a busy thread gets a fraction of a CPU: one that
#: used at least this share and was runnable (waiting for a CPU) for the
#: rest of the window never slept; it was running native code holding the
#: GIL, slowed by the load. (Python code would have handed the GIL over
#: within a switch interval of running, and used no more CPU until taken.)
NATIVE_CPU_SHARE_LOADED = 0.2
#: The loop thread ran at least this much CPU while the (native) reporter
#: waited for the GIL: Python code hands the GIL over at its next bytecode
#: once asked (the waiter asks after a 5 ms switch interval), so this much
#: running without handing it over is native code, however small its share
#: of an overloaded machine. Measured: a GIL-holding regex given 17 % of a
#: CPU ran 560-640 ms while the reporter waited 2.8-3.6 s.
GIL_HELD_CPU_NS = 50_000_000
_MISSING = object()

# Every monitor ever created (for fork and exit).
_ALL_MONITORS: weakref.WeakSet[LoopMonitorBase] = weakref.WeakSet()
_EXITING = False


def _seconds_option(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds}")
    return seconds


def validate_options(
    resolution: Any, stall_threshold: Any, on_stall: Any, capture_stack: Any
) -> tuple[float, float]:
    """Check the monitor's options; returns (resolution, stall_threshold)."""
    resolution = _seconds_option("resolution", resolution)
    stall_threshold = _seconds_option("stall_threshold", stall_threshold)
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0, got {resolution}")
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be at least 100 us (0.0001 s), got {resolution}")
    if resolution > MAX_RESOLUTION:
        raise ValueError(f"resolution must be at most {MAX_RESOLUTION:g} s, got {resolution}")
    if stall_threshold < resolution:
        raise ValueError(
            f"stall_threshold ({stall_threshold}) must not be below the resolution ({resolution})"
        )
    if on_stall is not None and not callable(on_stall):
        raise TypeError(f"on_stall must be callable or None, not {type(on_stall).__name__}")
    if not isinstance(capture_stack, bool):
        raise TypeError(f"capture_stack must be a bool, not {type(capture_stack).__name__}")
    return resolution, stall_threshold


def _watches_fds(loop: Any) -> bool:
    """Whether the loop can watch a file descriptor (add_reader): asyncio's
    selector loops and uvloop can; a loop class that does not override
    the abstract method cannot."""
    method = getattr(type(loop), "add_reader", None)
    return method is not None and method is not asyncio.AbstractEventLoop.add_reader


def read_thread_state(native_id: int | None) -> str | None:
    """A thread's scheduler state letter (Linux: /proc/self/task/<tid>/stat
    field 3: 'R' running or runnable, 'S'/'D' asleep, 'T' stopped), or None."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b")")
    if end < 0 or len(data) < end + 3:
        return None
    return chr(data[end + 2])


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.0f} ms"


def explain_stall(readings: Readings | None, cpu_now_ns: int | None,
                  run_delay_now_ns: int | None, now_ns: int, stall_ns: int,
                  sampler_needs_gil: bool,
                  gil_wait: tuple[int, int] | None = None) -> tuple[str | None, str | None]:
    """Why Python code could not run during a stall: (cause, what was
    measured), cause one of ``"native_code"``, ``"not_running"``,
    ``"syscall"``, or (None, None) when nothing tells.

    ``readings`` are the loop thread's times when the sampler saw the stall
    (native sampler: at detection; twin: at its last pass before, since it
    needs the GIL), ``cpu_now_ns`` / ``run_delay_now_ns`` the same read by
    the reporter at ``now_ns``, ``stall_ns`` the stall's length when seen.
    The loop thread's CPU time over that window tells whether it ran (native
    code holding the GIL) or not; if not, why: the sampler's own lateness
    (native: it needs no GIL, so a late sampler means the whole process did
    not run), the time the thread waited for a CPU while runnable (run
    delay, Linux schedstat: the twin) or its scheduler state when the stall
    was seen (native: 'R' runnable, 'S'/'D' asleep in a system call).
    ``gil_wait`` (native reporter): (the loop thread's CPU time while the
    reporter waited for the GIL, that wait's length): running
    GIL_HELD_CPU_NS of CPU without handing the GIL over is native code,
    whatever share of an overloaded machine it got."""
    if readings is None:
        return None, None
    cpu0, at0, state, run_delay0, sampler_late = readings
    wall = now_ns - at0
    if cpu0 is None or cpu_now_ns is None or wall <= 0:
        return None, None
    used = max(0, cpu_now_ns - cpu0)
    if not sampler_needs_gil and stall_ns > 0 and sampler_late * 2 >= stall_ns:
        return "not_running", (
            f"the process did not run: the sampler thread, which needs no GIL, woke "
            f"{_ms(sampler_late)} late into a {_ms(stall_ns)} stall (the process was "
            "stopped or starved of CPU)")
    if used >= NATIVE_CPU_SHARE * wall:
        return "native_code", (
            f"the loop thread used {_ms(used)} of CPU in {_ms(wall)}: it held the GIL in "
            "native code")
    if gil_wait is not None and gil_wait[0] >= GIL_HELD_CPU_NS:
        return "native_code", (
            f"the loop thread ran {_ms(gil_wait[0])} of CPU while the reporter waited "
            f"{_ms(gil_wait[1])} for the GIL (Python code hands it over within a switch "
            "interval): it held the GIL in native code")
    idle = wall - used
    if run_delay0 is not None and run_delay_now_ns is not None:
        waited = max(0, run_delay_now_ns - run_delay0)
        if used >= NATIVE_CPU_SHARE_LOADED * wall and waited >= 0.8 * idle:
            return "native_code", (
                f"the loop thread used {_ms(used)} of CPU in {_ms(wall)} and waited "
                f"{_ms(waited)} for a CPU the rest: it held the GIL in native code, on an "
                "overloaded machine")
        if waited * 2 >= idle:
            return "not_running", (
                f"the loop thread did not run for {_ms(idle)} of {_ms(wall)} (runnable, "
                f"waiting {_ms(waited)} for a CPU: the machine is overloaded)")
        return "syscall", (
            f"the loop thread did not run for {_ms(idle)} of {_ms(wall)} and was not "
            "waiting for a CPU (sleeping in a system call while holding the GIL, or the "
            "process was stopped)")
    if state == "R" and used >= NATIVE_CPU_SHARE_LOADED * wall:
        return "native_code", (
            f"the loop thread used {_ms(used)} of CPU in {_ms(wall)}, runnable the rest: it "
            "held the GIL in native code, on an overloaded machine")
    if state == "R":
        return "not_running", (
            f"the loop thread did not run for {_ms(idle)} of {_ms(wall)} (runnable, waiting "
            "for a CPU: the machine is overloaded)")
    if state in ("S", "D"):
        return "syscall", (
            f"the loop thread did not run for {_ms(idle)} of {_ms(wall)} (sleeping in a "
            "system call while holding the GIL)")
    if state in ("T", "t"):
        return "not_running", (
            f"the loop thread did not run for {_ms(idle)} of {_ms(wall)} (stopped)")
    return None, None


# Every wrapper the monitors put on a loop or selector attribute is a _Link:
# linking and unlinking them is serialized across monitors and threads.
_CHAIN_LOCK = threading.Lock()


class _Link:
    """One monitor's wrapper in the chain of wrappers on one attribute of one
    object: a loop's run_forever or close, a selector's select.

    ``owner`` is a fresh object for each start (a select timer, a loop
    hook); ``hook``, one of its bound methods, is what the attribute (or the
    link above) calls; it calls ``next`` (set with ``owner.wrap``) and does
    its own work only while ``owner.active``. ``above`` is the link whose
    ``next`` is this hook, None when the hook is the attribute itself or a
    foreign wrapper sits on top. So a link is cut out of the chain wherever
    it is, in any order; only one wrapped by something that is not a link
    cannot be: it stays, inactive, as a pure pass-through, and is cut out as
    soon as it can be reached from the attribute through links again. A link
    is never put back: a restart links a fresh owner."""

    __slots__ = ("obj", "name", "owner", "hook", "next", "next_is_class", "above")
    obj: Any
    name: str
    owner: Any
    hook: Any
    next: Any
    next_is_class: bool
    above: _Link | None


def _link_of(value: Any, obj: Any, name: str) -> _Link | None:
    """The link whose hook `value` is, on obj.name; None for anything else."""
    owner = getattr(value, "__self__", None)
    link = getattr(owner, "link", None) if owner is not None else None
    if type(link) is _Link and link.hook is value and link.obj is obj and link.name == name:
        return link
    return None


def _link(obj: Any, name: str, owner: Any, hook: Any) -> _Link:
    """Wrap obj.name with hook (a bound method of owner). Raises
    AttributeError or TypeError, changing nothing, if obj takes no
    instance attribute."""
    with _CHAIN_LOCK:
        _sweep(obj, name)
        current = getattr(obj, name)
        link = _Link()
        link.obj, link.name, link.owner, link.hook = obj, name, owner, hook
        link.next, link.next_is_class = current, _own_attribute(obj, name) is _MISSING
        link.above = None
        owner.link = link
        owner.wrap(current)
        owner.active = True
        setattr(obj, name, hook)
        below = _link_of(current, obj, name)
        if below is not None:
            below.above = link
        return link


def _unlink(link: _Link) -> None:
    """Make link's hook a pass-through and cut it out of its chain if it
    can be (see _Link)."""
    with _CHAIN_LOCK:
        link.owner.active = False
        _cut(link)
        _sweep(link.obj, link.name)


def _cut(link: _Link) -> bool:
    """Take link out of its chain (lock held); False if something that is
    not a link wraps it."""
    obj, name, above = link.obj, link.name, link.above
    if above is not None and above.next is link.hook:
        above.next, above.next_is_class = link.next, link.next_is_class
        above.owner.wrap(link.next)
    elif getattr(obj, name, None) is link.hook:
        _restore(obj, name, _MISSING if link.next_is_class else link.next)
        above = None
    else:
        return False
    below = _link_of(link.next, obj, name)
    if below is not None:
        below.above = above
    link.above = None
    return True


def _sweep(obj: Any, name: str) -> None:
    """Cut out the pass-throughs reachable from obj.name through links
    (lock held)."""
    link = _link_of(getattr(obj, name, None), obj, name)
    while link is not None:
        below = _link_of(link.next, obj, name)
        if not link.owner.active:
            _cut(link)
        link = below


class _LoopHook:
    """The owner of a monitor's run_forever or close wrapper (see _Link)."""

    __slots__ = ("_monitor", "_next", "active", "link")
    name = ""

    def __init__(self, monitor: LoopMonitorBase) -> None:
        self._monitor = weakref.ref(monitor)
        self._next: Any = None
        self.active = False
        self.link: _Link | None = None

    def wrap(self, next_call: Any) -> None:
        self._next = next_call


class _RunForeverHook(_LoopHook):
    """Pauses the monitor while the loop is not running."""

    __slots__ = ()
    name = "run_forever"

    def call(self) -> Any:
        monitor = self._monitor() if self.active else None
        if monitor is not None:
            monitor._loop_started()
        try:
            return self._next()
        finally:
            if monitor is not None:
                monitor._loop_stopped()


class _CloseHook(_LoopHook):
    """Stops the monitor when the loop closes."""

    __slots__ = ()
    name = "close"

    def call(self) -> Any:
        monitor = self._monitor() if self.active else None
        if monitor is not None:
            monitor.stop()
        return self._next()


def _own_attribute(obj: Any, name: str) -> Any:
    """What an instance attribute `name` of obj holds, or _MISSING when obj
    just has its class's method. Never reads obj.__dict__: on CPython 3.11
    that materializes the instance dict, after which every method call on
    the object (each loop.call_soon, say) takes the slow, unspecialized
    path: several percent of a busy loop's time."""
    value = getattr(obj, name)
    descriptor = getattr(type(obj), name, None)
    if descriptor is not None and hasattr(descriptor, "__get__"):
        try:
            if value == descriptor.__get__(obj, type(obj)):
                return _MISSING
        except Exception:
            pass
    return value


def _restore(obj: Any, name: str, previous: Any) -> None:
    if previous is _MISSING:
        delattr(obj, name)
    else:
        setattr(obj, name, previous)


class LoopMonitorBase:
    """Watches one event loop from a sampler thread outside it.

    Args:
        loop: the loop to watch; None means the loop running when the
            monitor starts (``start()`` inside the loop, or ``async with``).
        resolution: seconds between heartbeats and between lag samples,
            from 100 us to 60 s.
        stall_threshold: lag in seconds past which the loop counts as
            stalled and the stall is reported while it goes on; at least the
            resolution.
        on_stall: called with a :class:`loopwatch.StallEvent` when a stall
            starts (while it goes on) and when it ends. It runs in the
            monitor's reporter thread, not the loop's: keep it short and
            thread-safe.
        capture_stack: take the loop thread's Python stack for the report
            made while the stall goes on.
        exact_utilization: measure utilization as 1 - the time asyncio's
            selector waits / running time, by wrapping the selector's
            ``select``. It costs the loop about 580 CPU instructions per
            iteration (+3.4 % on a chain of empty callbacks); without it
            (the default, and always on uvloop) utilization is the loop
            thread's CPU time over its running time, which costs nothing
            per iteration and also counts a thread blocked in a system call
            as idle.

    Raises:
        ValueError: resolution <= 0, below 100 us or above 60 s, a threshold
            below the resolution, NaN or infinite values.
        TypeError: options of the wrong type.
    """

    # Filled in by each implementation module.
    _Core: Any = None
    _Tick: Any = None
    _Ping: Any = None
    _SelectTimer: Any = None
    _Histogram: Any = None
    _implementation: str = ""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        resolution: float = 0.01,
        stall_threshold: float = 0.1,
        on_stall: Callable[[StallEvent], Any] | None = None,
        capture_stack: bool = True,
        exact_utilization: bool = False,
    ) -> None:
        if not isinstance(exact_utilization, bool):
            raise TypeError(
                f"exact_utilization must be a bool, not {type(exact_utilization).__name__}")
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop or None, not {type(loop).__name__}")
        self._resolution, self._threshold = validate_options(
            resolution, stall_threshold, on_stall, capture_stack
        )
        self._loop = loop
        self._on_stall = on_stall
        self._capture_stack = capture_stack
        self._exact_utilization = exact_utilization
        self._res_ns = max(1, round(self._resolution * 1e9))
        self._thr_ns = max(self._res_ns, round(self._threshold * 1e9))
        self._stack_timeout_ns = round(max(2 * self._resolution, MIN_STACK_TIMEOUT) * 1e9)

        hist = self._Histogram
        self._lag = (hist(*HISTOGRAM_ARGS), hist(*HISTOGRAM_ARGS))
        self._delay = (hist(*HISTOGRAM_ARGS), hist(*HISTOGRAM_ARGS))
        self._lag_interval = hist(*HISTOGRAM_ARGS)
        self._lag_total = hist(*HISTOGRAM_ARGS)
        self._delay_interval = hist(*HISTOGRAM_ARGS)
        self._delay_total = hist(*HISTOGRAM_ARGS)

        self._lock = threading.RLock()  # monitor state
        self._snapshot_lock = threading.Lock()  # one interval swap at a time
        self._core: Any = None
        self._tick: Any = None
        self._timer: Any = None  # this run's select timer (a fresh one each start)
        self._waited_ns = 0  # select wait time of the earlier runs' timers
        self._links: list[_Link] = []  # this run's wrappers on the loop and selector
        # The thread that reports stall events; it clears this itself when it
        # ends, and a start() while it still runs keeps it (see _report_loop).
        self._reporter: threading.Thread | None = None
        self._pending: collections.deque[Any] = collections.deque()  # events of a stopped run
        self._running = False
        self._stopped_by_fork = False
        self._fork_paused: tuple[bool, bool] | None = None  # (sampler, reporter) across a fork
        self._method = "unavailable"

        # Stall accounting (confirmed stalls, by the reporter).
        self._stalls_total = 0
        self._stalls_interval = 0
        self._longest_total_ns = 0
        self._longest_interval_ns = 0
        self._current_stall: tuple[int, int] | None = None  # (stall_id, started_ns)
        self._current_report: StallEvent | None = None  # its "started" report
        self._stalled_ns = 0  # the lengths of the stalls that ended
        self._stalled_floor_ns = 0  # the highest stalled_seconds() answered
        self._suppressed: set[int] = set()
        # Called with each report before it is logged (the status server
        # acknowledges stalls this way); errors are logged, never raised.
        self._stall_listeners: list[Callable[[StallEvent], Any]] = []

        # Time bases: counters are cumulative, windows subtract a baseline.
        self._started_ns: int | None = None
        self._run_since_ns: int | None = None
        self._run_acc_ns = 0
        self._cpu_since_ns: int | None = None
        self._cpu_acc_ns = 0
        self._cpu_ok = False
        self._total_base: dict[str, int] = {}
        self._interval_base: dict[str, int] = {}
        # Snapshots cover watched time only: the clocks stop at stop()
        # (wall, process CPU at that moment) and the stopped spans are
        # taken out of the counters when the monitor starts again.
        self._stopped_at: tuple[int, int] | None = None
        self._unwatched_wall_ns = 0
        self._unwatched_cpu_ns = 0
        _ALL_MONITORS.add(self)

    # -- properties ---------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The watched loop (None until started with loop=None)."""
        return self._loop

    @property
    def resolution(self) -> float:
        """Seconds between heartbeats and between lag samples."""
        return self._resolution

    @property
    def stall_threshold(self) -> float:
        """Lag in seconds past which the loop counts as stalled."""
        return self._threshold

    @property
    def running(self) -> bool:
        """Whether the monitor is running (started and not stopped)."""
        return self._running

    @property
    def stopped_by_fork(self) -> bool:
        """True in a forked child whose parent was running this monitor: the
        child gets it cleanly stopped; ``start()`` runs it again there."""
        return self._stopped_by_fork

    @property
    def utilization_method(self) -> str:
        """``"selector_wait"``, ``"thread_cpu"`` or ``"unavailable"``."""
        return self._method

    @property
    def implementation(self) -> str:
        """``"native"`` or ``"python"``."""
        return self._implementation

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<LoopMonitor {state} ({self._implementation}) loop={self._loop!r} "
            f"resolution={self._resolution:g} stall_threshold={self._threshold:g}>"
        )

    # -- start / stop -------------------------------------------------------
    def start(self) -> LoopMonitorBase:
        """Start watching (idempotent). Returns the monitor.

        Raises:
            RuntimeError: no loop was given and none is running here, the
                loop is closed, or the interpreter is exiting.
        """
        with self._lock:
            if self._running:
                return self
            if _EXITING or sys.is_finalizing():
                raise RuntimeError("cannot start a LoopMonitor while the interpreter exits")
            loop = self._loop
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    raise RuntimeError(
                        "LoopMonitor(loop=None) watches the running loop: start it inside "
                        "the loop (or use `async with`), or pass loop="
                    ) from None
            if loop.is_closed():
                raise RuntimeError("cannot watch a closed event loop")
            self._loop = loop
            self._start_locked(loop)
        if loop.is_running():
            if asyncio._get_running_loop() is loop:
                self._loop_started()
            else:
                loop.call_soon_threadsafe(self._loop_started)
        return self

    def _start_locked(self, loop: Any) -> None:
        now = time.monotonic_ns()
        if self._core is None:
            self._core = self._Core(self._res_ns, self._thr_ns, self._lag[0], self._lag[1])
        core = self._core
        self._install_hooks(loop)
        if self._reporter is not None:
            # The last run's reporter is still at work (this start comes from
            # its on_stall, or stop() gave up waiting for it): it goes on
            # reporting, first the events the stopped sampler still holds,
            # which starting it again would drop.
            while True:
                event = core.wait_event(0)
                if event is None or event is False or event == SUSPENDED:
                    break
                self._pending.append(event)
        try:
            core.start(True)  # paused until the loop runs
        except BaseException:  # no thread: leave the loop as it was
            self._remove_hooks()
            raise
        self._running = True
        self._stopped_by_fork = False
        if self._stopped_at is not None:  # restarted: the stopped span is not watched
            self._unwatched_wall_ns += now - self._stopped_at[0]
            self._unwatched_cpu_ns += time.process_time_ns() - self._stopped_at[1]
            self._stopped_at = None
        if self._started_ns is None:
            self._started_ns = now
            self._total_base = self._counters(now)
            self._interval_base = dict(self._total_base)
        if self._reporter is None:
            reporter = threading.Thread(
                target=self._report_loop, args=(core,), name="loopwatch-reporter", daemon=True
            )
            self._reporter = reporter
            reporter.start()

    def _install_hooks(self, loop: Any) -> None:
        """Follow `loop` (lock held): a new tick, a select timer linked on
        its selector, run_forever and close hooks. The sampler and the
        reporter are left as they are (a monitor moved to another loop
        keeps them: see loopwatch.testing)."""
        core = self._core
        args = (core, loop, self._resolution, self._delay[0], self._delay[1],
                self._tick.delay_index if self._tick is not None else 0)
        tick = None
        if self._Ping is not None and _watches_fds(loop):
            try:
                tick = self._Ping(*args)
            except OSError:  # no fd to spare (EMFILE): a timer does without
                tick = None
        self._tick = tick if tick is not None else self._Tick(*args)
        self._method = "thread_cpu" if core.thread_cpu_supported else "unavailable"
        selector = getattr(loop, "_selector", None)
        if self._exact_utilization and isinstance(selector, selectors.BaseSelector):
            timer = self._SelectTimer()
            try:
                # A bound method: called through vectorcall, the cheapest
                # wrapper (it runs once per loop iteration).
                self._links.append(_link(selector, "select", timer, timer.select))
                self._timer = timer
                self._method = "selector_wait"
            except (AttributeError, TypeError):  # a selector without __dict__
                pass
        for hook in (_RunForeverHook(self), _CloseHook(self)):
            try:
                self._links.append(_link(loop, hook.name, hook, hook.call))
            except (AttributeError, TypeError):  # a loop class without __dict__
                pass

    def _follows_runs(self) -> bool:
        """Whether this monitor sees its loop's runs through a run_forever
        hook (not when the loop class takes no instance attribute)."""
        return any(link.name == "run_forever" for link in self._links)

    def stop(self) -> None:
        """Stop watching (idempotent): joins the sampler and reporter threads.
        Stall reports already queued are made before it returns, and none
        after. Snapshots keep working and cover the time until the stop."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            now = time.monotonic_ns()
            loop, tick, core = self._loop, self._tick, self._core
            self._close_run_period(now, read_cpu=False)
            self._stopped_at = (now, time.process_time_ns())
            if tick is not None:
                tick.deactivate()
                if asyncio._get_running_loop() is loop:
                    tick.disarm()
            self._remove_hooks(now)
            # Under the lock: a start() from another thread finds the sampler
            # stopped, its last events queued.
            core.stop()
            reporter = self._reporter
        if reporter is not None and reporter is not threading.current_thread():
            reporter.join(REPORTER_JOIN_TIMEOUT)
            if reporter.is_alive():
                logger.warning("loopwatch: the on_stall callback did not return within %.0f s "
                               "of stop(); its thread is left running", REPORTER_JOIN_TIMEOUT)

    def _remove_hooks(self, now: int | None = None) -> None:
        links, self._links = self._links, []
        for link in reversed(links):
            _unlink(link)
        if self._timer is not None:
            self._waited_ns += self._timer.waited_ns(time.monotonic_ns() if now is None else now)
            self._timer = None

    # -- the loop runs / stops (called in the loop thread) -----------------
    def _loop_started(self) -> None:
        with self._lock:
            if not self._running:
                return
            now = time.monotonic_ns()
            self._tick.arm()  # heartbeat now, ticking, thread captured
            if self._run_since_ns is None:
                self._run_since_ns = now
                cpu = self._core.loop_thread_cpu_ns()
                self._cpu_ok = cpu is not None
                self._cpu_since_ns = cpu

    def _loop_stopped(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._tick.disarm()
            self._close_run_period(time.monotonic_ns(), read_cpu=True)

    def _close_run_period(self, now: int, read_cpu: bool) -> None:
        if self._run_since_ns is not None:
            self._run_acc_ns += now - self._run_since_ns
            self._run_since_ns = None
        if self._cpu_since_ns is not None:
            cpu = self._core.loop_thread_cpu_ns() if read_cpu or self._cpu_ok else None
            if cpu is not None:
                self._cpu_acc_ns += max(0, cpu - self._cpu_since_ns)
            self._cpu_since_ns = None

    # -- stall reports ------------------------------------------------------
    def _report_loop(self, core: Any) -> None:
        while True:
            try:
                event = self._pending.popleft()
            except IndexError:
                event = core.wait_event(None)
            if event is None:
                continue
            if event == SUSPENDED:  # a fork: _resume_after_fork starts another
                return
            # At interpreter exit, reports still queued are dropped: nothing
            # is reported after the program's end.
            if _EXITING or sys.is_finalizing():
                return
            if event is False:  # stopped and drained
                with self._lock:
                    if self._running or self._pending:
                        continue  # started again meanwhile: this thread reports on
                    self._reporter = None
                return
            try:
                self._handle(event)
            except Exception:  # never let a report kill the reporter
                logger.exception("loopwatch: reporting a stall failed")

    def _handle(self, event: Event) -> None:
        kind, stall_id, heartbeat_ns, started_ns, detected_ns, duration_ns, readings = event
        loop = self._loop
        assert loop is not None  # set by start(), before any event
        tick = self._tick
        thread_id = tick.thread_id if tick is not None else None
        if kind == START:
            if not loop.is_running() or loop.is_closed():
                # Not a stall: the loop stopped running without our run hook
                # seeing it (a run that began before the monitor started).
                self._suppressed.add(stall_id)
                if tick is not None:
                    tick.disarm_from_any_thread()
                with self._lock:
                    self._close_run_period(time.monotonic_ns(), read_cpu=False)
                if loop.is_closed():
                    self.stop()
                return
            stack, stack_error = None, None
            late_ns = time.monotonic_ns() - (started_ns + self._thr_ns)
            late_but_python_ran = False
            if late_ns > self._stack_timeout_ns:
                cause, measured = self._explain(readings, duration_ns)
                # The native reporter knows how long it waited for the GIL
                # after waking. If that is not what made it late, the
                # machine's load did: the GIL was free, the loop thread ran
                # Python code (or waited without the GIL), and the stack,
                # checked against the heartbeat, is still the stall's.
                gil_wait_ns = getattr(self._core, "last_gil_wait_ns", None)
                if (cause != "not_running" and gil_wait_ns is not None
                        and gil_wait_ns <= self._stack_timeout_ns // 2):
                    late_but_python_ran = True
                    if cause == "native_code":
                        cause, measured = "python", None
            else:
                cause, measured = "python", None
            if self._capture_stack:
                stack, stack_error = self._take_stack(thread_id, heartbeat_ns, started_ns,
                                                      measured, late_but_python_ran)
            report = StallEvent("started", stall_id, started_ns / 1e9, detected_ns / 1e9,
                                duration_ns / 1e9, stack, stack_error, thread_id, loop,
                                cause=cause)
            with self._lock:
                self._stalls_total += 1
                self._stalls_interval += 1
                self._current_stall = (stall_id, started_ns)
                self._current_report = report
        else:
            if stall_id in self._suppressed:
                self._suppressed.discard(stall_id)
                return
            with self._lock:
                self._longest_total_ns = max(self._longest_total_ns, duration_ns)
                self._longest_interval_ns = max(self._longest_interval_ns, duration_ns)
                self._stalled_ns += duration_ns
                if self._current_stall and self._current_stall[0] == stall_id:
                    self._current_stall = None
                    self._current_report = None
            report = StallEvent("ended", stall_id, started_ns / 1e9, detected_ns / 1e9,
                                duration_ns / 1e9, None, None, thread_id, loop)
        if _EXITING or sys.is_finalizing():
            return
        for listener in list(self._stall_listeners):
            try:
                listener(report)
            except Exception:
                logger.exception("loopwatch: a stall listener raised")
        logger.warning("%s", report.format(self._threshold), extra={"loopwatch_event": report})
        if self._on_stall is not None:
            try:
                self._on_stall(report)
            except BaseException:  # even SystemExit: it would end the reporter
                logger.exception("loopwatch: on_stall raised")

    def _explain(self, readings: Readings | None,
                 stall_ns: int) -> tuple[str | None, str | None]:
        """The cause of a stall Python code could not see in time (see
        explain_stall), from the sampler's readings and the reporter's."""
        core = self._core
        try:
            cpu_now, run_delay_now = core.loop_thread_times()
        except Exception:
            return None, None
        gil_wait = None
        cpu_woke = getattr(core, "last_wake_cpu_ns", None)
        if cpu_now is not None and cpu_woke is not None and cpu_woke >= 0:
            gil_wait = (max(0, cpu_now - cpu_woke), int(getattr(core, "last_gil_wait_ns", 0)))
        return explain_stall(readings, cpu_now, run_delay_now, time.monotonic_ns(), stall_ns,
                             bool(getattr(core, "sampler_needs_gil", True)), gil_wait)

    def _take_stack(
        self, thread_id: int | None, heartbeat_ns: int, started_ns: int,
        measured: str | None = None, late_but_python_ran: bool = False,
    ) -> tuple[tuple[StackFrame, ...] | None, str | None]:
        # The stall crossed the threshold at started + threshold; Python code
        # (the sampler of the twin, this reporter) can run only once the GIL
        # is free. Too late, the stack would no longer be the stall's.
        late_ns = time.monotonic_ns() - (started_ns + self._thr_ns)
        if late_ns > self._stack_timeout_ns and not late_but_python_ran:
            return None, (
                f"stack not captured: Python code could not run for {late_ns / 1e6:.0f} ms "
                "after the stall passed the threshold ("
                + (measured or "the loop thread held the GIL, likely inside native code, "
                   "or the process did not run") + ")"
            )
        frame = sys._current_frames().get(thread_id) if thread_id is not None else None
        if frame is None:
            return None, "stack not captured: the loop thread has no Python frame"
        frames: list[StackFrame] = []
        while frame is not None and len(frames) < MAX_STACK_FRAMES:
            frames.append(StackFrame(frame.f_code.co_filename, frame.f_lineno or 0,
                                     frame.f_code.co_name))
            frame = frame.f_back
        del frame
        if self._core.last_heartbeat_ns() != heartbeat_ns:
            return None, "stack not captured: the stall ended before the stack could be taken"
        frames.reverse()
        return tuple(frames), None

    # -- live state ---------------------------------------------------------
    def current_stall(self) -> StallEvent | None:
        """The ``started`` report of the stall going on now (with its stack
        when one was taken), or None when the loop is not stalled."""
        with self._lock:
            return self._current_report

    def _native_stall_reader(self) -> tuple[int, int, Any] | None:
        """``(function, context, core)``: the addresses through which C code
        reads :meth:`stalled_seconds`'s figure without the GIL (the sampler
        keeps it; see lw_loop_stalled_ns), and the core to keep alive
        meanwhile. None for the twin, or before the first start."""
        core = self._core
        if core is None:
            return None
        reader = core.stall_reader()
        return None if reader is None else (reader[0], reader[1], core)

    def stalled_seconds(self) -> float:
        """Seconds the loop has spent stalled since the monitor was created:
        the lengths of the stalls that ended plus the one going on, so far.
        Non-decreasing; a stall counts once it is reported (past the
        threshold), from the moment the loop became late."""
        with self._lock:
            total = self._stalled_ns
            if self._current_stall is not None:
                total += max(0, time.monotonic_ns() - self._current_stall[1])
            # A stall's final length (to the heartbeat that ended it) can be
            # a little shorter than "so far" read just before its end was
            # handled: never answer less than before.
            self._stalled_floor_ns = total = max(total, self._stalled_floor_ns)
            return total / 1e9

    # -- snapshots ----------------------------------------------------------
    def _counters(self, now: int) -> dict[str, int]:
        """Cumulative counters at `now` (call with self._lock held); a
        stopped monitor's stand still at its stop."""
        process_cpu = time.process_time_ns()
        if self._stopped_at is not None:
            now, process_cpu = self._stopped_at
        running = self._run_acc_ns + (now - self._run_since_ns if self._run_since_ns else 0)
        cpu = self._cpu_acc_ns
        if self._cpu_since_ns is not None:
            current = self._core.loop_thread_cpu_ns()
            if current is not None:
                cpu += max(0, current - self._cpu_since_ns)
        waited = self._waited_ns + (self._timer.waited_ns(now) if self._timer is not None else 0)
        return {
            "wall": now,
            "watched": now - self._unwatched_wall_ns,
            "process_cpu": process_cpu - self._unwatched_cpu_ns,
            "running": running,
            "thread_cpu": cpu,
            "waited": waited,
        }

    def snapshot(self, reset_interval: bool = True) -> LoopStats:
        """The loop's measures for the interval since the last snapshot and
        since the monitor started (see :class:`loopwatch.LoopStats`).

        Reading never blocks the sampler: it swaps the interval histograms
        (HdrHistogram's Recorder pattern) and reads the one nobody records
        into. With ``reset_interval=False`` the interval goes on.

        Raises:
            RuntimeError: the monitor was never started.
        """
        with self._snapshot_lock:
            if self._core is None:
                raise RuntimeError("snapshot() of a LoopMonitor that was never started")
            drained = self._lag[self._core.swap_lag()]
            self._lag_interval.merge(drained)
            self._lag_total.merge(drained)
            drained.reset()
            drained = self._delay[self._tick.swap_delay()]
            self._delay_interval.merge(drained)
            self._delay_total.merge(drained)
            drained.reset()
            # The loop thread takes self._lock when the loop starts or stops:
            # hold it only to read the counters, never while copying.
            with self._lock:
                now = time.monotonic_ns()
                counters = self._counters(now)
                if self._current_stall is not None:
                    # A stall going on counts with its length so far, kept:
                    # its end may be reported shorter (measured at the first
                    # heartbeat after it), and longest_stall never decreases.
                    ongoing = max(0, now - self._current_stall[1])
                    self._longest_interval_ns = max(self._longest_interval_ns, ongoing)
                    self._longest_total_ns = max(self._longest_total_ns, ongoing)
                interval_base, total_base = self._interval_base, self._total_base
                interval_stalls = self._stalls_interval
                interval_longest = self._longest_interval_ns
                total_stalls = self._stalls_total
                total_longest = self._longest_total_ns
                running, stalled = self._running, self._current_stall is not None
                if reset_interval:
                    self._stalls_interval = 0
                    self._longest_interval_ns = 0
                    self._interval_base = counters
            interval = self._window(interval_base, counters, self._lag_interval,
                                    self._delay_interval, interval_stalls, interval_longest)
            total = self._window(total_base, counters, self._lag_total, self._delay_total,
                                 total_stalls, total_longest)
            if reset_interval:
                self._lag_interval.reset()
                self._delay_interval.reset()
            stats = LoopStats(
                interval=interval,
                total=total,
                utilization_method=self._method,
                resolution=self._resolution,
                stall_threshold=self._threshold,
                running=running,
                stalled=stalled,
                dropped_events=self._core.dropped_events(),
            )
            return stats

    def _window(self, base: dict[str, int], now: dict[str, int], lag: Any, delay: Any,
                stalls: int, longest_ns: int) -> LoopWindow:
        wall = now["watched"] - base["watched"]
        running = now["running"] - base["running"]
        utilization = None
        if running > 0:
            if self._method == "selector_wait":
                utilization = 1.0 - (now["waited"] - base["waited"]) / running
            elif self._method == "thread_cpu" and self._cpu_ok:
                utilization = (now["thread_cpu"] - base["thread_cpu"]) / running
            if utilization is not None:
                utilization = min(1.0, max(0.0, utilization))
        cpu_ratio = (now["process_cpu"] - base["process_cpu"]) / wall if wall > 0 else None
        return LoopWindow(
            start=base["wall"] / 1e9,
            duration=wall / 1e9,
            delay=LatencyStats.from_histogram(delay),
            lag=LatencyStats.from_histogram(lag),
            utilization=utilization,
            cpu_core_ratio=cpu_ratio,
            stall_count=stalls,
            longest_stall=longest_ns / 1e9,
            sample_count=lag.total_count,
            delay_histogram=delay.copy(),
            lag_histogram=lag.copy(),
        )

    # -- context managers ---------------------------------------------------
    def __enter__(self) -> LoopMonitorBase:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LoopMonitorBase:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    # -- fork ---------------------------------------------------------------
    def _suspend_for_fork(self) -> None:
        """Before a fork: join the sampler (keeping its stall state and
        queue) and the reporter, so the process forks single-threaded."""
        self._fork_paused = None
        core = self._core
        if core is None or not core.suspend():
            return
        reporter = self._reporter
        joined = False
        if reporter is not None and reporter is not threading.current_thread():
            reporter.join()  # it returns at SUSPENDED, between two reports
            _forking.joined(reporter)
            joined = True
        self._fork_paused = (True, joined)

    def _resume_after_fork(self) -> None:
        """After the fork, in the parent: the threads go on; the time paused
        is not sampled (see lw_loop_resume_thread)."""
        paused, self._fork_paused = self._fork_paused, None
        if paused is None:
            return
        core = self._core
        try:
            core.resume_thread()
        except Exception:
            logger.exception("loopwatch: the loop sampler could not restart after a fork")
        if paused[1]:
            with self._lock:
                reporter = threading.Thread(target=self._report_loop, args=(core,),
                                            name="loopwatch-reporter", daemon=True)
                self._reporter = reporter
                reporter.start()

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's threads are gone. Leave the monitor
        cleanly stopped (and restartable), its loop as it was before."""
        self._fork_paused = None
        self._lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        if self._core is not None:
            self._core.after_fork_child()
        if self._tick is not None:
            self._tick.after_fork_child()
        self._reporter = None  # not copied, even if it outlived a stop()
        self._pending.clear()
        if not self._running:
            return
        self._running = False
        self._stopped_by_fork = True
        self._close_run_period(time.monotonic_ns(), read_cpu=False)
        self._current_stall = None
        self._current_report = None
        try:
            self._remove_hooks()
        except Exception:  # a half-torn loop in the child: leave it be
            pass


def _before_fork() -> None:
    for monitor in list(_ALL_MONITORS):
        try:
            monitor._suspend_for_fork()
        except Exception:  # never fail a fork
            logger.exception("loopwatch: pausing a loop monitor for a fork failed")


def _after_fork_in_parent() -> None:
    for monitor in list(_ALL_MONITORS):
        try:
            monitor._resume_after_fork()
        except Exception:
            logger.exception("loopwatch: resuming a loop monitor after a fork failed")


def _after_fork_in_child() -> None:
    global _CHAIN_LOCK
    _CHAIN_LOCK = threading.Lock()  # another thread may have held it at the fork
    for monitor in list(_ALL_MONITORS):
        monitor._forget_after_fork()


def _stop_all_at_exit() -> None:
    """Stop every running monitor before the interpreter finalizes, so no
    report is made and no thread runs after exit."""
    global _EXITING
    _EXITING = True
    for monitor in list(_ALL_MONITORS):
        try:
            monitor.stop()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
