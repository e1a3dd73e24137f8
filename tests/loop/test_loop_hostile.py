"""Hostile callers of the loop monitor (issue 9): any start/stop order of any
number of monitors on one loop, and on_stall callbacks that stop, restart,
raise or take snapshots. Every case runs on both implementations and on
asyncio and uvloop.

The hook chains (the run and close hooks, and the select wrapper of
``exact_utilization=True``) are checked without reading the loop's or the selector's
``__dict__`` (see docs/architecture.md): a wrapper is recognized by its
owner (the bound method's ``__self__``) and the monitor's own links; an
attribute that is back to the original equals the class's method bound to
the instance and is not an instance attribute (reading it twice gives two
bound method objects, not the same one).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from loop_support import LoopThread, Stalls, new_loop, wait_until

MAX_MONITORS = 5


def _hooked(loop):
    """(object, attribute) pairs the monitors wrap on this loop."""
    pairs = [(loop, "run_forever"), (loop, "close")]
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        pairs.append((selector, "select"))
    return pairs


def _original(obj, name):
    """The class's method bound to obj."""
    return getattr(type(obj), name).__get__(obj, type(obj))


def _is_original(obj, name) -> bool:
    value = getattr(obj, name)
    return value == _original(obj, name) and getattr(obj, name) is not value


def _chain(obj, name, value=None):
    """The monitors' wrappers on obj.name from the top (or from value down),
    and what the last one calls."""
    owners = []
    value = getattr(obj, name) if value is None else value
    while True:
        owner = getattr(value, "__self__", None)
        link = getattr(owner, "link", None) if owner is not obj else None
        if link is None or link.hook is not value:
            return owners, value
        assert len(owners) < 10_000, "the chain loops"
        owners.append(owner)
        value = link.next


def _check_chains(loop, monitors):
    """The loop's attributes are the originals plus exactly one active
    wrapper per running monitor: no pass-through, nothing doubled."""
    running = [m for m in monitors if m.running]
    for obj, name in _hooked(loop):
        owners, bottom = _chain(obj, name)
        expected = [link.owner for m in running for link in m._links
                    if link.obj is obj and link.name == name]
        assert len(expected) == len(running), f"a running monitor has no {name} wrapper"
        assert sorted(map(id, owners)) == sorted(map(id, expected)), name
        assert all(owner.active for owner in owners), f"a pass-through is left on {name}"
        assert bottom == _original(obj, name), name
        if not running:
            assert _is_original(obj, name), f"{name} is not back to the original"


def _run_until_every_monitor_ticks(loop, monitors, timeout=10.0):
    """Run the loop until each running monitor has seen a tick (its
    heartbeat moved after the run armed it) and, on asyncio, timed a
    waiting select."""
    running = [m for m in monitors if m.running]

    def progress(m):
        timer = m._timer
        waited = timer.waited_ns(time.monotonic_ns()) if timer is not None else 0
        return m._core.last_heartbeat_ns(), waited

    async def until_moved():
        before = {m: progress(m) for m in running}  # the run armed the ticks
        deadline = time.monotonic() + timeout
        while True:
            moved = [(m, progress(m)) for m in running]
            if all(beat > before[m][0] and (m._timer is None or waited > before[m][1])
                   for m, (beat, waited) in moved):
                return
            assert time.monotonic() < deadline, "a running monitor saw no tick"
            await asyncio.sleep(0.001)

    loop.run_until_complete(until_moved())


def test_overlapping_monitors_from_the_issue(impl, loop):
    """a.start(); b.start(); a.stop(); b.stop(); a.start(): a's select
    wrapper wrapped itself (native: segfault, twin: RecursionError)."""
    a = impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                         exact_utilization=True)
    b = impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                         exact_utilization=True)
    a.start()
    b.start()
    a.stop()
    b.stop()
    _check_chains(loop, [a, b])
    a.start()
    _check_chains(loop, [a, b])
    _run_until_every_monitor_ticks(loop, [a, b])
    loop.close()
    assert not a.running
    _check_chains(loop, [a, b])


def test_a_thousand_overlaps_leave_nothing_behind(impl, loop):
    a = impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                         exact_utilization=True)
    b = impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                         exact_utilization=True)
    for _ in range(1000):
        a.start()
        b.start()
        a.stop()
        b.stop()
    _check_chains(loop, [a, b])
    a.start()
    b.start()
    _check_chains(loop, [a, b])
    for obj, name in _hooked(loop):
        assert len(_chain(obj, name)[0]) == 2
    _run_until_every_monitor_ticks(loop, [a, b])
    loop.close()  # used to raise RecursionError
    _check_chains(loop, [a, b])


def _open_fds() -> set[str]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(folder):
            return set(os.listdir(folder))
    pytest.skip("no listing of this process's file descriptors")


