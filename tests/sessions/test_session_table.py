"""The session table (issue 13, item 4), on both implementations unless
marked: handles (the fastest heartbeat, never another session's), queued()
and stuck() without a scan, the limits both implementations share, and
what only the C table has: threads contending for its native lock, a fork
while another thread holds it, the JSON its status thread serves without the
GIL, and its memory per session."""

from __future__ import annotations

import json
import os
import threading

import pytest

from loop_support import new_registry
from loopwatch.sessions.registry import MAX_QUEUE_DEPTH, MAX_SESSIONS


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make(impl, clock):
    def make(**kwargs):
        kwargs.setdefault("clock", clock)
        return new_registry(impl, **kwargs)

    return make


# -- handles ----------------------------------------------------------------------------

def test_a_handle_beats_exactly_its_own_session(make, clock):
    reg = make(stuck_after=10, evict_after=None)
    a = reg.open("a", state="processing")
    b = reg.open("b", state="processing")
    assert isinstance(a.handle, int) and a.handle != b.handle and a.handle != 0
    assert reg.get("a").handle == a.handle
    clock.t += 6
    reg.progress_handle(a.handle)
    assert reg.get("a").last_progress == clock.t
    assert reg.get("b").last_progress == 1000.0  # untouched
    clock.t += 5
    assert [e.session_id for e in reg.check()] == ["b"]


def test_a_handle_dies_with_its_session_and_never_names_a_later_one(make, clock):
    reg = make(stuck_after=10)
    old = reg.open("s", state="processing").handle
    assert reg.close("s")
    with pytest.raises(KeyError, match="handle"):
        reg.progress_handle(old)
    # the same id opened again (the native table reuses the very record)
    new = reg.open("s", state="processing").handle
    assert new != old
    with pytest.raises(KeyError):
        reg.progress_handle(old)
    clock.t += 5
    reg.progress_handle(new)
    assert reg.get("s").last_progress == clock.t


@pytest.mark.parametrize("bad", [-1, 2**64, 2**70, 12345])
def test_a_handle_that_was_never_given_is_unknown(make, bad):
    reg = make()
    reg.open("s")
    with pytest.raises(KeyError):
        reg.progress_handle(bad)
    assert len(reg) == 1


@pytest.mark.parametrize("bad", [None, "1", 1.0, True])
def test_a_handle_is_an_int(make, bad):
    reg = make()
    with pytest.raises(TypeError):
        reg.progress_handle(bad)


def test_an_evicted_session_s_handle_is_unknown(make, clock):
    reg = make(stuck_after=1, evict_after=0)
    h = reg.open("s", state="processing").handle
    clock.t += 1
    assert [e.kind for e in reg.check()] == ["stuck"]
    clock.t += 1
    assert [e.reason for e in reg.check()] == ["stuck_too_long"]
    with pytest.raises(KeyError):
        reg.progress_handle(h)


def test_a_stuck_session_recovers_by_handle(make, clock):
    reg = make(stuck_after=2, evict_after=None)
    h = reg.open("s", state="waiting").handle
    clock.t += 2
    assert [e.kind for e in reg.check()] == ["stuck"]
    clock.t += 1
    reg.progress_handle(h)
    events = reg.check()
    assert [(e.kind, e.reports, e.age) for e in events] == [("recovered", 1, 3.0)]
    assert not reg.get("s").stuck


def test_a_scope_works_by_handle_and_leaves_a_reopened_id_alone(make, clock):
    reg = make(stuck_after=10)
    with reg.session("s", state="processing") as scope:
        assert scope.handle == reg.get("s").handle
        clock.t += 1
        scope.progress()
        scope.set_state("waiting", queue_depth=2)
        assert scope.view.state == "waiting" and scope.view.queue_depth == 2
        reg.close("s")
        reg.open("s", state="idle")  # another session under the same id
        with pytest.raises(KeyError):
            scope.progress()
        assert not scope.is_open
    # the scope's exit closed its own session only
    assert "s" in reg and reg.get("s").state == "idle"


# -- queued(), stuck() ---------------------------------------------------------------------

def test_queued_is_the_sum_of_the_depths(make, clock):
    reg = make()
    for i in range(5):
        reg.open(i, state="queued")
        reg.set_state(i, "queued", queue_depth=i)
    assert reg.queued() == 0 + 1 + 2 + 3 + 4
    reg.set_state(4, "processing", queue_depth=1)
    assert reg.queued() == 7
    reg.close(3)
    assert reg.queued() == 4
    assert reg.queued() == sum(v.queue_depth or 0 for v in reg)


