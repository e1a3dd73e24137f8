"""The plugin's LoopTracker in-process, on both implementations: stalls at
the very end of a run are settled into the phase they started in, settle()
does not wait when no stall can be pending, loops get nothing but a tick,
monitors are reused, loops in other threads are watched.

Stalls that must be seen block 0.15-0.3 s against a 0.05 s threshold
(resolution 10 ms): a loaded machine only makes them longer. A loaded
2-core machine also stalls a loop on its own (a thread that waits 0.05-0.3 s
for a core), so nothing here counts on a loop never stalling over 0.05 s
while it runs for long: the runs that must see no stall are microseconds
long or watched with a threshold no load reaches (QUIET_THRESHOLD), the
loop that must stay responsive is checked by its heartbeats, and the loop
in another thread by the stalls of that loop only.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
import threading
import time

import pytest

from loopwatch.testing.loops import LoopTracker

THRESHOLD = 0.05
BLOCK = 0.15
# A threshold no machine load reaches: runs watched with it have no stall.
QUIET_THRESHOLD = 5.0


def _tracker(impl, threshold):
    tracker = LoopTracker(impl.LoopMonitor, 0.01, threshold)
    tracker.install()
    yield tracker
    tracker.uninstall()
    assert tracker.running_monitors() == 0


@pytest.fixture
def tracker(impl):
    yield from _tracker(impl, THRESHOLD)


@pytest.fixture
def quiet_tracker(impl):
    yield from _tracker(impl, QUIET_THRESHOLD)


def _no_wait(tracker, monkeypatch):
    """Make settle() fail if it waits for a reporter."""
    def refuse(state):
        raise AssertionError("settle() waited with no stall pending")
    monkeypatch.setattr(tracker, "_wait_handled", refuse)


def _gil_sleep(seconds):
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))  # holds the GIL


@pytest.mark.parametrize("block", ["sleep", "gil"])
def test_a_stall_at_the_very_end_of_a_run_is_settled_into_its_phase(tracker, block):
    if block == "gil" and sys.platform == "win32":
        pytest.skip("usleep from the C library")
    # a GIL-holding call long enough that its stack cannot be taken (the
    # reporter runs again too late after the threshold)
    seconds = BLOCK if block == "sleep" else 0.3
    blocking = time.sleep if block == "sleep" else _gil_sleep

    async def blocks_last():
        await asyncio.sleep(0)
        blocking(seconds)  # the run ends right after it

    async def nothing():
        pass

    for _ in range(5):  # a race would show in some of the rounds
        loop = asyncio.new_event_loop()
        try:
            since = time.monotonic()
            loop.run_until_complete(blocks_last())
            stalls = tracker.settle(since)
            settled = time.monotonic()
            # (the run is microseconds long but for the block: a stall of
            # the machine's load would be part of the block's)
            assert len(stalls) == 1, stalls
            stall = stalls[0]
            assert stall.ended
            assert seconds - 0.05 <= stall.duration, stall
            # whole, and within the phase: not measured on to the settling
            assert since <= stall.started_at
            assert stall.started_at + stall.duration <= settled, (stall, settled)
            if block == "sleep":
                assert stall.stack and any(f.function == "blocks_last" for f in stall.stack)
            else:
                assert stall.stack is None and stall.stack_error
            # the next phase does not see it again
            since = time.monotonic()
            loop.run_until_complete(nothing())
            assert tracker.settle(since) == []
        finally:
            loop.close()
    assert tracker.monitors_made == 1


def test_settle_does_not_wait_when_no_stall_is_pending(quiet_tracker, monkeypatch):
    tracker = quiet_tracker  # no stall, however loaded the machine
    _no_wait(tracker, monkeypatch)
    assert tracker.settle(time.monotonic()) == []  # no monitor yet
    for _ in range(20):
        since = time.monotonic()
        asyncio.run(asyncio.sleep(0.001))
        assert tracker.settle(since) == []
    assert tracker.monitors_made == 1
    assert tracker.loops_watched == 20


def test_loops_get_only_a_tick(tracker):
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0.03))  # ticks fired meanwhile
        own = loop.__dict__  # (materializes it: fine for this loop)
        assert not {"run_forever", "close", "run_until_complete"} & set(own), own
        assert "select" not in vars(loop._selector)
        # one tick callback stays scheduled for the next run
        pending = [h for h in loop._scheduled if not h.cancelled()]
        assert len(pending) == 1, loop._scheduled
    finally:
        loop.close()


@pytest.mark.parametrize("gap", [0.0, 0.05])
def test_a_responsive_run_after_a_short_one_is_not_a_stall(tracker, gap):
    """The tick left pending by a run goes on ticking in the loop's next
    run, whether it is due by then or not: the heartbeat the sampler reads
    moves on all through that run (a tick that stopped would leave it at
    the run's start, and the run would be one stall of its whole length).

    Read from inside the loop, after each of its timers: a loaded machine
    delays the loop (and may stall it on its own), but never makes the tick,
    due no later than the next timer, skip the loop's turns."""
    loop = asyncio.new_event_loop()

    async def responsive():
        core = tracker._local.state.core  # the monitor of this run
        beats = set()
        for _ in range(20):
            await asyncio.sleep(THRESHOLD / 5)
            beats.add(core.last_heartbeat_ns())
        return beats

    try:
        for _ in range(3):
            since = time.monotonic()
            loop.run_until_complete(asyncio.sleep(0))
            time.sleep(gap)  # between runs: the sampler is paused
            beats = loop.run_until_complete(responsive())
            # the tick ran between (nearly) every two of the timers
            assert len(beats) >= 10, sorted(beats)
            tracker.settle(since)  # (the load's own stalls, if any: not counted)
    finally:
        loop.close()


def test_a_loop_run_again_keeps_its_tick_and_name(tracker):
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))
        assert tracker.loops_watched == 1
        assert tracker.runs_watched == 3
    finally:
        loop.close()


def test_a_loop_in_another_thread_while_this_one_runs(tracker):
    ready = threading.Event()
    result = {}

    def other_thread():
        async def blocks():
            ready.wait(5)
            time.sleep(BLOCK)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(blocks())
        finally:
            loop.close()
        result["done"] = True

    async def main():
        thread = threading.Thread(target=other_thread)
        since = time.monotonic()
        thread.start()
        await asyncio.sleep(0.01)
        ready.set()
        while thread.is_alive():
            await asyncio.sleep(0.005)  # this loop stays responsive
        return since

    since = asyncio.run(main())
    stalls = tracker.settle(since)
    assert result["done"]
    assert tracker.monitors_made == 2  # the two loops ran at the same time
    # The other thread's loop: one stall (blocked all through its run).
    # This thread's loop polls every 5 ms for 0.2 s: a loaded machine may
    # stall it past 0.05 s on its own, so its stalls are not counted.
    assert all(s.loop_name.startswith(("loop 1 ", "loop 2 ")) for s in stalls), stalls
    other = [s for s in stalls if s.loop_name.startswith("loop 2 ")]
    assert len(other) == 1 and other[0].ended, stalls
    assert other[0].duration >= BLOCK - 0.05


def test_a_loop_set_running_without_running_is_not_watched(tracker, monkeypatch):
    _no_wait(tracker, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        asyncio._set_running_loop(loop)  # as some libraries do, briefly
        try:
            time.sleep(THRESHOLD * 3)  # not a stall: the loop does not run
        finally:
            asyncio._set_running_loop(None)
        assert tracker.settle(0.0) == []
        assert tracker.monitors_made == 0
    finally:
        loop.close()
