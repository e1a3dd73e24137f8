"""``loopwatch run``: watch every event loop a program runs, without
changing its code, and summarize them at exit.

Every loop, asyncio's or uvloop's, announces itself through
``asyncio._set_running_loop`` when it starts running and again (with None)
when it stops. :class:`LoopWatcher` wraps that function, so it sees each
loop as it starts, whoever created it (``asyncio.run``, ``uvloop.run``, a
custom policy or loop factory, loops in threads), and gives it a
:class:`loopwatch.LoopMonitor`. uvloop reads the function when it is
imported, so the watcher must be installed before uvloop is imported,
which ``loopwatch run`` does.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import logging
import os
import sys
import threading
import weakref
from typing import Any, Callable, NamedTuple, TextIO

from ..loop.monitor import logger as stall_logger
from ..loop.stats import LoopStats

__all__ = ["LoopWatcher", "WatchedLoop", "format_summary", "lag_histogram_lines"]


class WatchedLoop(NamedTuple):
    """One loop a :class:`LoopWatcher` gave a monitor: its number in this
    process (1, 2, ... in the order they first ran), its class, the thread
    it first ran in, and the monitor."""

    number: int
    loop_type: str
    thread: str
    monitor: Any

    @property
    def name(self) -> str:
        """``loop N (module.Class, thread T)``: the status server's name."""
        return f"loop {self.number} ({self.loop_type}, thread {self.thread})"

    def prefix(self, pid: int | None = None) -> str:
        """``loopwatch[pid P loop N thread T]``: what each of its lines starts with."""
        pid = os.getpid() if pid is None else pid
        return f"loopwatch[pid {pid} loop {self.number} thread {self.thread}]"


class LoopWatcher:
    """Gives every event loop that starts running in this process a
    monitor of its own, until :meth:`uninstall`.

    Args:
        monitor_factory: called with a loop, returns a (not started)
            LoopMonitor for it; e.g.
            ``lambda loop: loopwatch.LoopMonitor(loop, resolution=0.005)``.
        on_watch: called with (name, monitor) in the loop's thread once a
            new loop's monitor has started (``loopwatch run`` serves its
            status this way).
    """

    def __init__(self, monitor_factory: Callable[[Any], Any],
                 on_watch: Callable[[str, Any], Any] | None = None) -> None:
        self._factory = monitor_factory
        self._on_watch = on_watch
        self._monitors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.watched: list[tuple[str, Any]] = []  # (description, monitor), in order
        self.loops: list[WatchedLoop] = []  # the same loops, numbered
        self._labels: weakref.WeakKeyDictionary[Any, WatchedLoop] = weakref.WeakKeyDictionary()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._original: Callable[[Any], None] | None = None
        self._hook_error_logged = False

    def install(self) -> LoopWatcher:
        """Watch every loop that starts running from now on (wraps
        ``asyncio.events._set_running_loop``); returns self. Idempotent."""
        if self._original is not None:
            return self
        original = asyncio.events._set_running_loop
        self._original = original

        def _set_running_loop(loop: Any) -> None:
            original(loop)
            try:
                self._on_running_loop(loop)
            except Exception:  # never break the program being watched
                if not self._hook_error_logged:
                    self._hook_error_logged = True
                    stall_logger.exception("loopwatch: could not watch a loop")

        self._hook = _set_running_loop
        if hasattr(os, "register_at_fork"):
            this = weakref.ref(self)
            os.register_at_fork(
                after_in_child=lambda: None if (w := this()) is None else w._forget_parent_loops())
        asyncio.events._set_running_loop = _set_running_loop
        asyncio._set_running_loop = _set_running_loop
        if "uvloop" in sys.modules:
            stall_logger.warning("loopwatch: uvloop was imported before loopwatch run "
                                 "started; its loops may not be watched")
        return self

    def uninstall(self) -> None:
        """Stop watching new loops (monitors already running keep running)."""
        if self._original is None:
            return
        if asyncio.events._set_running_loop is self._hook:
            asyncio.events._set_running_loop = self._original
        if getattr(asyncio, "_set_running_loop", None) is self._hook:
            asyncio._set_running_loop = self._original
        self._original = None

    def _on_running_loop(self, loop: Any) -> None:
        if loop is None:
            previous = getattr(self._local, "loop", None)
            self._local.loop = None
            monitor = self._monitors.get(previous) if previous is not None else None
            if monitor is not None:
                monitor._loop_stopped()
            return
        self._local.loop = loop
        with self._lock:
            monitor = self._monitors.get(loop)
            if monitor is None:
                monitor = self._factory(loop)
                self._monitors[loop] = monitor
                entry = WatchedLoop(len(self.loops) + 1,
                                    f"{type(loop).__module__}.{type(loop).__qualname__}",
                                    threading.current_thread().name, monitor)
                name = entry.name
                self.loops.append(entry)
                self._labels[loop] = entry
                self.watched.append((name, monitor))
                monitor.start()
                if self._on_watch is not None:
                    self._on_watch(name, monitor)
                return
        if monitor.running:
            monitor._loop_started()

    def _forget_parent_loops(self) -> None:
        """In a forked child: the parent's loops are the parent's to report
        (their monitors are stopped here); the child's own loops are watched
        and summarized as usual."""
        self._lock = threading.Lock()
        self._monitors = weakref.WeakKeyDictionary()
        self.watched = []
        self.loops = []
        self._labels = weakref.WeakKeyDictionary()
        self._local = threading.local()

    def label(self, loop: Any) -> WatchedLoop | None:
        """The entry of a loop this watcher watches (None for any other)."""
        try:
            return self._labels.get(loop) if loop is not None else None
        except TypeError:  # not weak-referenceable
            return None

    def prefix(self, loop: Any = None) -> str:
        """``loopwatch[pid P loop N thread T]`` for a watched loop,
        ``loopwatch[pid P]`` otherwise."""
        entry = self.label(loop)
        return entry.prefix() if entry is not None else f"loopwatch[pid {os.getpid()}]"

    def stop_all(self) -> None:
        """Stop every monitor this watcher started."""
        for _, monitor in self.watched:
            monitor.stop()