def test_stuck_lists_the_stuck_sessions_longest_without_progress_first(make, clock):
    reg = make(stuck_after=5, evict_after=None)
    for sid in ("a", "b", "c"):
        reg.open(sid, state="processing")
    reg.open("idle")
    clock.t += 2
    reg.progress("b")
    clock.t += 3
    assert [e.session_id for e in reg.check()] == ["a", "c"]
    clock.t += 2
    reg.check()
    assert [v.session_id for v in reg.stuck()] == ["a", "c", "b"]
    assert all(v.stuck and v.stuck_reports >= 1 for v in reg.stuck())
    reg.progress("a")
    reg.close("c")
    assert [v.session_id for v in reg.stuck()] == ["b"]


# -- limits both implementations share --------------------------------------------------

@pytest.mark.parametrize("depth", [-1, MAX_QUEUE_DEPTH + 1, 2**63])
def test_a_queue_depth_outside_32_bits_is_refused(make, depth):
    reg = make()
    reg.open("s")
    with pytest.raises(ValueError, match="queue_depth"):
        reg.set_state("s", "queued", queue_depth=depth)
    assert reg.get("s").state == "idle" and reg.queued() == 0  # nothing changed
    reg.set_state("s", "queued", queue_depth=MAX_QUEUE_DEPTH)
    assert reg.queued() == MAX_QUEUE_DEPTH


@pytest.mark.parametrize("n", [0, MAX_SESSIONS + 1])
def test_max_sessions_outside_the_table_s_range_is_refused(make, n):
    with pytest.raises(ValueError, match="max_sessions"):
        make(max_sessions=n)
    assert make(max_sessions=MAX_SESSIONS).max_sessions == MAX_SESSIONS


@pytest.mark.parametrize("years", [5, 10])
def test_a_check_years_after_the_last_one_still_reports_on_time(make, clock, years):
    """"Past the horizon (a registry nobody checked for years): filed at it,
    refiled when it comes due" (lw_sessions.c file_at, twin._schedule_at).
    A check moves the wheel's cursor at most one span of its top level
    (64**6 ms, about 2.2 years), so after a longer gap the cursor lags the
    registry's time. Was: the twin's check() then raised ValueError (its
    wheel refuses a deadline one second after its time, the horizon being
    counted from the lagging cursor) and left the session it was reporting
    filed nowhere: stuck, never reported or evicted again; the native table
    reported due sessions one check late per 2.2 years of gap."""
    reg = make(stuck_after=100, evict_after=None, max_report_interval=3600)
    reg.open("a", state="processing")
    clock.t += years * 365.25 * 86400
    assert [(e.session_id, e.kind, e.reports) for e in reg.check()] == [("a", "stuck", 1)]
    reg.open("b", state="processing")
    clock.t += 200  # a's second report (100 * 2 after the first) and b's first are due
    assert sorted((e.session_id, e.kind, e.reports) for e in reg.check()) == [
        ("a", "stuck", 2), ("b", "stuck", 1)]
    assert reg._filed() == 2 and reg.next_check() <= clock.t + 400


def test_an_interrupted_settlement_leaves_every_asked_session_due(make, clock, monkeypatch):
    """A check asks the store about every due session, then settles the
    answers one by one. Interrupted there (Ctrl-C while an event is built),
    the sessions not settled yet must stay in the wheel, due at once: was,
    both implementations left them filed nowhere, never checked again."""
    import sys

    reg = make(stuck_after=2, evict_after=None, store=lambda sid: True)
    for sid in ("a", "b", "c"):
        reg.open(sid, state="processing")
    clock.t += 2
    module = sys.modules[type(reg).__module__]
    real = module.SessionEvent
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "SessionEvent", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reg.check()
    monkeypatch.setattr(module, "SessionEvent", real)
    assert reg._filed() == 3  # the one being settled, and the two after it
    # the first was reported when the interrupt came (its event lost with
    # it); the two others are asked again at the very next check
    events = reg.check()
    assert sorted((e.session_id, e.kind, e.reports) for e in events) == [
        ("b", "stuck", 1), ("c", "stuck", 1)]
    assert [v.session_id for v in reg.stuck()] == ["a", "b", "c"]


