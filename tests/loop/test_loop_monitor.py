"""LoopMonitor's API: options, start/stop, context managers, watch(),
following the loop, snapshots. Every case runs on both implementations and
on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time

import pytest

from loop_support import (
    LoopThread,
    Stalls,
    monitor_threads,
    new_loop,
    run_for,
    wait_until,
)

import loopwatch


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


# -- options -------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        ({"resolution": 0}, "resolution must be > 0"),
        ({"resolution": -0.01}, "resolution must be > 0"),
        ({"resolution": 50e-6}, "at least 100 us"),
        ({"resolution": float("nan")}, "finite"),
        ({"resolution": math.inf}, "finite"),
        ({"resolution": 120}, "at most"),
        ({"stall_threshold": float("nan")}, "finite"),
        ({"resolution": 0.05, "stall_threshold": 0.01}, "must not be below the resolution"),
        ({"stall_threshold": -1}, "must not be below the resolution"),
    ],
)
def test_bad_options_raise_value_error(impl, loop, options, message):
    with pytest.raises(ValueError, match=message):
        impl.LoopMonitor(loop, **options)


@pytest.mark.parametrize(
    "options",
    [
        {"resolution": "0.01"},
        {"resolution": True},
        {"stall_threshold": None},
        {"on_stall": 42},
        {"capture_stack": 1},
    ],
)
def test_options_of_the_wrong_type_raise_type_error(impl, loop, options):
    with pytest.raises(TypeError):
        impl.LoopMonitor(loop, **options)


def test_loop_must_be_an_event_loop(impl, loop_kind):
    with pytest.raises(TypeError, match="event loop"):
        impl.LoopMonitor(object())


def test_watch_takes_no_loop(impl, loop_kind):
    with pytest.raises(TypeError):
        impl.watch(loop=new_loop(loop_kind))


def test_edge_options_are_accepted(impl, loop):
    monitor = impl.LoopMonitor(loop, resolution=100e-6, stall_threshold=100e-6)
    assert monitor.resolution == 100e-6 and monitor.stall_threshold == 100e-6
    assert monitor.implementation == impl.name
    assert not monitor.running


# -- start / stop ---------------------------------------------------------------
def test_start_stop_are_idempotent_and_join_the_threads(impl, loop):
    before = monitor_threads()
    monitor = impl.LoopMonitor(loop)
    assert monitor.start() is monitor
    monitor.start()
    assert monitor.running
    assert len(_threads_named("loopwatch-reporter")) == 1
    if sys.platform == "linux" or impl.name == "python":
        # sampler + reporter (the native sampler names itself once it runs)
        assert wait_until(lambda: monitor_threads() == before + 2)
    run_for(loop, 0.05)
    monitor.stop()
    if impl.name == "native":
        # Joined, not just told to stop: the sampler had finished, its last
        # act (closing its own fds) done, when stop() returned.
        assert monitor._core.sampler_table() is None
    monitor.stop()
    assert not monitor.running
    assert _threads_named("loopwatch-reporter") == []
    assert _threads_named("loopwatch-sampler") == []
    # The kernel lists a joined thread a moment longer (pthread_join returns
    # when it cleared its tid, before the kernel drops it: up to 3 ms
    # measured under AddressSanitizer), as loopwatch._forking knows.
    assert wait_until(lambda: monitor_threads() == before, timeout=2)


def test_restart_after_stop_keeps_the_totals(impl, loop):
    monitor = impl.LoopMonitor(loop, resolution=0.005)
    with monitor:
        run_for(loop, 0.1)
    first = monitor.snapshot(reset_interval=False).total.sample_count
    assert first > 0
    with monitor:
        run_for(loop, 0.1)
    stats = monitor.snapshot()
    assert stats.total.sample_count > first
    assert not stats.running


def test_sync_context_manager(impl, loop):
    with impl.LoopMonitor(loop, resolution=0.005) as monitor:
        assert monitor.running
        run_for(loop, 0.1)
    assert not monitor.running
    assert monitor.snapshot().total.lag.count > 0


def test_async_context_manager_binds_the_running_loop(impl, loop):
    async def main():
        async with impl.LoopMonitor(resolution=0.005) as monitor:
            assert monitor.loop is asyncio.get_running_loop()
            assert monitor.running
            await asyncio.sleep(0.1)
        return monitor

    monitor = loop.run_until_complete(main())
    assert not monitor.running
    stats = monitor.snapshot()
    assert stats.total.delay.count > 0 and stats.total.lag.count > 0


def test_watch_monitors_the_running_loop(impl, loop):
    stalls = Stalls()

    async def main():
        async with impl.watch(resolution=0.005, stall_threshold=0.05, on_stall=stalls) as m:
            assert m.loop is asyncio.get_running_loop()
            await asyncio.sleep(0.05)
            time.sleep(0.15)  # the blocking call under test
            await asyncio.sleep(0.02)
            assert stalls.ended.wait(5)
        return m

    monitor = loop.run_until_complete(main())
    assert not monitor.running
    assert [e.kind for e in stalls.events] == ["started", "ended"]


def test_start_without_loop_outside_a_loop_fails(impl, loop_kind):
    with pytest.raises(RuntimeError, match="running loop"):
        impl.LoopMonitor().start()


def test_closed_loop_cannot_be_watched(impl, loop):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        impl.LoopMonitor(loop).start()


@pytest.mark.parametrize("order", ["last-started-first", "first-started-first"])
def test_several_monitors_on_one_loop(impl, loop, order):
    """An application's own monitor under `loopwatch run`'s: both measure,
    and stopping them in either order leaves a loop that runs and can be
    watched again."""
    selector = getattr(loop, "_selector", None)
    stalls_a, stalls_b = Stalls(), Stalls()
    a = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03, on_stall=stalls_a).start()
    b = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03, on_stall=stalls_b).start()
    loop.call_soon(time.sleep, 0.1)
    run_for(loop, 0.03)
    assert stalls_a.ended.wait(5) and stalls_b.ended.wait(5)
    for m in (b, a) if order == "last-started-first" else (a, b):
        m.stop()
    for m in (a, b):
        stats = m.snapshot()
        # the 0.1 s block; a loaded machine may add stalls of its own at a
        # 30 ms threshold
        assert stats.total.stall_count >= 1 and stats.total.longest_stall >= 0.09
        assert stats.total.sample_count > 0
    assert a.utilization_method == b.utilization_method
    if order == "last-started-first":  # each put back what it found
        assert "run_forever" not in vars(loop) and "close" not in vars(loop)
        if selector is not None:
            assert "select" not in vars(selector)
    with impl.LoopMonitor(loop, resolution=0.005) as c:
        # run until the sampler has sampled (a loaded machine may keep it
        # off a core for the first 30 ms)
        deadline = time.monotonic() + 10
        while (c.snapshot(reset_interval=False).total.sample_count == 0
               and time.monotonic() < deadline):
            run_for(loop, 0.03)
    assert c.snapshot().total.sample_count > 0
    loop.close()
    assert not c.running and loop.is_closed()


def test_snapshot_before_start_fails(impl, loop):
    with pytest.raises(RuntimeError, match="never started"):
        impl.LoopMonitor(loop).snapshot()


def test_monitor_started_from_another_thread_of_a_running_loop(impl, loop):
    runner = LoopThread(loop)
    try:
        monitor = impl.LoopMonitor(loop, resolution=0.005).start()
        # The heartbeat arms in the loop thread: wait until samples flow.
        assert wait_until(lambda: monitor.snapshot(reset_interval=False).total.delay.count >= 5)
        monitor.stop()
    finally:
        runner.stop()
    stats = monitor.snapshot()
    assert stats.total.stall_count == 0


# -- following the loop -------------------------------------------------------------
def test_a_loop_that_is_not_running_is_not_stalled(impl, loop):
    stalls = Stalls()
    with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.02, on_stall=stalls) as m:
        run_for(loop, 0.03)
        time.sleep(0.2)  # the loop is idle and not running: no stall, no lag
        run_for(loop, 0.03)
        stats = m.snapshot()
    assert stalls.events == []
    assert stats.total.stall_count == 0
    assert stats.total.lag.max_ms < 20
    # delay of the first tick after the pause is not counted either
    assert stats.total.delay.max_ms < 20


def test_closing_the_loop_stops_its_monitor(impl, loop):
    before = monitor_threads()
    monitor = impl.LoopMonitor(loop).start()
    run_for(loop, 0.02)
    loop.close()
    assert loop.is_closed()
    assert not monitor.running
    assert _threads_named("loopwatch-reporter") == []
    assert monitor_threads() == before
    # the loop is left as it was: no monitor attributes remain
    assert "run_forever" not in vars(loop) and "close" not in vars(loop)


def test_stop_restores_the_loop_and_its_selector(impl, loop):
    selector = getattr(loop, "_selector", None)
    monitor = impl.LoopMonitor(loop).start()
    monitor.stop()
    assert "run_forever" not in vars(loop) and "close" not in vars(loop)
    if selector is not None:
        assert "select" not in vars(selector)


# -- reports -----------------------------------------------------------------------
def test_stall_is_logged_on_loopwatch_loop(impl, loop, caplog):
    stalls = Stalls()
    caplog.set_level(logging.WARNING, logger="loopwatch.loop")

    def block_the_loop():
        time.sleep(0.15)

    with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.05, on_stall=stalls):
        loop.call_soon(block_the_loop)
        run_for(loop, 0.03)
        assert stalls.ended.wait(5)
    lines = [r.getMessage() for r in caplog.records if r.name == "loopwatch.loop"]
    assert len(lines) == 2
    assert "in progress" in lines[0] and "block_the_loop()" in lines[0]
    assert "ended after" in lines[1]
    event = caplog.records[0].loopwatch_event
    assert event.kind == "started" and event.blocking_frame.function == "block_the_loop"


def test_on_stall_errors_are_logged_and_reporting_goes_on(impl, loop, caplog):
    calls = []
    second_end = threading.Event()

    def on_stall(event):
        calls.append(event.kind)
        if len(calls) == 4:
            second_end.set()
        raise RuntimeError("broken callback")

    caplog.set_level(logging.WARNING, logger="loopwatch.loop")
    with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03, on_stall=on_stall):
        for _ in range(2):
            loop.call_soon(time.sleep, 0.1)
            run_for(loop, 0.05)
        assert second_end.wait(5)
    assert calls == ["started", "ended", "started", "ended"]
    assert any("on_stall raised" in r.getMessage() for r in caplog.records)


def test_stop_from_on_stall_does_not_deadlock(impl, loop):
    stopped = threading.Event()
    holder = {}

    def on_stall(event):
        holder["monitor"].stop()
        stopped.set()

    monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.02, on_stall=on_stall)
    holder["monitor"] = monitor
    monitor.start()
    loop.call_soon(time.sleep, 0.1)
    run_for(loop, 0.03)
    assert stopped.wait(5)
    assert not monitor.running
    monitor.stop()


def test_stall_without_stack_capture(impl, loop):
    stalls = Stalls()
    with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03, on_stall=stalls,
                          capture_stack=False):
        loop.call_soon(time.sleep, 0.1)
        run_for(loop, 0.03)
        assert stalls.ended.wait(5)
    started = stalls.of_kind("started")[0]
    assert started.stack is None and started.stack_error is None


# -- snapshots ---------------------------------------------------------------------
def test_snapshot_intervals_partition_the_total(impl, loop):
    with impl.LoopMonitor(loop, resolution=0.002) as monitor:
        counts = []
        for _ in range(3):
            run_for(loop, 0.05)
            counts.append(monitor.snapshot().interval.sample_count)
        total = monitor.snapshot()
    assert all(c > 0 for c in counts)
    assert total.total.sample_count == sum(counts) + total.interval.sample_count
    assert total.total.lag_histogram.total_count == total.total.sample_count
    assert total.total.delay.count >= sum(1 for c in counts)


def test_snapshot_without_reset_keeps_the_interval(impl, loop):
    with impl.LoopMonitor(loop, resolution=0.002) as monitor:
        run_for(loop, 0.05)
        first = monitor.snapshot(reset_interval=False).interval
        run_for(loop, 0.05)
        second = monitor.snapshot(reset_interval=False).interval
    assert second.sample_count > first.sample_count > 0
    assert second.start == first.start
    assert second.duration > first.duration


def test_snapshot_fields_and_histograms(impl, loop):
    with impl.LoopMonitor(loop, resolution=0.005) as monitor:
        run_for(loop, 0.1)
        stats = monitor.snapshot()
    assert isinstance(stats, loopwatch.LoopStats)
    window = stats.total
    for summary in (window.lag, window.delay):
        assert 0 <= summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.p999_ms
        assert summary.p999_ms <= summary.max_ms
    assert window.delay.count == window.delay_histogram.total_count > 0
    assert window.lag.count == window.sample_count > 0
    assert 0.09 < window.duration < 5
    assert stats.resolution == 0.005 and stats.stall_threshold == 0.1
    assert stats.utilization_method == "thread_cpu"  # selector_wait: exact_utilization=True
    # the raw histograms are loopwatch Histograms of microseconds, encodable
    encoded = window.lag_histogram.encode()
    decoded = type(window.lag_histogram).decode(encoded)
    assert decoded == window.lag_histogram
    assert loopwatch.Histogram.decode(encoded).total_count == window.sample_count


def test_snapshot_from_another_thread_while_sampling(impl, loop):
    """Reading swaps interval histograms: concurrent snapshots lose no sample
    and never block the sampler."""
    runner = LoopThread(loop)
    monitor = impl.LoopMonitor(loop, resolution=0.001)
    try:
        monitor.start()
        seen = 0
        assert wait_until(lambda: monitor._core.sample_count() > 0)  # the loop ticks
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            seen += monitor.snapshot().interval.sample_count
        monitor.stop()
        seen += monitor.snapshot().interval.sample_count
    finally:
        runner.stop()
    assert seen == monitor.snapshot().total.sample_count > 10


def test_stop_during_a_stall_ends_it(impl, loop):
    """Every "started" report gets its "ended" one, made before stop()
    returns, and the stopped monitor's stats no longer grow."""
    stalls = Stalls()
    runner = LoopThread(loop)
    release = threading.Event()
    try:
        monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03,
                                   on_stall=stalls).start()
        assert wait_until(lambda: monitor._core.sample_count() > 0)
        loop.call_soon_threadsafe(release.wait, 10)  # the loop blocks until released
        assert stalls.started.wait(5)
        monitor.stop()
        assert stalls.ended.is_set()  # reported before stop() returned
        first = monitor.snapshot()
        second = monitor.snapshot()
    finally:
        release.set()
        runner.stop()
    (ended,) = stalls.of_kind("ended")
    assert ended.stall_id == stalls.of_kind("started")[0].stall_id
    assert 0.03 <= ended.duration < 10
    assert not first.stalled and first.total.stall_count == 1
    assert second.total.longest_stall == first.total.longest_stall == pytest.approx(
        ended.duration, abs=0.002)


