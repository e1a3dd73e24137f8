"""SessionRegistry against a plain reference model that rescans every
session at each check (what the registry must never do, and must agree
with), on both TimerWheel implementations."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from hypothesis.stateful import run_state_machine_as_test

import pytest

from loop_support import new_registry
from loopwatch import RegistryFull
from loopwatch.sessions.registry import STATES

ACTIVE = ("processing", "waiting")
IDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])
MAX_SESSIONS = 5


class ModelSession:
    def __init__(self, state, now):
        self.state = state
        self.queue_depth = None
        self.last_progress = now
        self.state_since = now
        self.stuck = False
        self.stuck_since = 0.0
        self.reports = 0
        self.interval = 0.0
        self.next_report = 0.0

    @property
    def activity(self):
        return max(self.last_progress, self.state_since)


class Model:
    """The specification, written as a scan."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.sessions: dict[str, ModelSession] = {}
        self.queued: list[tuple] = []

    def recover(self, sid, m, now):
        self.queued.append(("recovered", sid, None, m.reports, now - m.activity, None))
        m.stuck = False
        m.reports = 0

    def wake(self, m):
        c = self.cfg
        if m.state in ACTIVE:
            if not m.stuck:
                return m.activity + c["stuck_after"]
            w = m.next_report
            if c["evict_after"] is not None:
                w = min(w, m.stuck_since + c["evict_after"])
            return w
        if m.state == "idle" and c["idle_timeout"] is not None:
            return m.activity + c["idle_timeout"]
        return None

    def check(self, now, store):
        c = self.cfg
        events, self.queued = self.queued, []
        for sid, m in list(self.sessions.items()):
            wake = self.wake(m)
            if wake is None or wake > now:
                continue
            age = now - m.activity
            if m.state in ACTIVE:
                if m.stuck and c["evict_after"] is not None and now >= m.stuck_since + c["evict_after"]:
                    events.append(("evicted", sid, "stuck_too_long", m.reports, age, None))
                    del self.sessions[sid]
                elif store is not None and sid not in store:
                    events.append(("evicted", sid, "ghost", m.reports if m.stuck else 0, age, None))
                    del self.sessions[sid]
                else:
                    if not m.stuck:
                        m.stuck, m.stuck_since = True, m.activity + c["stuck_after"]
                        m.reports, m.interval = 0, c["stuck_after"]
                    m.reports += 1
                    m.interval = min(m.interval * c["report_backoff"], c["max_report_interval"])
                    m.next_report = now + m.interval
                    nxt = m.next_report
                    if c["evict_after"] is not None and m.stuck_since + c["evict_after"] <= nxt:
                        nxt = None
                    events.append(("stuck", sid, None, m.reports, age, nxt))
            else:
                events.append(("evicted", sid, "idle", 0, age, None))
                del self.sessions[sid]
        return events


def registry_machine(impl):
    class RegistryVsModel(RuleBasedStateMachine):
        @initialize(
            stuck_after=st.sampled_from([1.0, 5.0]),
            report_backoff=st.sampled_from([1.0, 2.0, 3.0]),
            max_report_interval=st.sampled_from([2.0, 10.0, 1800.0]),
            evict_after=st.sampled_from([None, 0.0, 7.0, 30.0]),
            idle_timeout=st.sampled_from([None, 4.0]),
            use_store=st.booleans(),
        )
        def make(self, **cfg):
            use_store = cfg.pop("use_store")
            self.t = 100.0
            self.store = {"a", "b", "c", "d", "e", "f", "g"} if use_store else None
            self.model = Model(cfg)
            self.reg = new_registry(
                impl,
                **cfg,
                store=(lambda sid: sid in self.store) if use_store else None,
                max_sessions=MAX_SESSIONS,
                clock=lambda: self.t,
            )

        @rule(sid=IDS, state=st.sampled_from(STATES))
        def open(self, sid, state):
            if sid in self.model.sessions:
                with pytest.raises(ValueError):
                    self.reg.open(sid, state=state)
            elif len(self.model.sessions) >= MAX_SESSIONS:
                with pytest.raises(RegistryFull):
                    self.reg.open(sid, state=state)
            else:
                self.reg.open(sid, state=state)
                self.model.sessions[sid] = ModelSession(state, self.t)

        @rule(sid=IDS)
        def close(self, sid):
            assert self.reg.close(sid) is (self.model.sessions.pop(sid, None) is not None)

        @rule(sid=IDS)
        def progress(self, sid):
            m = self.model.sessions.get(sid)
            if m is None:
                with pytest.raises(KeyError):
                    self.reg.progress(sid)
                return
            self.reg.progress(sid)
            if m.stuck:
                self.model.recover(sid, m, self.t)
            m.last_progress = self.t

        @rule(sid=IDS, state=st.sampled_from(STATES),
              depth=st.one_of(st.none(), st.integers(0, 3)))
        def set_state(self, sid, state, depth):
            m = self.model.sessions.get(sid)
            if m is None:
                with pytest.raises(KeyError):
                    self.reg.set_state(sid, state, depth)
                return
            self.reg.set_state(sid, state, depth)
            if depth is not None:
                m.queue_depth = depth
            if state != m.state:
                if m.stuck:
                    self.model.recover(sid, m, self.t)
                m.state, m.state_since = state, self.t

        @rule(sid=IDS)
        def toggle_store(self, sid):
            if self.store is not None:
                self.store ^= {sid}

        @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 7.0, 40.0]))
        def check(self, dt):
            self.t += dt
            got = self.reg.check()
            want = self.model.check(self.t, self.store)
            got = [(e.kind, e.session_id, e.reason, e.reports, e.age, e.next_report_at)
                   for e in got]
            assert sorted(got, key=repr) == sorted(want, key=repr)

        @invariant()
        def same_sessions(self):
            if not hasattr(self, "reg"):
                return
            sessions = self.model.sessions
            assert len(self.reg) == len(sessions)
            want = {s: 0 for s in STATES}
            for m in sessions.values():
                want[m.state] += 1
            assert self.reg.counts() == want
            for sid, m in sessions.items():
                v = self.reg.get(sid)
                assert (v.state, v.queue_depth, v.stuck, v.stuck_reports) == (
                    m.state, m.queue_depth, m.stuck, m.reports if m.stuck else 0)
                assert (v.last_progress, v.state_since) == (m.last_progress, m.state_since)
            # the wheel holds exactly the sessions that have something ahead
            assert self.reg._filed() == sum(
                1 for m in sessions.values() if self.model.wake(m) is not None)

    return RegistryVsModel


def test_registry_matches_reference_model(impl):
    run_state_machine_as_test(
        registry_machine(impl),
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