def _interrupt_event(monkeypatch, reg, nth: int):
    """Make the nth SessionEvent a check builds raise KeyboardInterrupt
    (Ctrl-C while the event is built); returns a function undoing it."""
    import sys

    module = sys.modules[type(reg).__module__]
    real = module.SessionEvent
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == nth:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "SessionEvent", interrupted)
    return lambda: monkeypatch.setattr(module, "SessionEvent", real)


def test_an_interrupted_collection_leaves_no_session_filed_nowhere(make, clock, monkeypatch):
    """Ctrl-C while a check builds its first event, of three due: the two
    not built yet must be reported by the next check. Was: the C table had
    reported them already and dropped their events (next report only after
    the backoff); the twin left them filed nowhere, never checked again."""
    reg = make(stuck_after=2, evict_after=None)
    for sid in ("a", "b", "c"):
        reg.open(sid, state="processing")
    clock.t += 2
    undo = _interrupt_event(monkeypatch, reg, 1)
    with pytest.raises(KeyboardInterrupt):
        reg.check()
    undo()
    assert reg._filed() == 3
    events = reg.check()  # a's event was lost with the interrupt
    assert sorted((e.session_id, e.kind, e.reports) for e in events) == [
        ("b", "stuck", 1), ("c", "stuck", 1)]
    assert sorted(v.session_id for v in reg.stuck()) == ["a", "b", "c"]


def test_an_interrupted_collection_puts_the_store_questions_back(make, clock, monkeypatch):
    """A check collects two store questions (a, b), then is interrupted
    building an idle eviction's event (z): the questions must go back to
    the wheel and be asked at the next check. Was: both implementations
    lost them, and a and b were never checked again."""
    asked = []

    def store(sid):
        asked.append(sid)
        return True

    reg = make(stuck_after=2, evict_after=None, idle_timeout=2, store=store)
    reg.open("a", state="processing")
    reg.open("b", state="processing")
    reg.open("z", state="idle")
    clock.t += 2
    undo = _interrupt_event(monkeypatch, reg, 1)
    with pytest.raises(KeyboardInterrupt):
        reg.check()
    undo()
    assert asked == []
    events = reg.check()
    assert sorted(asked) == ["a", "b"]
    assert {(e.session_id, e.kind) for e in events} >= {("a", "stuck"), ("b", "stuck")}
    assert "z" not in reg and reg._filed() == 2