def _burn_cpu(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_stopped_monitors_snapshot_stops_counting(impl, loop):
    """Durations, utilization and the CPU ratio cover the watched time only:
    read well after the stop, with CPU burned meanwhile, the snapshot says
    what it said at the stop."""
    monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.5).start()
    loop.run_until_complete(asyncio.sleep(0.3))
    monitor.stop()
    at_stop = monitor.snapshot(reset_interval=False)
    _burn_cpu(0.6)
    time.sleep(0.4)
    later = monitor.snapshot(reset_interval=False)
    assert 0.25 <= later.total.duration < 1.0
    assert later.total.duration == at_stop.total.duration
    assert later.total.cpu_core_ratio == at_stop.total.cpu_core_ratio
    assert later.total.utilization == at_stop.total.utilization
    # the loop slept: the 0.6 s of CPU burned after the stop is not counted
    assert later.total.cpu_core_ratio is not None and later.total.cpu_core_ratio < 0.5
    assert later.interval.duration == at_stop.interval.duration
    # a restart counts from there on, without the stopped span
    monitor.start()
    loop.run_until_complete(asyncio.sleep(0.2))
    monitor.stop()
    again = monitor.snapshot(reset_interval=False)
    assert 0.45 <= again.total.duration < later.total.duration + 0.2 + 0.6
    assert again.total.cpu_core_ratio < 0.5
