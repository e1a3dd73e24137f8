"""Hostile callers (issue 9, sessions part), on both implementations: keys
and session ids whose __hash__/__eq__/__del__ raise or call back in, clocks
that re-enter or return garbage, a `now` from another clock, ids that try to
forge log lines. The rule (docs/architecture.md): never crash, never corrupt;
re-entry works or raises RuntimeError; an exception leaves every structure as
before or as after the call."""

from __future__ import annotations

import logging
import math

import pytest

from loop_support import new_registry
from loopwatch.sessions.registry import MAX_CHECK_AHEAD, STATES


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Hostile:
    """A key equal to others with the same name; `on_hash` / `on_eq` run
    (and may raise or call back in) when armed."""

    def __init__(self, name, on_hash=None, on_eq=None, hash_value=None) -> None:
        self.name = name
        self.on_hash = on_hash
        self.on_eq = on_eq
        self.hash_value = hash_value
        self.armed = False

    def __hash__(self):
        if self.armed and self.on_hash is not None:
            self.on_hash()
        return hash(self.name) if self.hash_value is None else self.hash_value

    def __eq__(self, other):
        if self.armed and self.on_eq is not None:
            self.on_eq()
        return isinstance(other, Hostile) and other.name == self.name

    def __repr__(self):
        return f"Hostile({self.name!r})"


def wheel_state(w):
    """Everything observable about a wheel, without touching the keys' code."""
    return len(w), w.time, w.next_deadline(), sorted(map(repr, w))


def fail():
    raise ValueError("hostile")


# -- 1. the wheel, re-entered from a key's __hash__/__eq__ --------------------------

def test_wheel_clear_from_the_hash_schedule_calls_then_cancel(impl):
    """Was: native segfault (an unchecked list store after clear() emptied
    the key table underneath), twin KeyError."""
    w = impl.TimerWheel(0.001, now=0.0)
    w.schedule("a", 1.0)
    before = wheel_state(w)
    key = Hostile("k", on_hash=w.clear)
    key.armed = True
    with pytest.raises(RuntimeError, match="re-entered"):
        w.schedule(key, 2.0)
    assert wheel_state(w) == before
    assert w.cancel("a") is True and w.cancel("a") is False and len(w) == 0
    key.armed = False
    w.schedule(key, 2.0)
    assert w.expire(3.0) == [key] and len(w) == 0


@pytest.mark.parametrize("call", ["expire", "schedule", "cancel", "clear", "next_deadline",
                                  "deadline", "contains", "iter"])
def test_wheel_refuses_every_reentry_and_is_unchanged(impl, call):
    w = impl.TimerWheel(0.001, now=0.0)
    for i in range(20):
        w.schedule(i, 0.5 + i * 0.1)
    calls = {
        "expire": lambda: w.expire(100.0), "schedule": lambda: w.schedule("x", 1.0),
        "cancel": lambda: w.cancel(3), "clear": w.clear, "next_deadline": w.next_deadline,
        "deadline": lambda: w.deadline(3), "contains": lambda: 3 in w, "iter": lambda: iter(w),
    }
    before = wheel_state(w)
    key = Hostile("k", on_hash=calls[call])
    key.armed = True
    for op in (lambda: w.schedule(key, 1.0), lambda: w.cancel(key), lambda: key in w,
               lambda: w.deadline(key)):
        with pytest.raises(RuntimeError, match="re-entered"):
            op()
        assert wheel_state(w) == before
    assert len(w) == 20  # len() is allowed from there: it reads nothing half-changed
    assert w.expire(100.0) == list(range(20))


def test_wheel_expire_runs_no_key_code(impl):
    """Was: native heap-use-after-free (expire() from a hash that expire()
    called reallocated the due array being read), twin KeyError half-way."""
    w = impl.TimerWheel(0.001, now=0.0)
    keys = [Hostile(f"k{i}", on_hash=lambda: w.expire(1e6), on_eq=fail, hash_value=7)
            for i in range(30)]
    for i, k in enumerate(keys):
        w.schedule(k, 1.0 + i)
    for k in keys:
        k.armed = True
    assert w.expire(10.5) == keys[:10]
    assert len(w) == 20
    assert w.expire(math.inf) == keys[10:]
    assert len(w) == 0 and w.next_deadline() is None