def test_a_check_interrupted_as_its_collection_returns_puts_the_questions_back(make, clock,
                                                                             monkeypatch):
    """The narrowest window: the collection is done, the check has not yet
    started asking (a signal between the two). The questions are the
    check's already: it puts them back."""
    asked = []
    reg = make(stuck_after=2, evict_after=None, store=lambda sid: asked.append(sid) or True)
    reg.open("a", state="processing")
    clock.t += 2
    real = reg._collect

    def collect_then_interrupt(*args):
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(reg, "_collect", collect_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        reg.check()
    monkeypatch.undo()
    assert asked == [] and reg._filed() == 1
    assert [(e.session_id, e.kind) for e in reg.check()] == [("a", "stuck")]
    assert asked == ["a"]


def test_out_of_memory_anywhere_in_open_or_close_changes_nothing(make):
    """Every allocation open() and close() make, failed in turn (CPython's
    own fault injection): each call either happens whole or raises
    MemoryError having changed nothing, and the registry goes on working.
    Was: the C table's lock stayed held when keeping an id's whole hash ran
    out of memory (every later call: "re-entered"), and open() could raise
    with the session open (a ghost no caller knew of)."""
    testcapi = pytest.importorskip("_testcapi")
    if not hasattr(testcapi, "set_nomemory"):
        pytest.skip("this CPython has no allocation fault injection")
    reg = make(stuck_after=60)
    for i in range(300):  # record numbers past the small-int cache
        reg.open(("warm", i))
    for i in range(300):
        reg.close(("warm", i))
    failed = {"open": 0, "close": 0}
    for k in range(40):
        sid = ("t", k, 10**30)  # not a plain id: its whole hash is kept aside
        for name, call in (("open", lambda: reg.open(sid, state="processing")),
                           ("close", lambda: reg.close(sid))):
            was_open = sid in reg
            testcapi.set_nomemory(k, k + 1)
            try:
                call()
                done = True
            except MemoryError:
                done = False
            finally:
                testcapi.remove_mem_hooks()
            failed[name] += not done
            expected = done if name == "open" else was_open and not done
            assert (sid in reg) == expected, (name, k, done)
            if sid in reg:
                assert reg.close(sid)
            assert (len(reg), reg._filed()) == (0, 0), (name, k, done)
            view = reg.open(("after", k), state="processing")  # still works
            assert reg.get(("after", k)).handle == view.handle
            assert reg.close(("after", k))
    assert failed["open"] > 0  # the injection reached it (close needs no memory)


def test_the_native_registry_refuses_a_wheel(impl):
    if impl.name != "native":
        pytest.skip("the pure registry takes any wheel")
    with pytest.raises(TypeError, match="wheel_factory"):
        impl.SessionRegistry(wheel_factory=impl.TimerWheel)


# -- the C table only ----------------------------------------------------------------------

native = pytest.mark.native_only


class SlowEq:
    """An id whose __eq__ lets other threads run (it sleeps, releasing the
    GIL) while the table's lock is held: every other caller must wait, not
    fail, and nothing may deadlock."""

    def __init__(self, name: str, entered: threading.Event | None = None,
                 release: threading.Event | None = None) -> None:
        self.name = name
        self.entered = entered
        self.release = release

    def __hash__(self) -> int:
        return 7  # all collide: every lookup runs __eq__

    def __eq__(self, other: object) -> bool:
        if self.entered is not None:
            self.entered.set()
            assert self.release is not None
            self.release.wait(10)
        return isinstance(other, SlowEq) and other.name == self.name


@native
@pytest.mark.timeout(60, method="thread")
def test_threads_contending_for_the_native_lock_wait_for_each_other(impl):
    if impl.name != "native":
        pytest.skip("the C table's lock")
    reg = impl.SessionRegistry(stuck_after=60, max_sessions=100_000)
    entered, release = threading.Event(), threading.Event()
    # the stored id's __eq__ is the one asked (as a dict asks)
    reg.open(SlowEq("x", entered, release), state="processing")
    blocker = SlowEq("x")  # equal to the stored one
    errors: list[BaseException] = []

    def heartbeat_the_slow_one():
        try:
            reg.progress(blocker)  # holds the lock inside __eq__ until released
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def churn(base: int):
        try:
            for i in range(2000):
                h = reg.open((base, i), state="processing").handle
                reg.progress((base, i))
                reg.progress_handle(h)
                reg.set_state((base, i), "waiting", queue_depth=i % 3)
                assert reg.close((base, i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    slow = threading.Thread(target=heartbeat_the_slow_one)
    slow.start()
    assert entered.wait(10)
    others = [threading.Thread(target=churn, args=(b,)) for b in range(4)]
    for t in others:
        t.start()
    # they are blocked behind the lock the slow __eq__ holds: no session of
    # theirs could have been opened
    assert not release.wait(0.2) and len(reg) == 1
    release.set()
    slow.join(30)
    for t in others:
        t.join(30)
    assert not slow.is_alive() and not any(t.is_alive() for t in others)
    assert errors == []
    assert len(reg) == 1 and reg.counts()["processing"] == 1 and reg.queued() == 0


@native
def test_an_eq_calling_back_in_raises_and_changes_nothing(impl):
    if impl.name != "native":
        pytest.skip("the C table's lock")
    reg = impl.SessionRegistry(stuck_after=60)

    class CallsBack:
        def __hash__(self):
            return 1

        def __eq__(self, other):
            reg.counts()  # under the lock: refused
            return True

    reg.open(CallsBack(), state="processing")
    with pytest.raises(RuntimeError, match="re-entered"):
        reg.progress(CallsBack())
    assert len(reg) == 1 and reg.counts()["processing"] == 1  # the lock was released


@native
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.timeout(60, method="thread")
def test_a_fork_while_another_thread_holds_the_lock_leaves_the_child_a_working_table(impl):
    if impl.name != "native":
        pytest.skip("the C table's lock")
    reg = impl.SessionRegistry(stuck_after=60)
    entered, release = threading.Event(), threading.Event()
    reg.open(SlowEq("x", entered, release), state="processing")
    holder = threading.Thread(target=reg.progress, args=(SlowEq("x"),))
    holder.start()
    assert entered.wait(10)  # the other thread is inside the lock, in __eq__
    pid = os.fork()
    if pid == 0:  # the child: the holder thread does not exist here
        code = 1
        try:
            reg.open("child", state="processing")
            reg.progress("child")
            code = 0 if len(reg) == 2 and reg.close("child") else 2
        finally:
            os._exit(code)
    release.set()
    holder.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert "child" not in reg and len(reg) == 1


@native
def test_the_status_thread_s_json_lists_stuck_sessions_escaped_longest_first(impl, clock):
    if impl.name != "native":
        pytest.skip("the C table's status reader")
    reg = impl.SessionRegistry(stuck_after=5, evict_after=None, clock=clock)
    forged = 'evil"\n\x1b[31m}'
    reg.open(forged, key="k\"\\", state="processing")
    reg.open("later", state="waiting")
    reg.open("fine", state="idle")
    reg.set_state(forged, "processing", queue_depth=3)
    clock.t += 2
    reg.progress("later")
    clock.t += 5
    reg.check()
    doc = json.loads(reg._live_json())
    assert doc["total"] == 3 and doc["counts"] == {"idle": 1, "queued": 0, "processing": 1,
                                                   "waiting": 1}
    assert doc["queued"] == 3 and doc["stuck_count"] == 2
    first, second = doc["stuck"]
    assert first["id"] == "evil\"\\n\\x1b[31m}" and first["key"] == 'k"\\'  # printable, escaped
    assert first["since_progress_s"] == 7.0 and first["queue_depth"] == 3
    assert second["id"] == "later" and second["key"] is None and second["since_progress_s"] == 5.0
    assert [s["reports"] for s in doc["stuck"]] == [1, 1]
    assert len(json.loads(reg._live_json(max_stuck=1))["stuck"]) == 1


@native
def test_a_record_is_one_cache_line_and_the_table_stays_near_it(impl):
    if impl.name != "native":
        pytest.skip("the C table")
    from loopwatch.sessions import native as table

    assert table.RECORD_BYTES == 64
    n = 200_000
    reg = impl.SessionRegistry(max_sessions=n)
    for i in range(n):
        reg.open(i, state="processing")
    per_session = reg._native_memory() / n
    # 64 bytes of record, 4 bytes an index slot (the index 3/8 to 3/4 full)
    assert 64 < per_session <= 64 + 4 / 0.375 + 1, per_session
    for i in range(n):
        reg.close(i)
    assert len(reg) == 0 and reg._filed() == 0


@native
def test_a_clock_that_is_time_monotonic_is_read_in_c(impl):
    import time

    if impl.name != "native":
        pytest.skip("the C table")
    reg = impl.SessionRegistry()
    before = time.monotonic()
    view = reg.open("s")
    after = time.monotonic()
    assert before <= view.opened_at <= after  # the same clock, converted alike


@native
@pytest.mark.timeout(60, method="thread")
def test_a_native_monitor_s_stall_clock_is_read_in_c(impl, loop):
    """Diagnostics attaches monitor.stalled_seconds: the C table reads the
    sampler's stall clock itself (no Python call per heartbeat, and the
    status thread can read it while Python cannot run), and the registry's
    time stands still while the loop is stalled."""
    import asyncio
    import time

    from loop_support import LoopThread

    if impl.name != "native":
        pytest.skip("the C table")
    reg = impl.SessionRegistry(stuck_after=60)
    runner = LoopThread(loop)
    monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.05)
    try:
        runner.call(monitor.start)
        reg.set_stall_clock(monitor.stalled_seconds)
        assert reg._stall_source() == "native"
        blocked, release = threading.Event(), threading.Event()

        def block():
            blocked.set()
            release.wait(30)  # a stall for as long as the test needs (the GIL is free)

        loop.call_soon_threadsafe(block)
        assert blocked.wait(10)
        deadline = time.monotonic() + 10
        while monitor.current_stall() is None:  # seen by the sampler and reported
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t1, w1 = reg.time(), time.monotonic()
        time.sleep(0.1)
        t2, w2 = reg.time(), time.monotonic()
        release.set()
        assert w2 - w1 >= 0.1
        assert abs(t2 - t1) < 1e-3, (t2 - t1)  # the stalled time does not count
        while monitor.current_stall() is not None:  # the loop runs again, the stall ended
            assert time.monotonic() < deadline + 10
            time.sleep(0.01)
        t3 = reg.time()
        time.sleep(0.05)
        assert reg.time() - t3 >= 0.04  # and time counts again once it ends
        reg.set_stall_clock(None)
        assert reg._stall_source() is None
    finally:
        runner.call(monitor.stop)
        runner.stop()


def test_views_of_many_sessions_are_all_there(make, clock):
    reg = make(max_sessions=5000)
    for i in range(5000):
        reg.open(i, key=str(i))
    views = {v.session_id: v for v in reg}
    assert len(views) == 5000 and all(v.key == str(i) for i, v in views.items())
