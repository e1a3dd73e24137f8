"""The status document: what a process tells about itself on its status
socket (the schema is in the README, "Status").

Built by a Python thread of the process (never the loop), from the loop
monitors' snapshots, the session registries and the last liveness line;
the status core adds the ``served_by``, ``published_age_s`` and ``live``
fields when it serves it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

__all__ = ["MAX_STUCK_LISTED", "SCHEMA_VERSION", "loop_entry", "sessions_entry", "printable"]

SCHEMA_VERSION = 1
#: Stuck sessions listed in a document, at most (the count says how many).
MAX_STUCK_LISTED = 50
_MAX_TEXT = 200


def printable(value: Any, limit: int = _MAX_TEXT) -> str:
    """A caller's id or key as one safe line: ``str`` for strings without
    control characters, else ``repr`` (which escapes them); bounded."""
    text = value if isinstance(value, str) else repr(value)
    if not text.isprintable():
        text = repr(text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _latency(stats: Any) -> dict[str, float | int]:
    return {
        "p50": stats.p50_ms, "p90": stats.p90_ms, "p99": stats.p99_ms,
        "p999": stats.p999_ms, "max": stats.max_ms, "mean": round(stats.mean_ms, 6),
        "count": stats.count,
    }


def _window(window: Any) -> dict[str, Any]:
    return {
        "duration_s": round(window.duration, 6),
        "lag_ms": _latency(window.lag),
        "delay_ms": _latency(window.delay),
        "utilization": window.utilization,
        "cpu_core_ratio": window.cpu_core_ratio,
        "stall_count": window.stall_count,
        "longest_stall_s": round(window.longest_stall, 6),
    }


def _thread_name(thread_id: int | None) -> str | None:
    if thread_id is None:
        return None
    for thread in threading.enumerate():
        if thread.ident == thread_id:
            return thread.name
    return None


def loop_entry(loop_id: int, name: str, monitor: Any) -> dict[str, Any]:
    """One watched loop: its interval and total windows, and the stall
    going on now with its stack (as the reporter took it)."""
    stats = monitor.snapshot(reset_interval=False)
    loop = monitor.loop
    tick = getattr(monitor, "_tick", None)
    thread_id = getattr(tick, "thread_id", None)
    entry: dict[str, Any] = {
        "id": loop_id,
        "name": name,
        "thread": _thread_name(thread_id),
        "loop_class": f"{type(loop).__module__}.{type(loop).__qualname__}" if loop else None,
        "implementation": monitor.implementation,
        "monitor_running": stats.running,
        "resolution_s": stats.resolution,
        "stall_threshold_s": stats.stall_threshold,
        "utilization_method": stats.utilization_method,
        "interval": _window(stats.interval),
        "total": _window(stats.total),
        "stalled": stats.stalled,
        "current_stall": None,
    }
    report = monitor.current_stall()
    if report is not None:
        entry["current_stall"] = {
            "stall_id": report.stall_id,
            "so_far_s": round(max(0.0, time.monotonic() - report.started_at), 6),
            "stack": None if report.stack is None else [
                {"file": f.filename, "line": f.lineno, "function": f.function}
                for f in report.stack
            ],
            "stack_error": report.stack_error,
        }
    return entry


def _stuck_entry(view: Any, now: float) -> dict[str, Any]:
    return {
        "id": printable(view.session_id),
        "key": None if view.key is None else printable(view.key),
        "state": view.state,
        "age_s": round(now - view.state_since, 3),
        "since_progress_s": round(now - view.last_progress, 3),
        "queue_depth": view.queue_depth,
        "reports": view.stuck_reports,
    }


def sessions_live(registry: Any, max_stuck: int = MAX_STUCK_LISTED) -> dict[str, Any]:
    """One registry's counts and stuck sessions, in the shape the native
    status thread serves from the C table (lw_sessions_write_live): what
    the twin's status thread serves in the live part."""
    now = registry.time()
    stuck = registry.stuck()
    return {
        "total": len(registry),
        "counts": registry.counts(),
        "queued": registry.queued(),
        "stuck_count": len(stuck),
        "stuck": [_stuck_entry(v, now) for v in stuck[:max_stuck]],
    }


def sessions_entry(registries: list[Any]) -> dict[str, Any] | None:
    """Counts by state over every registry, and the stuck sessions (at most
    MAX_STUCK_LISTED, the longest stuck first). O(stuck sessions): the
    others are not looked at."""
    if not registries:
        return None
    counts: dict[str, int] = {}
    stuck: list[dict[str, Any]] = []
    total = queued = 0
    for registry in registries:
        for state, n in registry.counts().items():
            counts[state] = counts.get(state, 0) + n
        total += len(registry)
        queued += registry.queued()
        # the registry's time: a view's times exclude the loop's stalls
        now = registry.time()
        stuck += [_stuck_entry(view, now) for view in registry.stuck()]
    stuck.sort(key=lambda s: -s["since_progress_s"])
    return {
        "total": total,
        "counts": counts,
        "queued": queued,
        "stuck_count": len(stuck),
        "stuck": stuck[:MAX_STUCK_LISTED],
        "stuck_listed_max": MAX_STUCK_LISTED,
    }


def process_entry(started_monotonic: float) -> dict[str, Any]:
    """pid, command line, how long the process has run (Linux: from
    /proc; elsewhere since the status server started)."""
    uptime = None
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])
        with open("/proc/uptime", "rb") as f:
            boot_uptime = float(f.read().split()[0])
        uptime = max(0.0, boot_uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        pass
    if uptime is None:
        uptime = time.monotonic() - started_monotonic
    return {
        "schema": SCHEMA_VERSION,
        "pid": os.getpid(),
        "argv": [printable(a, 1000) for a in sys.argv],
        "python": sys.version.split()[0],
        "uptime_s": round(uptime, 3),
    }