def test_wheel_eq_raising_on_insert_leaves_it_as_before(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    a = Hostile("a", hash_value=1)
    w.schedule(a, 1.0)
    w.schedule("z", 0.5)
    a.on_eq = fail
    a.armed = True
    before = wheel_state(w)
    b = Hostile("b", hash_value=1)  # collides with a: the dict asks a == b
    for _ in range(3):
        with pytest.raises(ValueError, match="hostile"):
            w.schedule(b, 2.0)
        assert wheel_state(w) == before
    with pytest.raises(ValueError, match="hostile"):
        w.cancel(b)
    assert w.expire(5.0) == ["z", a]  # removing a stored key never asks a ==
    assert len(w) == 0


def test_wheel_hash_raising_changes_nothing(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    w.schedule("a", 1.0)
    before = wheel_state(w)
    k = Hostile("k", on_hash=fail)
    k.armed = True
    for op in (lambda: w.schedule(k, 2.0), lambda: w.cancel(k), lambda: w.deadline(k),
               lambda: k in w):
        with pytest.raises(ValueError, match="hostile"):
            op()
        assert wheel_state(w) == before


class Haunted:
    """A key whose __del__ calls the wheel back."""

    log: list = []

    def __init__(self, wheel, n) -> None:
        self.wheel = wheel
        self.n = n

    def __del__(self):
        try:
            self.wheel.schedule(("reborn", self.n), self.wheel.time + 1.0)
            Haunted.log.append("ok")
        except RuntimeError:
            Haunted.log.append("refused")


@pytest.mark.parametrize("how", ["cancel", "clear", "expire"])
def test_wheel_keys_released_only_once_consistent(impl, how):
    w = impl.TimerWheel(0.001, now=0.0)
    Haunted.log = []
    for i in range(10):
        w.schedule(Haunted(w, i), 0.5)
    w.schedule("keep", 5.0)
    if how == "cancel":
        for k in list(w):
            if k != "keep":
                w.cancel(k)
    elif how == "clear":
        w.clear()
    else:
        w.expire(0.75)  # the returned list is dropped at once
    # every __del__ ran after the call, on a consistent wheel, and its call worked
    assert Haunted.log == ["ok"] * 10
    reborn = sorted(k for k in w if k != "keep")
    assert reborn == [("reborn", i) for i in range(10)]
    n = 10 if how == "clear" else 11
    assert len(w) == n and len(w.expire(math.inf)) == n and len(w) == 0


# -- registry helpers -----------------------------------------------------------------

@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make(impl, clock):
    def make(**kwargs):
        kwargs.setdefault("clock", clock)
        return new_registry(impl, **kwargs)

    return make


def consistent(reg):
    """The registry's structures agree with each other."""
    views = list(reg)
    counts = reg.counts()
    assert sum(counts.values()) == len(reg) == len(views)
    for state in STATES:
        assert counts[state] == sum(v.state == state for v in views)
    scheduled = sum(v.state in ("processing", "waiting") for v in views)
    assert reg._filed() == scheduled  # no idle_timeout in these tests


# -- 2. the registry re-entered: never a deadlock ------------------------------------------

@pytest.mark.timeout(30, method="thread")
def test_registry_reentered_from_an_id_hash_works(make):
    reg = make(stuck_after=2)
    reg.open("other", state="processing")
    sid = Hostile("s", on_hash=lambda: reg.progress("other"))
    sid.armed = True
    reg.open(sid, state="processing")  # was: deadlock (the lock is not re-entrant)
    reg.progress(sid)
    reg.set_state(sid, "waiting")
    assert reg.get(sid).state == "waiting"
    assert reg.close(sid) is True
    consistent(reg)


@pytest.mark.timeout(30, method="thread")
def test_registry_reentered_from_an_id_eq_raises(make):
    reg = make(stuck_after=2)
    a = Hostile("a", hash_value=5)
    reg.open(a, state="processing")
    a.on_eq = lambda: reg.counts()
    a.armed = True
    b = Hostile("b", hash_value=5)  # collides with a: a.__eq__ runs under the lock
    for op in (lambda: reg.open(b), lambda: reg.progress(b), lambda: reg.close(b),
               lambda: reg.set_state(b, "idle"), lambda: reg.get(b)):
        with pytest.raises(RuntimeError, match="re-entered"):
            op()
    a.armed = False
    consistent(reg)
    assert [v.session_id for v in reg] == [a]


@pytest.mark.timeout(30, method="thread")
def test_registry_reentered_from_an_id_eq_by_a_membership_test_answers_alike(make):
    """`x in registry` from an id's __eq__ (run under the lock by a lookup)
    and `x in registry` whose lookup runs that __eq__. Was: the native
    registry refused the re-entry (RuntimeError) where the twin, whose
    __contains__ ran __eq__ outside its lock, answered; and a get() whose
    __eq__ asked `in` worked on the twin only."""
    reg = make(stuck_after=2)
    a = Hostile("a", hash_value=5)
    reg.open(a, state="processing")
    a.on_eq = lambda: "elsewhere" in reg
    a.armed = True
    b = Hostile("b", hash_value=5)  # collides with a: a.__eq__ runs under the lock
    for op in (lambda: b in reg, lambda: reg.get(b), lambda: reg.progress(b)):
        with pytest.raises(RuntimeError, match="re-entered"):
            op()
    a.armed = False
    assert b not in reg and a in reg
    consistent(reg)


@pytest.mark.timeout(30, method="thread")
def test_registry_reentered_from_the_clock_works(make, clock):
    calls = []

    def reentrant_clock():
        if armed and not calls:
            calls.append(1)
            reg.counts()
            reg.progress("s")
        return clock.t

    armed = False
    reg = make(stuck_after=2, clock=reentrant_clock)
    reg.open("s", state="processing")
    clock.t += 1
    armed = True
    reg.progress("s")  # its clock calls counts() and progress() back: was a deadlock
    assert calls == [1] and reg.get("s").last_progress == 1001.0
    clock.t += 5
    calls.clear()
    assert [e.kind for e in reg.check()] == []  # the clock's own progress() came first
    consistent(reg)


def test_registry_refuses_a_clock_returning_garbage(make, clock):
    values = iter([float("nan"), "soon", math.inf])
    reg = make(clock=lambda: clock.t)
    reg.open("s", state="processing")
    reg._clock = lambda: next(values)
    with pytest.raises(ValueError, match="finite"):
        reg.progress("s")
    with pytest.raises(TypeError, match="number of seconds"):
        reg.check()
    with pytest.raises(ValueError, match="finite"):
        reg.open("t")
    reg._clock = clock
    consistent(reg)
    assert reg.get("s").last_progress == 1000.0


def test_registry_time_never_goes_back(make, clock):
    reg = make(stuck_after=2)
    reg.open("s", state="processing")
    clock.t = 500.0  # a clock that jumped back
    reg.progress("s")
    assert reg.get("s").last_progress == 1000.0
    clock.t = 1002.0
    assert [e.kind for e in reg.check()] == ["stuck"]


# -- 3. exception safety: an id's __hash__ that raises once -----------------------------------

@pytest.mark.parametrize("nth", [1, 2, 3])
def test_close_with_an_id_hash_raising_once_loses_nothing(make, clock, nth):
    """Was: the id stayed in the wheel; the next check() raised KeyError and
    dropped the other sessions' stuck events (native), or never checked them
    again (twin)."""
    reg = make(stuck_after=2, evict_after=None)
    for i in range(10):
        reg.open(f"s{i}", state="processing")
    calls = [0]

    def once():
        calls[0] += 1
        if calls[0] == nth:
            raise ValueError("hostile")

    bad = Hostile("bad", on_hash=once)
    reg.open(bad, state="processing")
    bad.armed = True
    clock.t += 5
    closed = None
    for _ in range(3):
        try:
            closed = reg.close(bad)
            break
        except ValueError:
            consistent(reg)
    consistent(reg)
    bad.armed = False
    assert closed is True and bad not in reg
    events = reg.check()
    assert sorted(e.session_id for e in events) == [f"s{i}" for i in range(10)]
    assert {e.kind for e in events} == {"stuck"}
    consistent(reg)


def test_check_runs_no_id_code(make, clock):
    reg = make(stuck_after=2, evict_after=3)
    ids = [Hostile(f"h{i}", on_hash=fail, on_eq=fail, hash_value=3) for i in range(5)]
    for sid in ids:
        reg.open(sid, state="processing")
    for sid in ids:
        sid.armed = True
    reg.open("plain", state="processing")
    clock.t += 2
    assert sorted(map(repr, (e.session_id for e in reg.check()))) == sorted(
        map(repr, ids + ["plain"]))
    clock.t += 3
    evicted = reg.check()
    assert [e.reason for e in evicted] == ["stuck_too_long"] * 6
    assert len(reg) == 0 and reg._filed() == 0
    consistent(reg)


def test_store_and_on_evict_calling_back_in(make, clock):
    seen = []

    def store(sid):
        reg.progress("healthy")  # calls back in: outside the lock, works
        return sid != "ghost"

    def on_evict(view):
        seen.append(view.session_id)
        reg.close("healthy")

    reg = make(stuck_after=2, store=store, on_evict=on_evict)
    reg.open("ghost", state="processing")
    reg.open("healthy", state="processing")
    clock.t += 3
    events = reg.check()
    assert [(e.kind, e.session_id) for e in events] == [("evicted", "ghost")]
    assert seen == ["ghost"] and len(reg) == 0
    consistent(reg)


# -- 4. a `now` from another clock ---------------------------------------------------------------

def test_check_refuses_a_now_far_ahead_of_the_clock(make, clock):
    """Was: check(now=time.time()) on a monotonic registry moved the wheel's
    cursor decades ahead, and every later check() scanned every session."""
    reg = make(stuck_after=120)
    for i in range(100):
        reg.open(i, state="processing")
    cursor = reg._wheel_time()
    with pytest.raises(ValueError, match="MAX_CHECK_AHEAD"):
        reg.check(now=1.7e9)
    assert reg._wheel_time() == cursor  # the wheel was not touched
    assert reg.check(now=clock.t + MAX_CHECK_AHEAD) == []
    assert reg._wheel_time() == clock.t + MAX_CHECK_AHEAD
    assert reg.check(now=clock.t - 100) == []  # behind: counts as the latest time
    assert reg._wheel_time() == clock.t + MAX_CHECK_AHEAD
    clock.t += 120
    assert len(reg.check()) == 100


# -- 5. log injection -----------------------------------------------------------------------------------

class Weird:
    def __str__(self):
        return "weird\nstuck session: sessionId=forged"


@pytest.mark.parametrize("sid", [
    "line\nstuck session: sessionId=forged", "cr\rhidden", "clear\x1b[2Jscreen",
    "sep\u2028x\x85y", ("tuple", "\n"), 42, Weird(),
], ids=["newline", "cr", "ansi", "unicode-breaks", "tuple", "int", "str-with-newline"])
def test_log_lines_escape_ids_and_keys(make, clock, caplog, sid):
    caplog.set_level(logging.INFO, logger="loopwatch.sessions")
    key = "key\n\x1b[31mred"

    def store(s):
        raise RuntimeError("store down")

    reg = make(stuck_after=2, evict_after=4, store=store, on_evict=lambda v: fail())
    reg.open(sid, key=key, state="processing")
    clock.t += 2
    events = reg.check()   # store fails (logged), then stuck
    reg.progress(sid)
    events += reg.check()  # recovered
    clock.t += 10
    events += reg.check()  # stuck again
    clock.t += 10
    events += reg.check()  # evicted; on_evict fails (logged)
    assert [e.kind for e in events] == ["stuck", "recovered", "stuck", "evicted"]
    assert all(e.session_id is sid and e.session.key is key for e in events)
    records = [r for r in caplog.records if r.name == "loopwatch.sessions"]
    assert len(records) >= 6
    for r in records:
        line = r.getMessage()
        for bad in ("\n", "\r", "\x1b", "\u2028", "\x85"):
            assert bad not in line, line
        assert r.session_id is sid  # the structured field keeps the raw id
    event_records = [r for r in records if hasattr(r, "session_event")]
    assert [r.session_event for r in event_records] == events
    assert all(r.session_key is key for r in event_records)
    assert "sessionKey=key\\n\\x1b[31mred" in event_records[0].getMessage()


# -- 6. ids whose hashes differ only in their high bits -----------------------------------

class Account:
    """An id with a sloppy __eq__ (common in application code): it assumes
    the other side is an Account too, and raises for anything else."""

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def __hash__(self) -> int:
        return hash(self.uid)

    def __eq__(self, other):
        return self.uid == other.uid  # AttributeError for a str or an int

    def __repr__(self) -> str:
        return f"Account({self.uid})"


@pytest.mark.parametrize("stored, far", [(7, Account(2**32 + 7)), (Account(7), 2**32 + 7)],
                         ids=["int-stored", "account-stored"])
def test_ids_whose_hashes_differ_only_above_32_bits_are_never_compared(make, stored, far):
    """A dict (the twin's index) compares two keys only when their whole
    hashes are equal. Was: the native index kept 32 bits of the hash and
    asked __eq__ whenever those matched, so an id whose 64-bit hash differs
    from a stored id's could not be opened, found or closed (here: the
    AttributeError of a sloppy __eq__ that the twin never runs)."""
    reg = make(stuck_after=2)
    reg.open(stored, state="processing")
    # different hashes, equal in their low 32 bits
    assert hash(far) != hash(stored) and (hash(far) - hash(stored)) % 2**32 == 0
    reg.open(far, state="waiting")
    reg.progress(far)
    reg.set_state(far, "processing", queue_depth=1)
    assert far in reg and reg.get(far).queue_depth == 1
    assert reg.get(stored).state == "processing" and len(reg) == 2
    assert reg.close(far) is True and far not in reg
    assert reg.close(stored) is True and len(reg) == 0


@pytest.mark.parametrize("start", [4.6e12, -4.6e12, 1e300])
def test_a_clock_too_far_from_zero_for_the_wheel_is_a_value_error(impl, start):
    """The wheel counts 1 ms ticks from its start in a double: a clock
    reading of 2**52 ms (about 4.5e12 s) or more cannot make one. Was
    (native): MemoryError, as if memory had run out; the twin (its wheel)
    raises ValueError."""
    with pytest.raises(ValueError, match="monotonic clock"):
        new_registry(impl, clock=lambda: start)
    assert len(new_registry(impl, clock=lambda: 4.4e12)) == 0  # just inside


def test_a_store_answer_whose_truth_raises_leaves_the_lock_free(impl, clock):
    """RegistryBase drives both tables with _collect/_settle; a subclass's
    _ask_store may answer with any object, whose truth _settle takes. Was
    (native): _settle converted the answer (and the question's record
    number) between taking and releasing its lock, so an answer whose
    __bool__ raised left the lock held: every later call from that thread
    was refused as re-entered, and other threads blocked forever."""

    class Answer:
        def __bool__(self):
            raise ValueError("no opinion")

    class Registry(impl.SessionRegistry):
        def _ask_store(self, session_id, allow_async=False):
            return Answer() if session_id == "odd" else True

    kwargs = {"wheel_factory": impl.TimerWheel} if impl.name == "python" else {}
    reg = Registry(stuck_after=1, evict_after=None, store=lambda sid: True, clock=clock,
                   **kwargs)
    reg.open("odd", state="processing")
    clock.t += 1
    with pytest.raises(ValueError, match="no opinion"):
        reg.check()
    assert reg.counts()["processing"] == 1  # was: RuntimeError (the lock still held)
    reg.open("fine", state="processing")
    assert reg.close("fine") is True and len(reg) == 1
