"""The same random operation sequences, hostile keys included (a __hash__ or
__eq__ that raises or calls back in), on the native wheel and its twin, and on
the native SessionRegistry and its twin: every answer and every exception type
must match, and each structure must stay consistent. (The events of one
check() are compared as a set: both give them by due time, ties in an order
of their own; next_check() is held to its contract, never after an event.)"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loop_support import new_registry
from loopwatch._selector import load_implementation

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


class Key:
    """A key whose __hash__/__eq__ do what `mode` says while armed (the
    target is the structure under test, set per run)."""

    target = None

    def __init__(self, name: int, mode: str) -> None:
        self.name = name
        self.mode = mode
        self.armed = True

    def _act(self, where: str) -> None:
        if not self.armed or not self.mode.startswith(where):
            return
        if self.mode.endswith("raise"):
            raise ValueError("hostile")
        t = Key.target
        if hasattr(t, "counts"):
            t.counts()
        else:
            t.clear()  # the wheel: refused while it runs our code

    def __hash__(self):
        self._act("hash")
        return self.name % 3  # collisions, so __eq__ runs too

    def __eq__(self, other):
        self._act("eq")
        return isinstance(other, Key) and other.name == self.name

    def __repr__(self):
        return f"Key({self.name}, {self.mode})"


MODES = st.sampled_from(["plain", "plain", "plain", "hash-raise", "eq-raise",
                         "hash-reenter", "eq-reenter"])
KEYS = st.one_of(st.integers(0, 5), st.builds(lambda n, m: (n, m), st.integers(0, 5), MODES))
WHEEL_OPS = st.lists(st.one_of(
    st.tuples(st.just("schedule"), KEYS, st.floats(-1.0, 300.0)),
    st.tuples(st.just("cancel"), KEYS),
    st.tuples(st.just("deadline"), KEYS),
    st.tuples(st.just("contains"), KEYS),
    st.tuples(st.just("expire"), st.floats(0.0, 10.0)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("len")),
    st.tuples(st.just("next_deadline")),
), max_size=40)


def make_key(spec, cache):
    if isinstance(spec, int):
        return spec
    name, mode = spec
    # one object per (name, mode): equal names with different modes are equal keys
    return cache.setdefault(spec, Key(name + 100, mode))


def run_wheel(TimerWheel, ops):
    w = TimerWheel(0.01, now=0.0)
    Key.target = w
    cache: dict = {}
    now = 0.0
    answers = []
    for op in ops:
        name = op[0]
        try:
            if name == "schedule":
                w.schedule(make_key(op[1], cache), now + op[2])
                got = None
            elif name == "cancel":
                got = w.cancel(make_key(op[1], cache))
            elif name == "deadline":
                got = w.deadline(make_key(op[1], cache))
            elif name == "contains":
                got = make_key(op[1], cache) in w
            elif name == "expire":
                now += op[1]
                got = [repr(k) for k in w.expire(now)]
            elif name == "clear":
                got = w.clear()
            elif name == "len":
                got = len(w)
            else:
                got = w.next_deadline()
        except Exception as exc:  # noqa: BLE001 - the type is the answer
            got = type(exc).__name__
        answers.append((name, got))
    for k in cache.values():
        k.armed = False
    answers.append(("final", len(w), sorted(map(repr, w)), w.next_deadline(),
                    [repr(k) for k in w.expire(math.inf)], len(w)))
    Key.target = None
    return answers


@SETTINGS
@given(ops=WHEEL_OPS)
def test_native_and_twin_wheels_answer_alike_under_hostile_keys(ops):
    native = load_implementation("native").TimerWheel
    twin = load_implementation("python").TimerWheel
    assert run_wheel(native, ops) == run_wheel(twin, ops)


SIDS = st.one_of(st.sampled_from(["a", "b", "c"]),
                 st.builds(lambda n, m: (n, m), st.integers(0, 3), MODES))
REG_OPS = st.lists(st.one_of(
    st.tuples(st.just("open"), SIDS, st.sampled_from(["idle", "processing", "waiting"])),
    st.tuples(st.just("progress"), SIDS),
    st.tuples(st.just("set_state"), SIDS, st.sampled_from(["idle", "queued", "processing"])),
    st.tuples(st.just("close"), SIDS),
    st.tuples(st.just("check"), st.floats(0.0, 40.0)),
), max_size=30)


def run_registry(name, ops, ghosts):
    clock = [1000.0]
    reg = new_registry(load_implementation(name), stuck_after=5, report_backoff=2,
                       evict_after=20, idle_timeout=30,
                       store=lambda sid: repr(sid) not in ghosts, clock=lambda: clock[0])
    Key.target = reg
    cache: dict = {}
    answers = []
    for op in ops:
        name = op[0]
        try:
            if name == "open":
                got = reg.open(make_key(op[1], cache), state=op[2]).state
            elif name == "progress":
                got = reg.progress(make_key(op[1], cache))
            elif name == "set_state":
                got = reg.set_state(make_key(op[1], cache), op[2])
            elif name == "close":
                got = reg.close(make_key(op[1], cache))
            else:
                nxt = reg.next_check()
                clock[0] += op[1]
                got = sorted((e.kind, repr(e.session_id), e.reason, e.reports, e.at)
                             for e in reg.check())
                if got and nxt is not None:
                    assert nxt <= clock[0]  # never later than an event it had coming
                if got and any(kind != "recovered" for kind, *_ in got):
                    assert nxt is not None
        except Exception as exc:  # noqa: BLE001
            got = type(exc).__name__
        answers.append((name, got))
    for k in cache.values():
        k.armed = False
    views = sorted((repr(v.session_id), v.state, v.stuck, v.stuck_reports) for v in reg)
    counts = reg.counts()
    assert sum(counts.values()) == len(reg) == len(views)
    answers.append(("final", views, counts, reg.next_check() is None))
    Key.target = None
    return answers


@SETTINGS
@given(ops=REG_OPS, ghosts=st.sets(st.sampled_from(["'a'", "'b'"])))
def test_registry_on_native_and_twin_wheels_answers_alike_under_hostile_ids(ops, ghosts):
    assert run_registry("native", ops, ghosts) == run_registry("python", ops, ghosts)


@pytest.mark.parametrize("name", ["native", "python"])
def test_hostile_runs_are_not_vacuous(name):
    """The strategies do reach the refusals: a re-entering hash is refused by
    the wheel and a re-entering __eq__ by the registry."""
    TimerWheel = load_implementation(name).TimerWheel
    answers = run_wheel(TimerWheel, [("schedule", 1, 1.0), ("schedule", (1, "hash-reenter"), 2.0)])
    assert answers[1] == ("schedule", "RuntimeError")
    answers = run_registry(name, [("open", (0, "eq-reenter"), "processing"),
                                        ("open", (3, "plain"), "idle")], set())
    assert answers[:2] == [("open", "processing"), ("open", "RuntimeError")]
