"""Interval logs of each loop's lag: an HdrHistogram ``.hlog`` file with
one line per loop per interval, written from a thread of its own (what
``loopwatch run --hlog PATH [--hlog-interval S]`` runs).

Each line holds the lag samples (microseconds) the loop's monitor took
during that interval, tagged with the loop's label (``Tag=loop1``). Times
are relative to the ``BaseTime`` of the header (the moment logging
started); ``Interval_Max`` is in milliseconds (``max_value_unit_ratio``
1000). Intervals are cut from the monitor's total lag histogram (the
difference between two readings), so logging never resets the monitor's
interval, which ``Diagnostics``' liveness line and ``loopwatch status``
keep using. Each line is flushed as it is written.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import weakref
from typing import IO, Any

from .. import _forking
from ..hdr.log import HistogramLogWriter
from . import _figures
from .sources import Sources, default_sources

__all__ = ["LagLogger"]

logger = logging.getLogger("loopwatch.export")
_BAD_TAG_CHARS = re.compile(r"[,\s\x00-\x1f\x7f]")


class _Track:
    __slots__ = ("name", "monitor", "previous", "since")

    def __init__(self, name: str, monitor: Any, since: float) -> None:
        self.name = name
        self.monitor = monitor
        self.previous: Any = None
        self.since = since


class LagLogger:
    """Writes every monitor's lag of each interval to an HdrHistogram log.

    Args:
        output: a path (created or truncated) or a text file object.
        interval: seconds between lines (per loop), > 0 and finite.
        sources: the monitors to log (default: the process's default
            sources, read at each interval, so loops that start later are
            logged from then on).
        comment: an optional first comment line.

    :meth:`start` writes the header and starts the thread; :meth:`stop`
    writes a last line for each loop (the rest of its interval), joins the
    thread and closes the file. Loops with no sample in an interval still
    get a line (an empty histogram), so gaps in the log are gaps in
    logging, not quiet loops.
    """

    def __init__(self, output: str | os.PathLike[str] | IO[str], interval: float = 1.0, *,
                 sources: Sources | None = None, comment: str | None = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval must be a number of seconds, got {interval!r}")
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be > 0 and finite, got {interval!r}")
        self._interval = float(interval)
        self._sources = sources
        self._comment = comment
        self._writer = HistogramLogWriter(output, max_value_unit_ratio=1000.0, flush=True)
        self._tracks: dict[int, _Track] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._base = 0.0
        self._base_mono = 0.0
        self.lines = 0
        self._failed = False
        self._fork_paused: threading.Thread | None = None  # the thread joined for a fork
        self._deadline = 0.0  # the next line's time, kept across a fork
        _LOGGERS.add(self)

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def sources(self) -> Sources:
        return self._sources if self._sources is not None else default_sources()

    def start(self) -> LagLogger:
        """Write the header and start the logging thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return self
            self._base = time.time()
            self._base_mono = time.monotonic()
            self._writer.write_header(
                start_time=self._base, base_time=self._base,
                comment=self._comment or "[Logged with loopwatch: event loop lag, microseconds; "
                                         "Interval_Max in milliseconds]")
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="loopwatch-hlog", daemon=True)
            self._thread.start()
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Write the last lines, join the thread, close the file."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
        self._writer.close()

    def _run(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            deadline += self._interval
            now = time.monotonic()
            if deadline < now:  # fell behind (a long GIL hold): restart the schedule
                deadline = now + self._interval
            self._log_safely()
        self._deadline = deadline
        if self._pausing:  # a fork: the thread goes on after it, on this schedule
            return
        self._log_safely()  # the rest of each loop's last interval

    _pausing = False

    def _suspend_for_fork(self) -> None:
        """Before a fork: join the thread, keeping the schedule."""
        self._fork_paused = None
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        self._pausing = True
        self._stop.set()
        thread.join()
        _forking.joined(thread)
        self._fork_paused = thread

    def _resume_after_fork(self) -> None:
        """After the fork, in the parent: the thread goes on where it was."""
        thread, self._fork_paused = self._fork_paused, None
        self._pausing = False
        if thread is None:
            return
        with self._lock:
            if self._thread is not thread:  # stopped meanwhile
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(self._deadline,),
                                            name="loopwatch-hlog", daemon=True)
            self._thread.start()

    def _log_safely(self) -> None:
        try:
            self.log_now()
        except Exception:  # a full disk, a closed file: say so, keep the program running
            if not self._failed:
                self._failed = True
                logger.exception("loopwatch: could not write the interval log")

    def log_now(self) -> int:
        """Write one line per loop now, for the time since its last line
        (called by the thread each interval); returns the lines written."""
        written = 0
        for source in self.sources.monitors():
            try:
                stats = source.monitor.snapshot(reset_interval=False)
            except RuntimeError:  # never started yet
                continue
            track = self._tracks.get(id(source.monitor))
            if track is None or track.monitor is not source.monitor:
                # Its first line covers everything it recorded so far.
                track = _Track(_BAD_TAG_CHARS.sub("_", source.name), source.monitor,
                               max(self._base_mono, stats.total.start))
                self._tracks[id(source.monitor)] = track
            now = time.monotonic()
            total = stats.total.lag_histogram
            interval = _figures.histogram_difference(total, track.previous, type(total))
            self._writer.output_interval_histogram(
                interval, track.since - self._base_mono, now - self._base_mono, tag=track.name)
            track.previous, track.since = total, now
            written += 1
        self.lines += written
        return written

    def __enter__(self) -> LagLogger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LOGGERS: weakref.WeakSet[LagLogger] = weakref.WeakSet()


def _before_fork() -> None:
    for lag_logger in list(_LOGGERS):
        try:
            lag_logger._suspend_for_fork()
        except Exception:  # never fail a fork
            logger.exception("loopwatch: pausing the interval log for a fork failed")


def _after_fork_in_parent() -> None:
    for lag_logger in list(_LOGGERS):
        try:
            lag_logger._resume_after_fork()
        except Exception:
            logger.exception("loopwatch: resuming the interval log after a fork failed")


def _after_fork_in_child() -> None:
    # As before forks paused it: the child holds a stopped thread object.
    for lag_logger in list(_LOGGERS):
        lag_logger._fork_paused = None
        lag_logger._pausing = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