def _ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


# Lag histogram bins for the terminal, in microseconds: [low, high).
_BINS = [
    (0, 1_000, "< 1 ms"),
    (1_000, 10_000, "1-10 ms"),
    (10_000, 100_000, "10-100 ms"),
    (100_000, 1_000_000, "0.1-1 s"),
    (1_000_000, 10_000_000, "1-10 s"),
    (10_000_000, None, ">= 10 s"),
]


def lag_histogram_lines(hist: Any, width: int = 40) -> list[str]:
    """A small terminal histogram of a lag histogram (microseconds): one bar
    per decade, its length the share of samples."""
    counts = [0] * len(_BINS)
    for value, count in hist.recorded():
        for i, (low, high, _) in enumerate(_BINS):
            if value >= low and (high is None or value < high):
                counts[i] += count
                break
    total = sum(counts)
    lines = []
    for (_, _, label), count in zip(_BINS, counts):
        share = count / total if total else 0.0
        bar = "#" * round(share * width)
        if count and not bar:
            bar = "."
        lines.append(f"    {label:>9} |{bar:<{width}}| {share * 100:5.1f}% {count}")
    return lines


def format_summary(name: str, stats: LoopStats, prefix: str = "loopwatch") -> str:
    """The exit summary of one loop: a percentile table of lag and delay,
    stalls, utilization, CPU, and a small terminal histogram of lag. The
    first line starts with `prefix` (``loopwatch run`` gives
    ``loopwatch[pid P loop N thread T]``) and `name`. "watched" is the
    monitor's own time: from its start to its stop (or now)."""
    total = stats.total
    lines = [
        f"{prefix}: {name}: watched {total.duration:.2f} s at resolution "
        f"{stats.resolution * 1000:g} ms, stall threshold {stats.stall_threshold * 1000:g} ms",
        f"    {'(ms)':<6}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'samples':>9}",
    ]
    for label, s in (("lag", total.lag), ("delay", total.delay)):
        lines.append(
            f"    {label:<6}{_ms(s.p50_ms):>9}{_ms(s.p90_ms):>9}{_ms(s.p99_ms):>9}"
            f"{_ms(s.p999_ms):>9}{_ms(s.max_ms):>9}{s.count:>9}"
        )
    util = "n/a" if total.utilization is None else f"{total.utilization:.2f}"
    cpu = "n/a" if total.cpu_core_ratio is None else f"{total.cpu_core_ratio:.2f}"
    stalls = f"{total.stall_count} stall" + ("" if total.stall_count == 1 else "s")
    if total.stall_count:
        stalls += f" (longest {total.longest_stall:.3f} s)"
    lines.append(f"    {stalls}; utilization {util} ({stats.utilization_method}); "
                 f"cpu_core_ratio {cpu}")
    if stats.dropped_events:
        lines.append(f"    {stats.dropped_events} stall reports dropped")
    lines.append("    lag histogram:")
    lines.extend(lag_histogram_lines(total.lag_histogram))
    return "\n".join(lines)


def live_stall_handler(stream: TextIO | None = None,
                       prefix: Callable[[Any], str] | None = None) -> logging.Handler:
    """Stall reports, one line each, on stderr (looked up at each write,
    so redirections of sys.stderr are followed). `prefix` is called with
    the loop of each report (None for other records) and returns what the
    line starts with (``loopwatch[pid P loop N thread T]``); without it,
    ``loopwatch``."""

    class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
        @property  # type: ignore[override, unused-ignore]  # a property over the attribute
        def stream(self) -> TextIO:
            return stream if stream is not None else sys.stderr

        @stream.setter
        def stream(self, value: TextIO) -> None:
            pass

    def _name(record: logging.LogRecord) -> bool:
        event = getattr(record, "loopwatch_event", None)
        try:
            record.loopwatch_prefix = (prefix(getattr(event, "loop", None))
                                       if prefix is not None else "loopwatch")
        except Exception:
            record.loopwatch_prefix = "loopwatch"
        if event is None and isinstance(record.msg, str) and record.msg.startswith("loopwatch: "):
            record.msg = record.msg[len("loopwatch: "):]  # said once, by the prefix
        return True

    handler = _Stderr()
    handler.addFilter(_name)
    handler.setFormatter(logging.Formatter("%(loopwatch_prefix)s: %(message)s"))
    return handler
