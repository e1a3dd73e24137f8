"""A user's script over loopwatch's public API: it must type-check under
``mypy --strict`` (and pyright) whichever implementation is installed.
Checked by tests/typing/check.py (.ci/run's typing stage); also runnable."""

from __future__ import annotations

import asyncio
import pickle

import loopwatch
from loopwatch import (
    Diagnostics,
    Histogram,
    LivenessThresholds,
    LoopMonitor,
    LoopStats,
    SessionEvent,
    SessionRegistry,
    SessionView,
    StallEvent,
    TimerWheel,
    watch,
)


def histograms() -> float:
    hist = Histogram(lowest_trackable=1, highest_trackable=60_000_000, significant_figures=3)
    hist.record(1_500)
    hist.record_corrected(250_000, expected_interval=10_000, count=2)
    p99: int = hist.value_at_percentile(99.0)
    table: dict[float, int] = hist.percentiles([50.0, 99.9])
    for value, count in hist.recorded():
        assert value >= 0 and count > 0
    copy = Histogram.decode(hist.encode())
    copy.merge(hist)
    restored: Histogram = pickle.loads(pickle.dumps(copy))
    assert restored.total_count == 2 * hist.total_count and p99 in table.values() or True
    return hist.mean + hist.stdev


def wheel() -> list[object]:
    w = TimerWheel(0.001, now=0.0)
    w.schedule("session-1", 5.0)
    w.schedule(("user", 7), 6.5)
    w.cancel("session-1")
    nxt: float | None = w.next_deadline()
    assert nxt is None or nxt >= 0.0
    return list(w.expire(10.0))


def on_stall(event: StallEvent) -> None:
    print(event)


def on_evict(view: SessionView) -> None:
    print(view.session_id, view.state, view.stuck_reports)


async def store(session_id: object) -> bool:
    return True


async def service() -> LoopStats:
    registry = SessionRegistry(stuck_after=60.0, evict_after=None, store=store,
                               on_evict=on_evict, max_sessions=10_000)
    registry.open("s1", key="alice", state="processing")
    registry.progress("s1")
    registry.set_state("s1", "waiting", queue_depth=3)
    events: list[SessionEvent] = await registry.acheck()
    counts: dict[str, int] = registry.counts()
    registry.close("s1")
    with registry.session("s2", state="processing") as scope:
        scope.progress()
    assert not events and counts is not None

    async with Diagnostics(registry, liveness_interval=30.0, status=False,
                           thresholds=LivenessThresholds(delay_p99_ms=500.0)):
        await asyncio.sleep(0)

    monitor = LoopMonitor(asyncio.get_running_loop(), resolution=0.005, stall_threshold=0.05,
                          on_stall=on_stall)
    monitor.start()
    await asyncio.sleep(0.02)
    monitor.stop()
    async with watch(resolution=0.01, capture_stack=False) as m:
        await asyncio.sleep(0.02)
    stats = m.snapshot(reset_interval=False)
    print(stats.total.lag.p99_ms, stats.total.utilization)
    return stats


def main() -> None:
    implementation: str = loopwatch.IMPLEMENTATION
    print(loopwatch.__version__, implementation, histograms(), wheel())
    path: str = loopwatch.status_socket_path()
    try:
        loopwatch.query_status(timeout=0.5, path=path)
    except loopwatch.StatusUnavailable as exc:
        print("no status:", exc.reason)
    asyncio.run(service())


if __name__ == "__main__":
    main()
