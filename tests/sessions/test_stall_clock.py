"""SessionRegistry.set_stall_clock (issue 8, item 3): session ages in
unstalled time, on both wheels, with fake clocks."""

from __future__ import annotations

import logging
import math

import pytest

from loop_support import new_registry
from loopwatch import SessionRegistry


class Clocks:
    """A fake monotonic clock and a fake loop-stall counter driven together."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.stalled_total = 50.0  # the monitor's figure, from before the registry

    def clock(self) -> float:
        return self.t

    def stalled(self) -> float:
        return self.stalled_total

    def run(self, dt: float) -> None:
        self.t += dt

    def stall(self, dt: float) -> None:
        self.t += dt
        self.stalled_total += dt


@pytest.fixture
def clocks():
    return Clocks()


@pytest.fixture
def make(impl, clocks):
    def make(**kwargs):
        kwargs.setdefault("clock", clocks.clock)
        reg = new_registry(impl, **kwargs)
        reg.set_stall_clock(clocks.stalled)
        return reg

    return make


def kinds(events):
    return [(e.kind, e.session_id, e.reason) for e in events]


def test_a_stall_does_not_make_a_blocked_handler_stuck(make, clocks):
    reg = make(stuck_after=2, evict_after=2.5)
    reg.open("blocked", state="processing")   # its handler is about to be blocked by a stall
    reg.open("idle-in-processing", state="processing")
    clocks.run(1.0)
    reg.progress("blocked")
    clocks.stall(3.0)                          # the loop stalls 3 s: nobody progresses
    assert kinds(reg.check()) == []            # 1 s of unstalled time since the last progress
    reg.progress("blocked")                    # the handler runs again as soon as the loop does
    clocks.run(1.0)                            # 2 s unstalled for the idle one
    assert kinds(reg.check()) == [("stuck", "idle-in-processing", None)]
    clocks.run(0.4)
    reg.progress("blocked")
    clocks.stall(5.0)                          # stuck 0.4 s unstalled, 5.4 s by the clock
    assert kinds(reg.check()) == []            # no eviction counted on stalled time
    clocks.run(1.0)
    reg.progress("blocked")
    clocks.run(1.1)
    assert kinds(reg.check()) == [("evicted", "idle-in-processing", "stuck_too_long")]
    assert [v.session_id for v in reg] == ["blocked"]
    assert not reg.get("blocked").stuck


def test_without_the_stall_clock_the_same_stall_reports(make, clocks):
    """The control: the test can fail."""
    reg = make(stuck_after=2, evict_after=2.5)
    reg.set_stall_clock(None)
    reg.open("blocked", state="processing")
    clocks.run(1.0)
    reg.progress("blocked")
    clocks.stall(3.0)
    assert kinds(reg.check()) == [("stuck", "blocked", None)]


def test_ghost_eviction_after_a_stall(make, clocks):
    store = {"alive"}
    reg = make(stuck_after=2, evict_after=600, store=lambda sid: sid in store)
    reg.open("ghost", state="processing")
    reg.open("alive", state="processing")
    clocks.stall(10.0)
    assert kinds(reg.check()) == []
    clocks.run(2.0)
    events = reg.check()
    assert sorted(kinds(events)) == [("evicted", "ghost", "ghost"), ("stuck", "alive", None)]
    assert [v.session_id for v in reg] == ["alive"]


def test_idle_timeout_and_backoff_in_unstalled_time(make, clocks):
    reg = make(stuck_after=2, report_backoff=2, evict_after=None, idle_timeout=5)
    reg.open("idle")
    reg.open("p", state="processing")
    clocks.run(2.0)
    assert kinds(reg.check()) == [("stuck", "p", None)]  # next report 4 s later
    clocks.stall(30.0)
    assert kinds(reg.check()) == []
    clocks.run(3.0)
    assert kinds(reg.check()) == [("evicted", "idle", "idle")]
    clocks.run(1.0)
    events = reg.check()
    assert kinds(events) == [("stuck", "p", None)] and events[0].reports == 2


def test_explicit_now_is_shifted_too(make, clocks):
    reg = make(stuck_after=2)
    reg.open("s", state="processing")
    clocks.stall(3.0)
    assert reg.check(now=clocks.t) == []
    assert kinds(reg.check(now=clocks.t + 1.0)) == []  # 1 s unstalled
    clocks.run(1.0)
    assert kinds(reg.check(now=clocks.t + 1.0)) == [("stuck", "s", None)]


def test_detaching_keeps_continuity_and_time_is_monotonic(make, clocks):
    reg = make(stuck_after=2)
    reg.open("s", state="processing")
    clocks.stall(3.0)
    reg.progress("s")
    at = reg.get("s").last_progress
    assert at == 1000.0  # the stalled 3 s did not count
    reg.set_stall_clock(None)
    clocks.run(1.0)
    reg.progress("s")
    assert reg.get("s").last_progress == at + 1.0  # no jump when detached
    reg.set_stall_clock(clocks.stalled)  # attach again: counts from here
    clocks.stall(4.0)
    clocks.run(1.0)
    reg.progress("s")
    assert reg.get("s").last_progress == at + 2.0
    nxt = reg.next_check()
    assert nxt is not None and nxt <= clocks.t + 2.0


@pytest.mark.parametrize("bad", ["raises", "nan", "negative", "decreasing", "inf", "string"])
def test_a_broken_stall_clock_counts_no_stall(make, clocks, caplog, bad):
    caplog.set_level(logging.WARNING, logger="loopwatch.sessions")
    reg = make(stuck_after=2)
    reg.open("s", state="processing")
    clocks.stall(1.0)  # a good reading: 1 s of stall counted
    reg.progress("s")
    assert reg.get("s").last_progress == 1000.0

    def broken():
        if bad == "raises":
            raise RuntimeError("monitor gone")
        return {"nan": math.nan, "negative": -5.0, "decreasing": clocks.stalled_total - 10,
                "inf": math.inf, "string": "1.0"}[bad]

    real = clocks.stalled
    reg._stall = None  # swap the function under the same attachment, as a broken monitor would
    reg._stall = broken
    clocks.stalled = broken
    for _ in range(3):
        clocks.run(1.0)
        reg.progress("s")
    # every bad reading counted no stall: the registry's time advanced with the clock
    assert reg.get("s").last_progress == 1003.0
    warnings = [r for r in caplog.records if r.name == "loopwatch.sessions"]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    clocks.stalled = real
    clocks.run(2.0)
    assert kinds(reg.check()) == [("stuck", "s", None)]
    assert len(reg) == 1 and reg.counts()["processing"] == 1


def test_set_stall_clock_checks_its_argument(make):
    reg = make()
    with pytest.raises(TypeError, match="callable"):
        reg.set_stall_clock(3.0)


def test_time_and_the_status_document_exclude_the_loops_stalls():
    """registry.time() is the clock minus the stalls since set_stall_clock,
    and the status document's ages are on it: a session stuck for 30 s of
    unstalled time during which the loop also stalled 50 s shows 30 s."""
    from loopwatch import SessionRegistry
    from loopwatch.status.document import sessions_entry

    clock = [1000.0]
    stalled = [0.0]
    registry = SessionRegistry(stuck_after=10.0, evict_after=None, clock=lambda: clock[0])
    registry.set_stall_clock(lambda: stalled[0])
    registry.open("s", key="k", state="processing")
    assert registry.time() == 1000.0
    clock[0], stalled[0] = 1080.0, 50.0  # 80 s later, 50 of them stalled
    assert registry.time() == 1030.0
    assert [e.kind for e in registry.check()] == ["stuck"]
    (entry,) = sessions_entry([registry])["stuck"]
    assert entry["age_s"] == 30.0 and entry["since_progress_s"] == 30.0
    view = registry.get("s")
    assert registry.time() - view.last_progress == 30.0
    registry.set_stall_clock(None)  # detached: the time does not jump back
    assert registry.time() == 1030.0
    clock[0] = 1090.0
    assert registry.time() == 1040.0


def test_a_replaced_stall_clock_is_released_outside_the_lock(impl, clocks):
    """The stall clock runs outside the registry's lock, so calling the
    registry from it works, and references are released after the lock
    (docs/architecture.md: finalizers may call back); so a stall clock's
    finalizer, run when set_stall_clock lets it go, may call the registry.
    Was (both): the previous clock was released under the lock, and a
    finalizer calling the registry got RuntimeError('re-entered ... from a
    session id's __eq__') -- here a stall source whose owner closes its
    sessions when it goes away."""
    reg = new_registry(impl, clock=clocks.clock)
    reg.open("s")
    closed = []

    class Source:
        def stalled(self) -> float:
            return 0.0

        def __del__(self) -> None:
            try:
                closed.append(reg.close("s"))
            except RuntimeError as exc:
                closed.append(exc)

    source = Source()
    reg.set_stall_clock(source.stalled)
    del source  # the registry holds the only reference now
    reg.set_stall_clock(clocks.stalled)  # ... and lets it go
    assert closed == [True] and "s" not in reg
