"""SessionRegistry on both implementations (the native C table, and the
pure-Python twin on the pure wheel), driven by a fake clock: the seed
report's scenario, every event kind, lifetimes, bad input."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import sys
import threading

import pytest

from loop_support import new_loop, new_registry

from loopwatch import RegistryFull, SessionEvent, SessionRegistry, SessionView
from loopwatch.sessions.registry import STATES


def run_on(kind: str, coro):
    """Run ``coro`` on a fresh loop of ``kind`` (asyncio or uvloop)."""
    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as runner:
        return runner.run(coro)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


class CountingWheel:
    """Wraps a TimerWheel and counts what check() makes it do."""

    def __init__(self, wheel) -> None:
        self.wheel = wheel
        self.expired = 0

    def __getattr__(self, name):
        return getattr(self.wheel, name)

    def schedule(self, key, deadline):
        self.wheel.schedule(key, deadline)

    def __len__(self):
        return len(self.wheel)

    def expire(self, now):
        got = self.wheel.expire(now)
        self.expired += len(got)
        return got


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make(impl, clock):
    def make(counting=False, **kwargs):
        if counting and impl.name == "python":
            kwargs["wheel_factory"] = lambda *a, **k: CountingWheel(impl.TimerWheel(*a, **k))
        kwargs.setdefault("clock", clock)
        return new_registry(impl, **kwargs)

    return make


def kinds(events):
    return [(e.kind, e.session_id, e.reason, e.reports) for e in events]


# -- the seed report ----------------------------------------------------------------

def test_seed_report_ghost_is_reported_then_backs_off_then_is_evicted(impl, make, clock, caplog):
    """A session left `processing` by a client that vanished: reported once,
    then with backoff, then evicted as a ghost by the store check; a checker
    running every 30 s never touches it in between, and the registry ends
    empty."""
    store = {"41befe2c-8c01-4f75-a662-2d47eb34d7bc", "healthy"}
    asked = []

    def in_store(session_id):
        asked.append((clock.t, session_id))
        return session_id in store

    evicted = []
    reg = make(stuck_after=120, report_backoff=2, max_report_interval=1800,
               evict_after=3600, store=in_store, on_evict=evicted.append, counting=True)
    ghost = "41befe2c-8c01-4f75-a662-2d47eb34d7bc"
    t0 = clock.t
    reg.open(ghost, key="agent:main:main", state="processing")
    reg.set_state(ghost, "processing", queue_depth=0)
    reg.open("healthy", key="agent:main:cron", state="processing")

    timeline = []
    caplog.set_level(logging.INFO, logger="loopwatch.sessions")
    while len(reg) and clock.t - t0 < 4 * 3600:
        clock.advance(30)  # the seed report's checker period
        if "healthy" in reg:
            reg.progress("healthy")  # the healthy session keeps moving
        if clock.t - t0 == 390:
            store.discard(ghost)  # the client vanished; its store entry was cleaned
            reg.close("healthy")
        for event in reg.check():
            timeline.append((clock.t - t0, event.kind, event.reason, event.reports))

    assert timeline == [
        (120, "stuck", None, 1),
        (360, "stuck", None, 2),      # backoff: 240 s later
        (840, "evicted", "ghost", 2),  # next report, 480 s later: the store no longer has it
    ]
    assert len(reg) == 0 and ghost not in reg
    assert reg.counts() == dict.fromkeys(STATES, 0)
    assert reg._filed() == 0
    # the store was asked at each report only, never on the 30 s ticks
    assert [(t - t0, sid) for t, sid in asked] == [(120, ghost), (360, ghost), (840, ghost)]
    if impl.name == "python":
        # only due entries ever came out of the wheel: 3 events, 3 expiries
        assert reg._wheel.expired == 3
    else:
        # the C table files each session at its next wake and leaves it
        # there on heartbeats: a check looks at a session only when its
        # slot comes due (the healthy one, every ~120 s of heartbeats,
        # through at most 3 levels), never at every 30 s tick
        assert reg._examined() <= 3 + 3 * 4
    assert [v.session_id for v in evicted] == [ghost]
    lines = [r.getMessage() for r in caplog.records if r.name == "loopwatch.sessions"]
    assert lines[0] == (
        f"stuck session: sessionId={ghost} sessionKey=agent:main:main state=processing "
        "age=120s queueDepth=0 reports=1 nextReportIn=240s"
    )
    assert lines[1].endswith("age=360s queueDepth=0 reports=2 nextReportIn=480s")
    assert lines[2] == (
        f"session evicted: sessionId={ghost} sessionKey=agent:main:main state=processing "
        "reason=ghost age=840s queueDepth=0 reports=2"
    )
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 3


# -- stuck, backoff, recovery, eviction --------------------------------------------------

def test_backoff_is_capped_at_max_report_interval(make, clock):
    reg = make(stuck_after=10, report_backoff=3, max_report_interval=100, evict_after=None)
    reg.open("s", state="waiting")
    t0 = clock.t
    times = []
    for _ in range(60):
        clock.advance(5)
        for e in reg.check():
            assert e.kind == "stuck" and e.reports == len(times) + 1
            times.append(clock.t - t0)
    # stuck at 10, then gaps of 30, 90, 100 (capped), 100, ...
    assert times == [10, 40, 130, 230]
    assert reg.get("s").stuck and reg.get("s").stuck_reports == 4


def test_progress_and_state_changes_postpone_and_recover(make, clock, caplog):
    caplog.set_level(logging.INFO, logger="loopwatch.sessions")
    reg = make(stuck_after=60, evict_after=None)
    reg.open("a", key="k", state="processing")
    clock.advance(59)
    reg.progress("a")
    clock.advance(59)
    assert reg.check() == []
    clock.advance(1)
    assert kinds(reg.check()) == [("stuck", "a", None, 1)]
    clock.advance(15)
    reg.progress("a")
    events = reg.check()
    assert kinds(events) == [("recovered", "a", None, 1)]
    assert events[0].age == 75 and not events[0].session.stuck
    assert not reg.get("a").stuck and reg.get("a").stuck_reports == 0
    assert "session recovered: sessionId=a sessionKey=k state=processing stuckFor=75s" in caplog.text
    # stuck again later, then a change of state recovers it too
    clock.advance(60)
    assert kinds(reg.check()) == [("stuck", "a", None, 1)]
    reg.set_state("a", "waiting")
    assert kinds(reg.check()) == [("recovered", "a", None, 1)]
    # and the state change restarted the stuck clock
    clock.advance(59.5)
    assert reg.check() == []
    clock.advance(0.5)
    assert kinds(reg.check()) == [("stuck", "a", None, 1)]


def test_idle_and_queued_sessions_never_get_stuck(make, clock):
    reg = make(stuck_after=1)
    reg.open("i")
    reg.open("q", state="queued")
    clock.advance(10_000)
    assert reg.check() == [] and reg._filed() == 0
    reg.set_state("q", "processing")
    clock.advance(1)
    assert kinds(reg.check()) == [("stuck", "q", None, 1)]


def test_evicted_when_stuck_too_long(make, clock):
    seen = []
    reg = make(stuck_after=100, report_backoff=2, evict_after=300, on_evict=seen.append)
    reg.open("s", state="processing")
    t0 = clock.t
    out = []
    while "s" in reg:
        clock.advance(10)
        out += [(clock.t - t0, e.kind, e.reason, e.next_report_at) for e in reg.check()]
    # reports at 100 (next at 300) and 300 (the next, at 700, comes after the eviction)
    assert out == [
        (100, "stuck", None, t0 + 300),
        (300, "stuck", None, None),
        (400, "evicted", "stuck_too_long", None),
    ]
    assert [v.session_id for v in seen] == ["s"] and len(reg) == 0


def test_idle_timeout_evicts_idle_sessions_only(make, clock):
    reg = make(stuck_after=1000, idle_timeout=50)
    reg.open("idle")
    reg.open("busy", state="processing")
    clock.advance(40)
    reg.progress("idle")
    clock.advance(49)
    assert reg.check() == []
    clock.advance(1)
    events = reg.check()
    assert kinds(events) == [("evicted", "idle", "idle", 0)] and events[0].age == 50
    assert "busy" in reg and "idle" not in reg


def test_ghost_evicted_at_once_when_it_becomes_stuck(make, clock):
    reg = make(stuck_after=10, store=lambda sid: sid != "ghost")
    reg.open("ghost", state="processing")
    reg.open("real", state="processing")
    clock.advance(10)
    events = reg.check()
    assert sorted(kinds(events)) == [("evicted", "ghost", "ghost", 0), ("stuck", "real", None, 1)]
    assert list(reg.counts().values()) == [0, 0, 1, 0]


def test_store_errors_keep_the_session(make, clock, caplog):
    def broken(sid):
        raise OSError("store down")

    reg = make(stuck_after=10, store=broken)
    reg.open("s", state="processing")
    clock.advance(10)
    assert kinds(reg.check()) == [("stuck", "s", None, 1)]
    assert "store down" in caplog.text and "s" in reg


def test_progress_during_the_store_call_wins(make, clock):
    reg = None

    def store(sid):
        reg.progress(sid)  # the session moved while the store was asked
        return False

    reg = make(stuck_after=10, store=store)
    reg.open("s", state="processing")
    clock.advance(10)
    assert reg.check() == []
    assert "s" in reg and not reg.get("s").stuck
    clock.advance(9.9)
    assert reg.check() == []


def test_async_store_is_awaited_by_acheck(make, clock):
    async def store(sid):
        await asyncio.sleep(0)
        return sid == "kept"

    reg = make(stuck_after=5, store=store)
    reg.open("kept", state="processing")
    reg.open("gone", state="processing")
    clock.advance(5)
    with pytest.raises(TypeError, match="acheck"):
        reg.check()
    events = asyncio.run(reg.acheck())
    assert sorted(kinds(events)) == [("evicted", "gone", "ghost", 0), ("stuck", "kept", None, 1)]


def test_on_evict_errors_are_logged_not_raised(make, clock, caplog):
    def on_evict(view):
        raise RuntimeError("callback broke")

    reg = make(idle_timeout=1, on_evict=on_evict)
    reg.open("s")
    clock.advance(1)
    assert kinds(reg.check()) == [("evicted", "s", "idle", 0)]
    assert "callback broke" in caplog.text


def test_check_with_a_late_clock_reports_once(make, clock):
    reg = make(stuck_after=10, report_backoff=2, evict_after=None)
    reg.open("s", state="processing")
    clock.advance(10_000)  # the checker was blocked for a long time
    events = reg.check()
    assert kinds(events) == [("stuck", "s", None, 1)]
    assert events[0].age == 10_000 and events[0].next_report_at == clock.t + 20
    assert reg.check() == []


def test_next_check_is_never_after_the_next_event(make, clock):
    reg = make(stuck_after=100, evict_after=None)
    assert reg.next_check() is None
    reg.open("s", state="processing")
    first = reg.next_check()
    assert first is not None and first <= clock.t + 100
    clock.t = max(first, clock.t)
    while not reg.check():
        nxt = reg.next_check()
        assert nxt > clock.t
        clock.t = nxt
    assert clock.t == 1100


# -- views, counts, capacity ---------------------------------------------------------

def test_views_counts_and_iteration(make, clock):
    reg = make()
    v = reg.open("a", key=("user", 7), state="queued")
    assert isinstance(v, SessionView)
    assert (v.session_id, v.key, v.state, v.queue_depth) == ("a", ("user", 7), "queued", None)
    assert v.opened_at == v.state_since == v.last_progress == clock.t and v.stuck_reports == 0
    with pytest.raises(AttributeError):
        v.state = "idle"  # read-only
    clock.advance(3)
    reg.set_state("a", "processing", queue_depth=2)
    reg.open("b")
    reg.open("c", state="waiting")
    assert reg.counts() == {"idle": 1, "queued": 0, "processing": 1, "waiting": 1}
    view = reg.get("a")
    assert view.state_since == clock.t and view.queue_depth == 2 and view.opened_at == clock.t - 3
    assert sorted(v.session_id for v in reg) == ["a", "b", "c"]
    assert len(reg) == 3 and "b" in reg and "z" not in reg
    assert reg.close("b") is True and reg.close("b") is False
    assert reg.counts() == {"idle": 0, "queued": 0, "processing": 1, "waiting": 1}
    reg.set_state("a", "processing", queue_depth=0)  # same state: only the depth
    assert reg.get("a").state_since == clock.t and reg.get("a").queue_depth == 0


def test_registry_full_evicts_nothing(make):
    reg = make(max_sessions=2)
    reg.open(1)
    reg.open(2)
    with pytest.raises(RegistryFull, match="max_sessions=2"):
        reg.open(3)
    assert sorted(v.session_id for v in reg) == [1, 2]
    reg.close(1)
    reg.open(3)


def test_bad_input(make):
    reg = make()
    reg.open("a")
    with pytest.raises(KeyError, match="nope"):
        reg.progress("nope")
    with pytest.raises(KeyError, match="nope"):
        reg.set_state("nope", "idle")
    with pytest.raises(KeyError, match="nope"):
        reg.get("nope")
    with pytest.raises(KeyError, match="nope"):
        reg.bind_task("nope", asyncio.Future)
    with pytest.raises(ValueError, match="idle, queued, processing, waiting"):
        reg.set_state("a", "running")
    with pytest.raises(ValueError, match="valid states"):
        reg.open("b", state="done")
    with pytest.raises(ValueError, match="already open"):
        reg.open("a")
    with pytest.raises(ValueError):
        reg.set_state("a", "idle", queue_depth=-1)
    with pytest.raises(TypeError):
        reg.set_state("a", "idle", queue_depth=1.5)
    with pytest.raises(TypeError):
        reg.open(["unhashable"])
    with pytest.raises(ValueError, match="finite"):
        reg.check(math.nan)
    assert reg.counts()["idle"] == 1 and len(reg) == 1
    for name in ("stuck_after", "report_backoff", "max_report_interval", "evict_after",
                 "idle_timeout"):
        for bad in (-1, math.nan, math.inf):
            with pytest.raises(ValueError, match=name):
                make(**{name: bad})
    with pytest.raises(ValueError, match="stuck_after"):
        make(stuck_after=0)
    with pytest.raises(ValueError, match="report_backoff"):
        make(report_backoff=0.5)
    with pytest.raises(ValueError, match="one year"):
        make(max_report_interval=1e9)
    with pytest.raises(TypeError):
        make(stuck_after="120")
    with pytest.raises(ValueError):
        make(max_sessions=0)
    with pytest.raises(TypeError):
        make(store="not callable")


# -- lifetimes that cannot leak ----------------------------------------------------------

def test_with_closes_on_every_way_out(make):
    reg = make()
    with reg.session("ok", key="k") as s:
        assert s.view.key == "k" and s.is_open
        s.set_state("processing")
        s.progress()
    assert "ok" not in reg
    with pytest.raises(ZeroDivisionError):
        with reg.session("boom"):
            1 / 0
    assert len(reg) == 0


def test_scope_does_not_close_a_newer_session_under_the_same_id(make, clock):
    reg = make(idle_timeout=1)
    with reg.session("s") as scope:
        clock.advance(1)
        reg.check()  # evicted while inside the block
        assert not scope.is_open
        reg.open("s", state="processing")  # a new client took the id
    assert reg.get("s").state == "processing"


def test_async_with_closes_on_cancel_timeout_and_close(make, loop_kind):
    reg = make()

    async def handler(sid, entered):
        async with reg.session(sid, state="processing"):
            entered.set()
            await asyncio.Event().wait()

    async def main():
        e1, e2 = asyncio.Event(), asyncio.Event()
        t = asyncio.create_task(handler("cancelled", e1))
        await e1.wait()
        assert "cancelled" in reg
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert "cancelled" not in reg

        async def timed():
            async with asyncio.timeout(0.01):
                await handler("timeout", e2)

        with pytest.raises(TimeoutError):
            await timed()
        assert e2.is_set() and "timeout" not in reg  # it was open, then closed

        # a coroutine that is closed without finishing (GeneratorExit)
        coro = handler("closed", asyncio.Event())
        coro.send(None)
        assert "closed" in reg
        coro.close()
        assert "closed" not in reg

    run_on(loop_kind, main())
    assert len(reg) == 0


def test_calling_init_again_is_refused_and_changes_nothing(make, clock):
    """A registry is configured once. Was: the native one refused a second
    __init__ (RuntimeError) only after RegistryBase.__init__ had replaced
    its options, store, on_evict and clock and dropped its listeners, while
    the C table went on with the old configuration; the twin started over,
    silently dropping every session (and making a new lock, while another
    thread may hold the old one)."""
    evicted, heard = [], []
    reg = make(stuck_after=5, evict_after=0, on_evict=evicted.append)
    reg.add_event_listener(heard.append)
    reg.open("s", state="processing")
    with pytest.raises(RuntimeError, match="already initialized"):
        reg.__init__(stuck_after=60, store=lambda sid: False, on_evict=None,
                     clock=lambda: 0.0)
    assert reg.stuck_after == 5 and len(reg) == 1 and reg.time() == clock.t
    clock.advance(5)
    assert kinds(reg.check()) == [("stuck", "s", None, 1)]  # no store asked: none was given
    clock.advance(1)
    assert kinds(reg.check()) == [("evicted", "s", "stuck_too_long", 1)]
    assert [v.session_id for v in evicted] == ["s"] and len(heard) == 2


def test_bind_task_closes_when_the_task_ends(make, loop_kind):
    reg = make(idle_timeout=1)

    async def main():
        loop = asyncio.get_running_loop()
        gate = asyncio.Event()

        async def work():
            await gate.wait()

        reg.open("done")
        reg.open("cancelled")
        reg.open("failed")
        t_done = asyncio.create_task(work())
        t_cancel = asyncio.create_task(work())

        async def fail():
            raise RuntimeError("handler crashed")

        t_fail = asyncio.create_task(fail())
        reg.bind_task("done", t_done)
        reg.bind_task("cancelled", t_cancel)
        reg.bind_task("failed", t_fail)
        await asyncio.sleep(0)
        t_cancel.cancel()
        await asyncio.gather(t_cancel, t_fail, return_exceptions=True)
        await asyncio.sleep(0)
        assert "cancelled" not in reg and "failed" not in reg and "done" in reg
        gate.set()
        await t_done
        await asyncio.sleep(0)
        assert len(reg) == 0
        # a task that already ended closes the session right away
        reg.open("late")
        reg.bind_task("late", t_done)
        await asyncio.sleep(0)
        assert "late" not in reg
        # rebinding: only the latest task counts
        reg.open("re")
        first = asyncio.create_task(work())
        second = loop.create_future()
        reg.bind_task("re", first)
        reg.bind_task("re", second)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.sleep(0)
        assert "re" in reg
        second.set_result(None)
        await asyncio.sleep(0)
        assert "re" not in reg

    run_on(loop_kind, main())


def test_an_eviction_leaves_the_task_of_a_session_opened_meanwhile_bound(make, clock, loop_kind,
                                                                       monkeypatch):
    """check() builds its events once the table's lock is released, and the
    GIL can pass to another thread there (SessionView's __init__ is Python
    code): that thread may open a session, which takes the record an
    eviction just freed, and bind its task. Was (native): building the
    eviction's event then dropped that new binding (the bound tasks were
    keyed by record index, whatever the generation), so the new session
    outlived its task and its view showed no task. The other thread's calls
    run here from SessionView's __init__; where that is under the registry's
    lock (the twin builds its views under it) they are refused, as another
    thread would have waited, and made after check() instead."""
    reg = make(stuck_after=1, evict_after=0)
    module = sys.modules[type(reg).__module__]

    async def main():
        task = asyncio.get_running_loop().create_future()
        armed = []

        def open_and_bind():
            reg.open("new", state="idle")
            reg.bind_task("new", task)

        class Interleaved(SessionView):
            __slots__ = ()

            def __init__(self, *args, **kwargs):
                if armed:
                    armed.clear()
                    try:
                        open_and_bind()  # another thread, while check() builds its events
                    except RuntimeError:
                        pass  # the registry's lock is held here: that thread waits
                super().__init__(*args, **kwargs)

        reg.open("old", state="processing")
        clock.advance(1)
        assert kinds(reg.check()) == [("stuck", "old", None, 1)]
        clock.advance(1)
        monkeypatch.setattr(module, "SessionView", Interleaved)
        armed.append(True)
        events = reg.check()
        monkeypatch.undo()
        assert kinds(events) == [("evicted", "old", "stuck_too_long", 1)]
        if "new" not in reg:
            open_and_bind()
        assert reg.get("new").task is task
        task.set_result(None)
        await asyncio.sleep(0)
        assert "new" not in reg  # closed when its task ended

    run_on(loop_kind, main())


@pytest.mark.parametrize("how", ["close", "scope"])
def test_a_bound_task_is_released_after_the_lock(make, loop, how):
    """A session's references (id, key, bound task) are released after the
    registry's lock, so their finalizers may call the registry
    (docs/architecture.md). Was (twin): close() dropped the bound task under
    its lock, and a finalizer that calls the registry got RuntimeError."""
    reg = make()
    calls = []

    class Task(asyncio.Future):
        def __del__(self):
            try:
                calls.append(reg.open("reborn").session_id)
            except RuntimeError as exc:
                calls.append(exc)

    scope = reg.session("s")
    scope.__enter__()
    reg.bind_task("s", Task(loop=loop))  # the registry holds the only reference
    gc.collect()
    assert calls == []
    if how == "close":
        assert reg.close("s") is True
    else:
        scope.__exit__(None, None, None)
    assert calls == ["reborn"] and "reborn" in reg and "s" not in reg


def test_on_evict_can_cancel_the_bound_task(make, clock, loop_kind):
    reg = make(stuck_after=10, evict_after=0, on_evict=lambda v: v.task.cancel())

    async def main():
        async def handler():
            async with reg.session("s", state="processing") as s:
                reg.bind_task(s.session_id, asyncio.current_task())
                await asyncio.get_running_loop().create_future()  # hangs forever

        task = asyncio.create_task(handler())
        await asyncio.sleep(0)
        clock.advance(10)
        assert kinds(reg.check()) == [("stuck", "s", None, 1)]
        events = reg.check()
        assert kinds(events) == [("evicted", "s", "stuck_too_long", 1)]
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(reg) == 0

    run_on(loop_kind, main())


def test_threads_hammer_one_registry(make, clock):
    reg = make(stuck_after=1e-3)
    errors = []

    def worker(n):
        try:
            for i in range(300):
                sid = (n, i)
                reg.open(sid, state="processing")
                reg.progress(sid)
                reg.set_state(sid, "waiting", queue_depth=i)
                if i % 3 == 0:
                    reg.close(sid)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def checker(stop):
        while not stop.is_set():
            clock.t += 1e-3
            reg.check()

    stop = threading.Event()
    c = threading.Thread(target=checker, args=(stop,))
    c.start()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    c.join()
    assert errors == []
    assert len(reg) == 4 * 200
    counts = reg.counts()
    assert sum(counts.values()) == len(reg) == counts["waiting"]
    assert sorted(v.session_id for v in reg) == sorted(
        (n, i) for n in range(4) for i in range(300) if i % 3
    )


def test_event_str_is_the_log_line(make, clock):
    reg = make(stuck_after=1)
    reg.open("x", state="processing")
    clock.advance(1)
    (event,) = reg.check()
    assert isinstance(event, SessionEvent)
    assert str(event) == (
        "stuck session: sessionId=x sessionKey=- state=processing age=1s queueDepth=- "
        "reports=1 nextReportIn=2s"
    )


def test_closed_sessions_are_not_kept_alive(make):
    reg = make()

    class Key:
        pass

    import weakref

    key = Key()
    ref = weakref.ref(key)
    with reg.session("s", key=key):
        pass
    del key
    gc.collect()
    assert ref() is None


def test_watch_checks_until_cancelled(make, clock, loop_kind):
    async def main():
        evicted = asyncio.Event()
        seen = []

        def on_evict(view):
            seen.append(view.session_id)
            evicted.set()

        reg = make(stuck_after=5, evict_after=0, on_evict=on_evict)
        reg.open("s", state="processing")
        watcher = asyncio.create_task(reg.watch(max_interval=0.01))
        clock.advance(5)  # stuck now; evicted at the check after the report
        await asyncio.wait_for(evicted.wait(), 30)
        assert seen == ["s"] and len(reg) == 0
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher

    run_on(loop_kind, main())


def test_next_check_is_now_when_a_recovery_waits(make, clock):
    reg = make(stuck_after=5, evict_after=None)
    reg.open("s", state="processing")
    clock.advance(5)
    assert kinds(reg.check()) == [("stuck", "s", None, 1)]
    reg.progress("s")
    assert reg.next_check() == clock.t
    assert kinds(reg.check()) == [("recovered", "s", None, 1)]
    assert reg.next_check() > clock.t


def test_a_registry_nobody_checked_for_years_still_takes_heartbeats(make, clock):
    reg = make(stuck_after=120, evict_after=None)
    reg.open("s", state="processing")
    clock.advance(3 * 365 * 86400.0)  # past the wheel's two-year horizon
    reg.progress("s")
    reg.open("t", state="processing")
    assert reg.check() == []  # filed early at the horizon: refiled, no event
    clock.advance(119)
    assert reg.check() == []
    clock.advance(1)
    assert sorted(kinds(reg.check())) == [("stuck", "s", None, 1), ("stuck", "t", None, 1)]


class NoScanDict(dict):
    """A session table that fails the test if anything walks it."""

    def _scan(self, *args):
        raise AssertionError("the registry scanned its sessions")

    __iter__ = values = items = keys = _scan


def test_check_never_scans_the_sessions(impl, make, clock):
    reg = make(stuck_after=100, idle_timeout=50, evict_after=None)
    if impl.name == "python":
        reg._sessions = NoScanDict()
    for i in range(2000):
        reg.open(i, state="processing" if i % 2 else "idle")
    for _ in range(4):
        clock.advance(10)
        assert reg.check() == []
    if impl.name == "native":
        assert reg._examined() == 0  # the C table looked at no session at all
    clock.advance(10)  # t = 50: the idle ones are due, and only they are touched
    events = reg.check()
    if impl.name == "native":  # each at most once per level it came down
        assert reg._examined() <= 3 * 1000
    assert len(events) == 1000 and {e.reason for e in events} == {"idle"}
    assert reg.counts() == {"idle": 0, "queued": 0, "processing": 1000, "waiting": 0}
    clock.advance(49)
    assert reg.check() == []
    clock.advance(1)
    events = reg.check()
    assert len(events) == 1000 and {e.kind for e in events} == {"stuck"} and len(reg) == 1000


def test_store_returning_an_awaitable_to_check_keeps_the_session(make, clock, caplog):
    async def lookup(sid):
        return False

    reg = make(stuck_after=1, store=lambda sid: lookup(sid))  # not a coroutine function
    reg.open("s", state="processing")
    clock.advance(1)
    assert kinds(reg.check()) == [("stuck", "s", None, 1)]  # no "never awaited" leak
    assert "use acheck()" in caplog.text and "s" in reg


def test_async_store_errors_keep_the_session(make, clock, caplog):
    async def store(sid):
        raise OSError("store down")

    reg = make(stuck_after=1, store=store)
    reg.open("s", state="processing")
    clock.advance(1)
    assert kinds(asyncio.run(reg.acheck())) == [("stuck", "s", None, 1)]
    assert "store down" in caplog.text


class Interrupt(BaseException):
    pass


def test_an_interrupted_store_call_loses_nothing(make, clock, caplog):
    caplog.set_level(logging.INFO, logger="loopwatch.sessions")
    calls = []

    def store(sid):
        calls.append(sid)
        if calls == ["a", "b"]:
            raise Interrupt()  # once, while asking about b
        return False

    evicted = []
    reg = make(stuck_after=1, evict_after=None, store=store, on_evict=evicted.append)
    for sid in "abc":
        reg.open(sid, state="processing")
    clock.advance(1)
    with pytest.raises(Interrupt):
        reg.check()
    # a was answered (a ghost: evicted and logged); b and c count as present
    assert [v.session_id for v in evicted] == ["a"]
    assert sorted(v.session_id for v in reg) == ["b", "c"]
    assert all(reg.get(sid).stuck for sid in "bc")
    assert caplog.text.count("stuck session") == 2 and "reason=ghost" in caplog.text
    # and they stay scheduled: the next report comes on time
    clock.advance(2)
    assert sorted(kinds(reg.check())) == [("evicted", "b", "ghost", 1), ("evicted", "c", "ghost", 1)]


def test_acheck_cancelled_mid_store_loses_nothing(make, clock, loop_kind):
    async def main():
        gate = asyncio.Event()

        async def store(sid):
            await gate.wait()
            return True

        reg = make(stuck_after=1, evict_after=None, store=store)
        reg.open("s", state="processing")
        clock.advance(1)
        task = asyncio.create_task(reg.acheck())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reg.get("s").stuck and reg.get("s").stuck_reports == 1
        gate.set()
        clock.advance(2)
        assert kinds(await reg.acheck()) == [("stuck", "s", None, 2)]

    run_on(loop_kind, main())
