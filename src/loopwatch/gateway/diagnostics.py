"""Diagnostics: the one object an asyncio gateway starts at startup.

It runs, for one event loop:

* a :class:`loopwatch.LoopMonitor` (lag, stalls reported live with the
  blocking frame, utilization, CPU ratio);
* the checks of a :class:`loopwatch.SessionRegistry`, as a task on the
  loop, with the registry told how long the loop has been stalled, so a
  loop stall is reported as such and never makes its sessions stuck;
* the liveness line, every ``liveness_interval``, from a thread of its own
  (on time while the loop is blocked);
* the status socket (``loopwatch status PID``), answered by a thread that
  needs neither the loop nor, with the native core, the GIL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable

from .. import _forking
from .._selector import LoopMonitor
from ..loop.stats import LoopStats, StallEvent
from ..export.sources import default_sources
from ..status import server as status_server
from .liveness import LivenessReport, LivenessReporter, LivenessThresholds

__all__ = ["Diagnostics"]

logger = logging.getLogger("loopwatch.gateway")


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value}")
    return value


class Diagnostics:
    """Everything loopwatch watches in a gateway, started and stopped as one.

    ``async with Diagnostics(registry) as diag:`` inside the running loop,
    or ``diag.start()`` / ``diag.stop()`` from the loop's thread.

    Args:
        registry: the gateway's :class:`loopwatch.SessionRegistry`, or None.
            Its checks run as a task on the loop every ``check_interval`` at
            most (sooner when a session is due), and its ages are measured
            in time the loop was not stalled.
        resolution, stall_threshold, on_stall, capture_stack: the loop
            monitor's options (see :class:`loopwatch.LoopMonitor`).
        liveness_interval: seconds between liveness lines.
        thresholds: when a liveness line is a warning
            (:class:`loopwatch.LivenessThresholds`, the report's defaults).
        status: serve the status socket.
        stall_lines: with the native core, write a line on stderr for a
            stall that Python cannot report while it goes on (the loop
            thread holds the GIL in native code); with status=False too
            (a native watchdog thread without a socket).
        check_interval: seconds between registry checks, at most.
        monitor: a monitor to use instead of making one (not started: the
            Diagnostics starts and stops it).
        name: the loop's name in status and logs (default: its thread's).

    Raises:
        TypeError, ValueError: bad options (as the monitor's, and
            non-positive intervals).
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        resolution: float = 0.01,
        stall_threshold: float = 0.1,
        liveness_interval: float = 30.0,
        thresholds: LivenessThresholds | None = None,
        status: bool = True,
        stall_lines: bool = True,
        check_interval: float = 1.0,
        on_stall: Callable[[StallEvent], Any] | None = None,
        capture_stack: bool = True,
        monitor: Any = None,
        name: str | None = None,
        liveness_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if registry is not None and not hasattr(registry, "acheck"):
            raise TypeError(f"registry must be a SessionRegistry or None, "
                            f"not {type(registry).__name__}")
        self.liveness_interval = _positive("liveness_interval", liveness_interval)
        self.check_interval = _positive("check_interval", check_interval)
        self._registry = registry
        self._monitor = monitor if monitor is not None else LoopMonitor(
            None, resolution=resolution, stall_threshold=stall_threshold, on_stall=on_stall,
            capture_stack=capture_stack)
        self._liveness = LivenessReporter(thresholds, clock=liveness_clock)
        self._status_wanted = bool(status)
        self._stall_lines = bool(stall_lines)
        self._name = name
        self._server: Any = None
        self._watchdog: Any = None  # status=False: the stall lines alone
        self._loop_id: int | None = None
        self._check_task: asyncio.Task[None] | None = None
        self._liveness_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._running = False
        self._fork_paused = False
        _ALL_DIAGNOSTICS.add(self)
        #: Registry checks made, and the loop thread's CPU seconds they took.
        self.checks = 0
        self.check_cpu_seconds = 0.0

    # -- parts ----------------------------------------------------------------
    @property
    def monitor(self) -> Any:
        """The :class:`loopwatch.LoopMonitor`."""
        return self._monitor

    @property
    def registry(self) -> Any:
        """The :class:`loopwatch.SessionRegistry`, or None."""
        return self._registry

    @property
    def liveness(self) -> LivenessReporter:
        """The liveness reporter (``.last`` is the last line)."""
        return self._liveness

    @property
    def status_path(self) -> str | None:
        """The status socket's path while served."""
        return self._server.path if self._server is not None else None

    @property
    def running(self) -> bool:
        """Whether the parts run (between start() and stop())."""
        return self._running

    # -- start / stop ---------------------------------------------------------
    def start(self) -> Diagnostics:
        """Start everything (idempotent), in the loop's thread.

        Raises:
            RuntimeError: no loop runs in this thread and the monitor has
                none, or the status folder is unsafe
                (:class:`loopwatch.StatusFolderError`).
        """
        if self._running:
            return self
        monitor = self._monitor
        monitor.start()
        loop = monitor.loop
        assert loop is not None  # a started monitor has its loop
        try:
            if self._registry is not None:
                if hasattr(self._registry, "set_stall_clock"):
                    self._registry.set_stall_clock(monitor.stalled_seconds)
                self._check_task = loop.create_task(self._check_forever())
            if self._status_wanted:
                self._server = status_server.acquire(stall_lines=self._stall_lines)
                self._loop_id = self._server.add_monitor(monitor, self._name)
                if self._registry is not None:
                    self._server.add_registry(self._registry)
            elif self._stall_lines:
                self._watchdog = status_server.StatusServer(listen=False, stall_lines=True).start()
                self._watchdog.add_monitor(monitor, self._name)
            # The process's exporters (Prometheus, OpenTelemetry, .hlog) see it too.
            default_sources().add_monitor(monitor)
            if callable(getattr(self._registry, "counts", None)):
                default_sources().add_registry(self._registry)
            self._stopping.clear()
            self._liveness_thread = threading.Thread(
                target=self._liveness_forever, name="loopwatch-liveness", daemon=True)
            self._liveness_thread.start()
        except BaseException:
            self._running = True
            self.stop()
            raise
        self._running = True
        return self

    def stop(self) -> None:
        """Stop everything (idempotent): the liveness thread is joined, the
        check task cancelled, the socket removed, the monitor stopped."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        thread, self._liveness_thread = self._liveness_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        task, self._check_task = self._check_task, None
        if task is not None and not task.done():
            task.cancel()
        server, self._server = self._server, None
        if server is not None:
            if self._loop_id is not None:
                server.remove_monitor(self._loop_id)
            if self._registry is not None:
                server.remove_registry(self._registry)
            status_server.release(server)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stop()
        self._loop_id = None
        default_sources().remove_monitor(self._monitor)
        if self._registry is not None:
            default_sources().remove_registry(self._registry)
        if self._registry is not None and hasattr(self._registry, "set_stall_clock"):
            self._registry.set_stall_clock(None)
        self._monitor.stop()

    async def __aenter__(self) -> Diagnostics:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        task = self._check_task
        self.stop()
        if task is not None:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- what it does ---------------------------------------------------------
    async def _check_forever(self) -> None:
        registry = self._registry
        while True:
            cpu = time.thread_time()
            try:
                await registry.acheck()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("loopwatch: session check failed")
            self.check_cpu_seconds += time.thread_time() - cpu
            self.checks += 1
            delay = self.check_interval
            nxt = registry.next_check()
            if nxt is not None:
                delay = min(delay, max(0.0, nxt - registry._clock()))
            await asyncio.sleep(delay)

    def _suspend_for_fork(self) -> None:
        """Before a fork: join the liveness thread (the monitor and the
        status server pause themselves)."""
        self._fork_paused = False
        thread = self._liveness_thread
        if thread is None or thread is threading.current_thread():
            return
        self._stopping.set()
        thread.join()
        _forking.joined(thread)
        self._fork_paused = True

    def _resume_after_fork(self) -> None:
        """After the fork, in the parent: a new liveness thread; its first
        line comes a liveness_interval after the fork."""
        if not self._fork_paused:
            return
        self._fork_paused = False
        if not self._running or self._liveness_thread is None:
            return
        self._stopping.clear()
        self._liveness_thread = threading.Thread(
            target=self._liveness_forever, name="loopwatch-liveness", daemon=True)
        self._liveness_thread.start()

    def _liveness_forever(self) -> None:
        while not self._stopping.wait(self.liveness_interval):
            try:
                self.report_liveness()
            except Exception:
                logger.exception("loopwatch: the liveness line failed")

    def report_liveness(self) -> LivenessReport:
        """Make the liveness line now, for the interval since the last one
        (the liveness thread calls this every ``liveness_interval``)."""
        stats = self._monitor.snapshot(reset_interval=True)
        counts: dict[str, int] = {}
        queued = 0
        if self._registry is not None:
            counts = self._registry.counts()
            queued = self._registry.queued()
        report = self._liveness.evaluate(stats.interval, counts, queued)
        server = self._server
        if server is not None:
            server.set_liveness({"line": report.line, "level": logging.getLevelName(report.level),
                                 "fields": report.fields, "crossed": list(report.crossed)})
        return report

    def snapshot(self) -> LoopStats:
        """The monitor's figures since the last liveness line, and in total."""
        return self._monitor.snapshot(reset_interval=False)

    def status(self) -> dict[str, Any]:
        """This process's status document, as ``loopwatch status`` shows it
        (the Python part: without the core's ``live`` section)."""
        server = self._server or status_server.current_server()
        if server is None:
            raise RuntimeError("status is not served (status=False, or not started)")
        return server.document()


_ALL_DIAGNOSTICS: weakref.WeakSet[Diagnostics] = weakref.WeakSet()


def _before_fork() -> None:
    for diag in list(_ALL_DIAGNOSTICS):
        try:
            diag._suspend_for_fork()
        except Exception:  # never fail a fork
            logger.exception("loopwatch: pausing the liveness thread for a fork failed")


def _after_fork_in_parent() -> None:
    for diag in list(_ALL_DIAGNOSTICS):
        try:
            diag._resume_after_fork()
        except Exception:
            logger.exception("loopwatch: resuming the liveness thread after a fork failed")


def _after_fork_in_child() -> None:
    for diag in list(_ALL_DIAGNOSTICS):
        diag._fork_paused = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