def test_monitors_that_ran_and_went_leave_no_file_open(impl, loop_kind):
    """Each monitor opens a ping and, on Linux, the loop thread's /proc
    files; a monitor that ran, stopped and was dropped closes them all (the
    twin kept two /proc files per monitor open for good: a suite of many
    monitors ran out of select()'s 1024 fds)."""
    warm = new_loop(loop_kind)  # uvloop opens a pipe of its own for good, once
    warm.run_until_complete(asyncio.sleep(0))
    warm.close()
    gc.collect()
    before = _open_fds()
    for _ in range(20):
        loop = new_loop(loop_kind)
        try:
            monitors = [impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                                         exact_utilization=True).start() for _ in range(2)]
            _run_until_every_monitor_ticks(loop, monitors)
            loop.run_until_complete(asyncio.sleep(0.05))  # idle: the sampler looks at the loop
            for m in monitors:
                m.stop()
        finally:
            loop.close()
        del monitors, m
    gc.collect()
    left = _open_fds() - before
    assert not left, {fd: _fd_target(fd) for fd in left}


def _fd_target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.mark.parametrize("kind", ["run_forever", "close", "select"])
def test_a_stopped_wrapper_under_a_foreign_one_is_a_pass_through(impl, loop, kind):
    """Someone wraps on top of a monitor's wrapper: stopping the monitor
    cannot unlink it, so it stays as a pass-through; a restart of the same
    monitor links a fresh wrapper and never the old one, and the old one is
    cut out as soon as the foreign wrapper is gone."""
    obj = loop if kind != "select" else getattr(loop, "_selector", None)
    if obj is None:
        pytest.skip("uvloop has no selector")
    a = impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                         exact_utilization=True).start()
    wrapped = getattr(obj, kind)
    calls = []

    def foreign(*args, **kwargs):
        calls.append(kind)
        return wrapped(*args, **kwargs)

    setattr(obj, kind, foreign)
    a.stop()
    assert getattr(obj, kind) is foreign
    (old,), bottom = _chain(obj, kind, wrapped)
    assert not old.active and bottom == _original(obj, kind)  # the pass-through
    for _ in range(3):  # restarts link fresh wrappers above the foreign one
        a.start()
        owners, bottom = _chain(obj, kind)
        assert len(owners) == 1 and owners[0] is not old and owners[0].active
        assert bottom is foreign
        _run_until_every_monitor_ticks(loop, [a])
        a.stop()
        assert getattr(obj, kind) is foreign
    if kind != "close":
        assert calls  # the chain went through the foreign wrapper
    setattr(obj, kind, wrapped)  # the foreign wrapper leaves, putting back what it found
    b = impl.LoopMonitor(loop, resolution=0.001, stall_threshold=1.0,
                         exact_utilization=True).start()
    _check_chains(loop, [a, b])  # the pass-through was cut out
    _run_until_every_monitor_ticks(loop, [a, b])
    b.stop()
    _check_chains(loop, [a, b])


@pytest.mark.parametrize("ending", ["stop", "close"])
def test_a_restart_inside_a_run_follows_the_loop(impl, loop, ending):
    """Stop and start again while the loop runs inside the first run_forever
    wrapper: the end of that run is still seen (the monitor pauses: a loop
    that is not running is not stalled)."""
    stalls = Stalls()
    monitor = impl.LoopMonitor(loop, resolution=0.002, stall_threshold=0.02, on_stall=stalls,
                               exact_utilization=True)
    monitor.start()

    async def restart():
        monitor.stop()
        monitor.start()
        _check_chains(loop, [monitor])
        await asyncio.sleep(0.02)

    loop.run_until_complete(restart())
    assert monitor.running
    # idle, not running, ten times the threshold: a monitor that missed the
    # end of the run would report a stall within this wait
    assert not stalls.started.wait(0.2)
    assert monitor.snapshot().total.stall_count == 0
    if ending == "close":
        loop.close()
        assert not monitor.running
    else:
        monitor.stop()
    _check_chains(loop, [monitor])


