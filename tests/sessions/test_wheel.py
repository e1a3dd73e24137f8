"""TimerWheel, on both implementations: against a plain reference model
(a dict of key -> deadline), natively against its twin, and edge by edge."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loopwatch._selector import load_implementation

TWO_YEARS = 2 * 365.25 * 86400
KEYS = st.integers(min_value=0, max_value=15)
# Offsets from the wheel's time that land in every level and inside one tick.
OFFSETS = st.one_of(
    st.floats(min_value=-2.0, max_value=2.0),
    st.floats(min_value=0, max_value=0.004),
    st.floats(min_value=0, max_value=10_000.0),
    st.floats(min_value=0, max_value=TWO_YEARS),
    st.sampled_from([0.0, 0.001, 0.0005, 0.064, 0.0641, 4.096, 262.144]),
)


def expected_expiry(model: dict, order: dict, now: float) -> list:
    due = [k for k, d in model.items() if d <= now]
    return sorted(due, key=lambda k: (model[k], order[k]))


def wheel_machine(TimerWheel):
    class WheelVsModel(RuleBasedStateMachine):
        """The wheel must answer exactly as a dict of deadlines would."""

        @initialize(
            resolution=st.sampled_from([0.001, 0.01, 1.0]),
            start=st.floats(min_value=-1e4, max_value=1e6),
        )
        def make(self, resolution, start):
            self.wheel = TimerWheel(resolution, now=start)
            self.model: dict[int, float] = {}
            self.order: dict[int, int] = {}  # key -> when last scheduled
            self.seq = 0
            self.now = start

        @rule(key=KEYS, offset=OFFSETS)
        def schedule(self, key, offset):
            deadline = self.now + offset
            self.wheel.schedule(key, deadline)
            self.seq += 1
            self.model[key] = deadline
            self.order[key] = self.seq

        @rule(key=KEYS, factor=st.floats(min_value=1.0, max_value=3.0))
        def move_later(self, key, factor):
            # progress(): the deadline only moves later (the lazy path)
            if key in self.model:
                deadline = self.model[key] + abs(self.model[key] - self.now) * (factor - 1) + 0.5
                deadline = min(deadline, self.wheel.time + TWO_YEARS)
                self.wheel.schedule(key, deadline)
                self.seq += 1
                self.model[key] = deadline
                self.order[key] = self.seq

        @rule(key=KEYS)
        def cancel(self, key):
            assert self.wheel.cancel(key) is (key in self.model)
            self.model.pop(key, None)

        @rule(step=st.one_of(st.floats(min_value=0, max_value=0.002),
                             st.floats(min_value=0, max_value=100.0),
                             st.floats(min_value=0, max_value=TWO_YEARS),
                             st.floats(min_value=-1.0, max_value=0)))
        def expire(self, step):
            now = self.now + step
            got = self.wheel.expire(now)
            assert got == expected_expiry(self.model, self.order, now)
            for key in got:
                del self.model[key]
            self.now = max(self.now, now)

        @precondition(lambda self: self.model)
        @rule()
        def expire_at_next_deadline(self):
            # Waking at next_deadline() and expiring always makes progress.
            before = self.wheel.next_deadline()
            assert before <= min(self.model.values())
            now = max(before, self.now)
            got = self.wheel.expire(now)
            assert got == expected_expiry(self.model, self.order, now)
            for key in got:
                del self.model[key]
            self.now = now
            after = self.wheel.next_deadline()
            assert got or after is None or after > before

        @invariant()
        def agrees(self):
            assert len(self.wheel) == len(self.model)
            assert set(self.wheel) == set(self.model)
            for key, deadline in self.model.items():
                assert key in self.wheel
                assert self.wheel.deadline(key) == deadline
            nd = self.wheel.next_deadline()
            if not self.model:
                assert nd is None
            else:
                earliest = min(self.model.values())
                assert nd <= earliest
                if earliest <= self.wheel.time:
                    # overdue entries sit in the current slot: exact
                    assert nd == earliest

    return WheelVsModel


@pytest.mark.parametrize("seed", [0])
def test_wheel_matches_reference_model(impl, seed):
    machine = wheel_machine(impl.TimerWheel)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=200,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_native_and_python_answer_identically(request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    native = load_implementation("native").TimerWheel
    python = load_implementation("python").TimerWheel
    rnd = random.Random(1234)
    for _ in range(20):
        res = rnd.choice([1e-6, 0.001, 0.25, 60.0])
        start = rnd.uniform(-1e3, 1e5)
        a, b = native(res, now=start), python(res, now=start)
        now = start
        for _ in range(600):
            r = rnd.random()
            scale = min(1e7, rnd.choice([res, 64 * res, 4096 * res, 1e5 * res, 1e7 * res]))
            if r < 0.5:
                key, d = rnd.randrange(300), now + rnd.uniform(-scale, 3 * scale)
                a.schedule(key, d)
                b.schedule(key, d)
            elif r < 0.6:
                key = rnd.randrange(300)
                assert a.cancel(key) == b.cancel(key)
            elif r < 0.9:
                t = now + rnd.uniform(-0.1, 1) * scale
                assert a.expire(t) == b.expire(t)
                now = max(now, t)
            else:
                assert a.next_deadline() == b.next_deadline()
            assert len(a) == len(b) and a.time == b.time
        assert list(a) == list(b)
        assert a.expire(math.inf) == b.expire(math.inf)
        assert len(a) == len(b) == 0


# -- contract, edge by edge ------------------------------------------------------

def test_expire_returns_deadline_order_with_ties_in_scheduling_order(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    w.schedule("c", 5.0)
    w.schedule("a", 1.0)
    w.schedule("b", 5.0)
    w.schedule("d", 0.0005)
    w.schedule("c", 5.0)  # rescheduled: now after b
    assert w.expire(10.0) == ["d", "a", "b", "c"]
    assert len(w) == 0


def test_never_returns_a_key_due_later_in_the_same_tick(impl):
    w = impl.TimerWheel(1.0, now=100.0)
    w.schedule("early", 100.2)
    w.schedule("late", 100.7)
    assert w.expire(100.5) == ["early"]
    assert "late" in w
    assert w.next_deadline() == 100.7  # exact, not the tick's start
    assert w.expire(100.69) == []
    assert w.expire(100.7) == ["late"]


def test_past_deadlines_are_due_at_once_and_before_the_wheel_time(impl):
    w = impl.TimerWheel(0.001, now=50.0)
    w.expire(60.0)
    w.schedule("past", 10.0)
    w.schedule("also", 55.0)
    assert w.next_deadline() == 10.0
    # a `now` behind the wheel's time still returns exactly what is due
    assert w.expire(20.0) == ["past"]
    assert w.expire(60.0) == ["also"]


def test_lazy_move_later_then_earlier(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    w.schedule("k", 100.0)           # a high level
    for i in range(1, 50):
        w.schedule("k", 100.0 + i)   # lazily later
    assert w.deadline("k") == 149.0
    assert w.expire(120.0) == []     # its old slot came due: refiled, not returned
    w.schedule("k", 130.0)           # earlier again: really moved
    assert w.expire(129.999) == []
    assert w.expire(130.0) == ["k"]


def test_far_deadlines_cascade_down_exactly(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    deadlines = {f"k{i}": 0.001 * 64**i * 1.37 for i in range(1, 6)}
    deadlines["top"] = TWO_YEARS
    for key, d in deadlines.items():
        w.schedule(key, d)
    got, now = [], 0.0
    while len(w):
        nd = w.next_deadline()
        assert nd > now or nd <= w.time  # always progress
        now = max(now, nd)
        for key in w.expire(now):
            assert deadlines[key] <= now
            got.append(key)
    assert got == sorted(deadlines, key=deadlines.get)


def test_expire_infinity_drains_without_moving_time(impl):
    w = impl.TimerWheel(0.01, now=0.0)
    for i in range(100):
        w.schedule(i, i * 1000.0)
    assert w.expire(math.inf) == list(range(100))
    assert w.time == 0.0 and len(w) == 0
    assert w.expire(-math.inf) == []


def test_a_big_jump_in_time_returns_everything_due(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    keys = list(range(1000))
    for k in keys:
        w.schedule(k, (k * 7919) % 1000 * 3600.0 + 0.5)
    got = w.expire(1e7)
    assert sorted(got) == keys and len(w) == 0
    assert [w_ for w_ in got] == sorted(keys, key=lambda k: (k * 7919) % 1000)
    w.schedule("after", 1e7 + 1)
    assert w.expire(1e7 + 0.5) == [] and w.expire(1e7 + 1) == ["after"]


def test_horizon_is_at_least_two_years(impl):
    for res in (1e-6, 0.001, 0.1, 1.0, 3600.0):
        w = impl.TimerWheel(res, now=1000.0)
        assert w.horizon >= TWO_YEARS
        w.schedule("far", 1000.0 + TWO_YEARS)
        with pytest.raises(ValueError, match="horizon"):
            w.schedule("too far", 1000.0 + w.horizon + 2 * res)
        assert "too far" not in w and len(w) == 1


def test_bad_input_gets_clear_errors_and_changes_nothing(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    w.schedule("k", 1.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            w.schedule("k", bad)
        with pytest.raises(ValueError, match="finite"):
            w.schedule("new", bad)
    with pytest.raises(TypeError, match="real number"):
        w.schedule("k", "1.0")
    with pytest.raises(TypeError):
        w.schedule(["unhashable"], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        w.expire(math.nan)
    with pytest.raises(TypeError):
        w.expire(None)
    with pytest.raises(KeyError):
        w.deadline("missing")
    assert w.cancel("missing") is False
    assert list(w) == ["k"] and w.deadline("k") == 1.0
    for res in (0, -1, math.nan, math.inf, 1e-9, 1e5):
        with pytest.raises(ValueError, match="resolution"):
            impl.TimerWheel(res)
    with pytest.raises(ValueError):
        impl.TimerWheel(0.001, now=math.nan)
    with pytest.raises(TypeError):
        pickle.dumps(w)


def test_numbers_of_any_real_type_are_accepted(impl):
    from fractions import Fraction

    w = impl.TimerWheel(0.001, now=0)
    w.schedule("int", 2)
    w.schedule("frac", Fraction(1, 2))
    assert w.deadline("int") == 2.0 and w.expire(3) == ["frac", "int"]


def test_default_start_is_the_monotonic_clock(impl):
    import time

    before = time.monotonic()
    w = impl.TimerWheel()
    assert before <= w.time <= time.monotonic()
    assert w.resolution == 0.001 and w.levels >= 2


def test_clear_and_reuse(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    for i in range(200):
        w.schedule(i, 1.0 + i)
    w.clear()
    assert len(w) == 0 and w.next_deadline() is None and w.expire(1e4) == []
    w.schedule("x", 1e4 + 1)
    assert w.expire(1e4 + 1) == ["x"]


def test_many_keys_handles_are_reused(impl):
    w = impl.TimerWheel(0.001, now=0.0)
    for round_ in range(3):
        for i in range(5000):
            w.schedule((round_, i), round_ * 10 + 1 + i * 1e-3)
        got = w.expire(round_ * 10 + 9)
        assert got == [(round_, i) for i in range(5000)]
    assert len(w) == 0


@pytest.mark.native_only
def test_native_memory_is_at_most_48_bytes_per_entry(request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    from loopwatch.sessions import wheel_native as _wheel_c

    assert _wheel_c.NODE_BYTES <= 48
    w = _wheel_c.TimerWheel(0.001, now=0.0)
    empty = w._native_memory()
    n = 100_000
    for i in range(n):
        w.schedule(i, 1.0 + i * 1e-3)
    assert (w._native_memory() - empty) / n <= 48