def test_random_start_stop_orders_keep_exact_chains(impl, loop_kind):
    """Model test: random start/stop sequences of up to 5 monitors on one
    loop; after each step the chains are exact, one loop iteration works and
    every running monitor sees its ticks; after all stop, the originals."""
    class HookChains(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = new_loop(loop_kind)
            self.monitors = [impl.LoopMonitor(self.loop, resolution=0.001, stall_threshold=1.0,
                                              exact_utilization=True)
                             for _ in range(MAX_MONITORS)]

        @rule(i=st.integers(0, MAX_MONITORS - 1))
        def start(self, i):
            self.monitors[i].start()

        @rule(i=st.integers(0, MAX_MONITORS - 1))
        def stop(self, i):
            self.monitors[i].stop()

        @invariant()
        def chains_are_exact_and_every_monitor_ticks(self):
            _check_chains(self.loop, self.monitors)
            _run_until_every_monitor_ticks(self.loop, self.monitors)

        def teardown(self):
            try:
                for m in self.monitors:
                    m.stop()
                _check_chains(self.loop, self.monitors)
            finally:
                self.loop.close()

    run_state_machine_as_test(
        HookChains,
        settings=settings(max_examples=50, stateful_step_count=20, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )


# -- on_stall that stops, starts, raises, takes snapshots ---------------------------
ACTIONS = ["raise", "raise-system-exit", "stop", "start", "stop-start", "snapshot"]


@pytest.mark.parametrize("action", ACTIONS)
def test_whatever_on_stall_does_every_started_gets_its_ended(impl, loop, action, caplog):
    """on_stall does `action` at every event: each "started" gets its
    "ended" exactly once, the monitor is not stalled once the loop is idle,
    total.longest_stall never decreases, and a later stall is reported."""
    caplog.set_level(logging.ERROR, logger="loopwatch.loop")
    stalls = Stalls()
    holder = {}

    def on_stall(event):
        stalls(event)
        monitor = holder["monitor"]
        if action == "raise":
            raise RuntimeError("broken callback")
        if action == "raise-system-exit":
            raise SystemExit(3)
        if action in ("stop", "stop-start"):
            monitor.stop()
        if action in ("start", "stop-start"):
            monitor.start()
        if action == "snapshot":
            monitor.snapshot()

    runner = LoopThread(loop)
    monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03, on_stall=on_stall)
    holder["monitor"] = monitor
    longest = []

    def watch_until(done: threading.Event, timeout: float = 20.0) -> None:
        """Snapshots until done is set (at most timeout seconds)."""
        deadline = time.monotonic() + timeout
        while not done.wait(0.002):
            longest.append(monitor.snapshot(reset_interval=False).total.longest_stall)
            assert time.monotonic() < deadline, f"no event after {stalls.events}"
        longest.append(monitor.snapshot(reset_interval=False).total.longest_stall)

    def settle() -> None:
        """Waits until every stall reported so far has ended."""
        deadline = time.monotonic() + 20.0
        while True:
            with stalls._lock:
                ids = [(e.kind, e.stall_id) for e in stalls.events]
            if all(("ended", i) in ids for kind, i in ids if kind == "started"):
                return
            assert time.monotonic() < deadline, f"stall never ended: {ids}"
            time.sleep(0.002)

    def one_stall() -> None:
        """Blocks the loop until its stall is reported, then releases it.

        A loaded machine can stall the loop on its own before the block
        begins (the threshold is 30 ms); such a round is redone, so the
        stall examined is the one this block caused."""
        for _attempt in range(5):
            if not monitor.running:
                monitor.start()
            assert wait_until(lambda: monitor.snapshot(reset_interval=False).total.delay.count > 0)
            entered, release = threading.Event(), threading.Event()
            entered_at = []

            def block() -> None:
                entered_at.append(time.monotonic())
                entered.set()
                release.wait(30)

            seen_started = len(stalls.of_kind("started"))
            loop.call_soon_threadsafe(block)
            assert entered.wait(20)
            def block_stall():
                """The stall detected once the block began, if reported."""
                return next((e for e in stalls.of_kind("started")[seen_started:]
                             if e.detected_at >= entered_at[0]), None)

            deadline = time.monotonic() + 20.0
            # (ends early when a stall before the block stopped the monitor)
            while (ours := block_stall()) is None and monitor.running:
                longest.append(monitor.snapshot(reset_interval=False).total.longest_stall)
                assert time.monotonic() < deadline, f"no event after {stalls.events}"
                time.sleep(0.002)
            release.set()
            settle()
            # the loop is idle again: nothing left over from the stall (a
            # loaded machine may be making a short stall of its own just now:
            # it ends too)
            assert wait_until(lambda: not monitor.snapshot(reset_interval=False).stalled)
            settle()
            longest.append(monitor.snapshot(reset_interval=False).total.longest_stall)
            if ours is not None:
                return
        pytest.fail(f"the loop never stalled on its own block: {stalls.events}")

    try:
        monitor.start()
        one_stall()
        one_stall()  # the reporter survived whatever on_stall did
        monitor.stop()
        final = monitor.snapshot()
    finally:
        runner.stop()
        monitor.stop()
        loop.close()
    kinds = [(e.kind, e.stall_id) for e in stalls.events]
    counts = collections.Counter(kinds)
    assert all(count == 1 for count in counts.values()), kinds
    started = [i for kind, i in kinds if kind == "started"]
    ended = [i for kind, i in kinds if kind == "ended"]
    assert len(started) >= 2 and sorted(started) == sorted(ended), kinds
    for stall_id in started:
        assert kinds.index(("started", stall_id)) < kinds.index(("ended", stall_id)), kinds
    assert not final.stalled and final.total.stall_count == len(started)
    assert all(a <= b for a, b in zip(longest, longest[1:])), longest
    assert final.total.longest_stall >= longest[-1] >= 0.03
    if action.startswith("raise"):
        assert sum("on_stall raised" in r.getMessage() for r in caplog.records) == 2 * len(started)
