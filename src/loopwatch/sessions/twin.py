"""The pure-Python SessionRegistry: the twin of the native one
(sessions/native.pyx over ext/sessions/), with the same API and the same
answers, on any TimerWheel (``wheel_factory``: the selected one by
default; the benchmarks run it on a heapq to have a baseline).

Each session is a :class:`_Session` object with at most one entry in the
wheel, at its next "interesting" time: when it would become stuck, its next
stuck report, its eviction, or its idle timeout. ``progress()`` only moves
that entry (O(1), lazily in the wheel), and ``check()`` touches only the
entries that are due: no scan, ever.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import sys
import threading
from typing import Any, Callable, Hashable, Iterator

from . import wheel_twin as _wheel_twin
from .registry import (
    _ACTIVE,
    EVICTED,
    GHOST,
    IDLE,
    MAX_CHECK_AHEAD,
    RECOVERED,
    REENTERED as _REENTERED,
    SESSION_REGISTRY_DOC,
    STATES,
    STUCK,
    STUCK_TOO_LONG,
    RegistryBase,
    RegistryFull,
    SessionEvent,
    SessionView,
    _check_depth,
    _check_handle,
    _check_state,
    _clock_value,
    _unknown,
    _unknown_handle,
    logger,
)

__all__ = ["SessionRegistry"]


def _since_progress_order(view: SessionView) -> tuple[float, float]:
    """stuck()'s order: longest without progress first, then first opened."""
    return (view.last_progress, view.opened_at)


class _Session:
    __slots__ = (
        "sid", "key", "state", "queue_depth", "opened_at", "state_since", "last_progress",
        "stuck", "stuck_since", "reports", "interval", "next_report_at", "task", "task_cb",
        "epoch", "hkey", "alive", "handle",
    )

    def __init__(self, sid: Hashable, key: Any, state: str, now: float) -> None:
        self.sid = sid
        self.key = key
        self.state = state
        self.queue_depth: int | None = None
        self.opened_at = now
        self.state_since = now
        self.last_progress = now
        self.stuck = False
        self.stuck_since = 0.0
        self.reports = 0
        self.interval = 0.0
        self.next_report_at = 0.0
        self.task: Any = None
        self.task_cb: Any = None
        self.epoch = 0  # bumped by every change a pending store check must not overrule
        self.hkey: Any = None  # the registry's key for it (the id, hashed once)
        self.alive = True  # False once removed: identity checks never hash the id
        self.handle = 0  # set by open: the registry's count of openings

    def activity(self) -> float:
        """The last sign of life: progress or a state change."""
        return self.last_progress if self.last_progress > self.state_since else self.state_since

    def view(self) -> SessionView:
        return SessionView(
            self.sid, self.key, self.state, self.queue_depth, self.opened_at,
            self.state_since, self.last_progress, self.reports if self.stuck else 0,
            self.stuck, self.task, self.handle,
        )


class _Pending:
    """A stuck report waiting for the store's answer."""

    __slots__ = ("session", "epoch", "now")

    def __init__(self, session: _Session, now: float) -> None:
        self.session = session
        self.epoch = session.epoch
        self.now = now


class SessionRegistry(RegistryBase):
    __doc__ = SESSION_REGISTRY_DOC

    def _setup(self, start: float, wheel_factory: Callable[..., Any] | None) -> None:
        if wheel_factory is None:
            from .._selector import TimerWheel

            wheel_factory = TimerWheel
        # Sessions are keyed by the id hashed once (the wheel module's
        # HashedKey): removing one never runs the id's code.
        key_type = getattr(sys.modules.get(getattr(wheel_factory, "__module__", "") or ""),
                           "HashedKey", None)
        self._key = key_type if isinstance(key_type, type) else _wheel_twin.HashedKey
        self._wheel: Any = wheel_factory(0.001, now=start)  # keyed by _Session objects
        self._schedule = self._wheel.schedule
        # Re-entrant, so a call back from code run under it is detected
        # (self._busy) and refused instead of deadlocking.
        self._lock = threading.RLock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._busy = False
        # The registry's time: clock() - shift, never decreasing. shift is the
        # stall time counted so far: _shift (from stall clocks detached
        # before) + _stall_last - _stall_base (from the attached one).
        self._last_now = start
        self._shift = 0.0
        self._stall: Callable[[], float] | None = None
        self._stall_base: float | None = None
        self._stall_last: float | None = None
        self._stall_warned = False
        self._sessions: dict[Any, _Session] = {}
        self._counts = dict.fromkeys(STATES, 0)
        self._events: list[SessionEvent] = []  # recoveries, waiting for check()

        self._handles: dict[int, _Session] = {}  # handle -> session
        self._opened = itertools.count(1)  # handles: one per opening, never reused
        self._stuck: dict[_Session, None] = {}  # the stuck sessions, in the order they got stuck
        self._queued = 0  # the sum of the queue depths

    # -- the lock ------------------------------------------------------------------
    def _enter(self) -> None:
        self._acquire()
        if self._busy:  # only this thread can hold it: a call back from under it
            self._release()
            raise RuntimeError(_REENTERED)
        self._busy = True

    def _exit(self) -> None:
        self._busy = False
        self._release()

    # -- time ----------------------------------------------------------------------
    def set_stall_clock(self, stalled: Callable[[], float] | None) -> None:
        """Measure session ages in unstalled time from now on.

        ``stalled()`` returns the cumulative seconds the event loop running
        these sessions has been stalled so far (a stall still going on
        included), never decreasing: for example the loop monitor's figure.
        From this call on the registry's time is ``clock() - (stalled() -
        stalled_at_this_call)`` (an explicit ``check(now=...)`` is shifted
        the same way), so time the loop spent stalled counts toward none of
        ``stuck_after``, the report backoff, ``evict_after`` and
        ``idle_timeout``: a handler that was merely blocked by a stall is not
        reported for it. ``None`` detaches; the stall time counted so far
        stays counted (the registry's time does not jump). The registry's
        time never decreases. A ``stalled()`` that raises or returns NaN, a
        negative, non-finite or decreasing value counts as no stall added for
        that reading (logged once at WARNING); it runs outside the lock.
        """
        if stalled is not None and not callable(stalled):
            raise TypeError(f"stalled must be a callable returning seconds or None, got {stalled!r}")
        first = None if stalled is None else self._read_stall(stalled, fresh=True)
        self._enter()
        previous = self._stall  # let go after the lock: its finalizer may call us
        try:
            if self._stall_base is not None and self._stall_last is not None:
                self._shift += self._stall_last - self._stall_base
            self._stall = stalled
            # A first reading that failed: the first good one becomes the base.
            self._stall_base = self._stall_last = first
            self._stall_warned = False
        finally:
            self._exit()
        del previous

    def _read_stall(self, stall: Callable[[], float], fresh: bool = False) -> float | None:
        """One reading of the stall clock (outside the lock), or None when it
        is unusable (logged once)."""
        try:
            v = stall()
            if type(v) is not float:
                v = _clock_value(v, "the stall clock")
        except Exception as exc:
            self._stall_problem(f"raised {type(exc).__name__}")
            return None
        if not (0.0 <= v < math.inf):
            self._stall_problem(f"returned {v!r}")
            return None
        last = self._stall_last
        if not fresh and last is not None and v < last and stall is self._stall:
            self._stall_problem(f"went back from {last!r} to {v!r}")
            return None
        return v

    def _stall_problem(self, what: str) -> None:
        if not self._stall_warned:
            self._stall_warned = True
            logger.warning("stall clock %s; counting no stall added for such readings "
                           "(logged once)", what)

    def _read_time(self, now: Any = None) -> tuple[float, Any, float | None]:
        """Outside the lock: (clock time, stall clock, its reading)."""
        raw = self._clock()
        if type(raw) is not float or raw - raw != 0.0:
            raw = _clock_value(raw)
        if now is not None:
            if isinstance(now, bool) or not isinstance(now, (int, float)):
                raise TypeError(f"now must be a number of seconds, got {now!r}")
            now = int.__float__(now) if isinstance(now, int) else float.__float__(now)
            if not math.isfinite(now):
                raise ValueError(f"now must be finite, got {now!r}")
            if now > raw + MAX_CHECK_AHEAD:
                raise ValueError(
                    f"now={now!r} is more than MAX_CHECK_AHEAD={MAX_CHECK_AHEAD:g} s ahead of "
                    f"the registry's clock ({raw!r}); pass a time read from that clock"
                )
            raw = now
        stall = self._stall
        return raw, stall, None if stall is None else self._read_stall(stall)

    def _effective(self, raw: float, stall: Any, sv: float | None) -> float:
        """Under the lock: the registry's time for a clock reading."""
        if sv is not None and stall is self._stall:
            if self._stall_base is None:
                self._stall_base = self._stall_last = sv
            elif self._stall_last is None or sv > self._stall_last:
                self._stall_last = sv
        shift = self._shift
        if self._stall_base is not None and self._stall_last is not None:
            shift += self._stall_last - self._stall_base
        t = raw - shift
        if t < self._last_now:
            return self._last_now
        self._last_now = t
        return t

    # -- scheduling (under the lock) ---------------------------------------------
    def _wake_time(self, s: _Session) -> float | None:
        if s.state in _ACTIVE:
            if not s.stuck:
                return s.activity() + self._stuck_after
            wake = s.next_report_at
            if self._evict_after is not None:
                evict_at = s.stuck_since + self._evict_after
                if evict_at < wake:
                    wake = evict_at
            return wake
        if s.state == "idle" and self._idle_timeout is not None:
            return s.activity() + self._idle_timeout
        return None

    def _reschedule(self, s: _Session) -> None:
        wake = self._wake_time(s)
        if wake is None:
            self._wheel.cancel(s)
        else:
            self._schedule_at(s, wake)

    def _schedule_at(self, s: _Session, wake: float) -> None:
        try:
            self._schedule(s, wake)
        except ValueError:
            # Further than the wheel's horizon (at least two years after the
            # last check): a registry nobody checked for a year. File it at
            # the horizon; check() finds it early and refiles it then.
            self._schedule(s, self._wheel.time + self._wheel.horizon - 1.0)

    def _recover(self, s: _Session, now: float, age: float) -> None:
        view_reports = s.reports
        self._stuck.pop(s, None)
        s.stuck = False
        s.reports = 0
        self._events.append(
            SessionEvent(RECOVERED, s.view(), now, None, age, view_reports, None)
        )

    def _remove(self, s: _Session) -> None:
        # A stored key, found by identity: no caller code runs, nothing fails.
        del self._sessions[s.hkey]
        del self._handles[s.handle]
        if s.stuck:
            del self._stuck[s]
        if s.queue_depth:
            self._queued -= s.queue_depth
        s.alive = False
        self._counts[s.state] -= 1
        self._wheel.cancel(s)
        s.epoch += 1
        s.task = None

    # -- sessions ---------------------------------------------------------------
    def open(self, session_id: Hashable, key: Any = None, state: str = "idle") -> SessionView:
        """Start tracking a session; returns its view.

        Raises ValueError for an unknown state or an id already open,
        :class:`RegistryFull` at ``max_sessions``."""
        s = self._open(session_id, key, state)
        try:
            return s.view()
        except BaseException:
            # No view (out of memory, Ctrl-C): the caller cannot know the
            # session is open, so it is not (it would be a ghost).
            self._close_handle(s.handle)
            raise

    def _open(self, session_id: Hashable, key: Any, state: str) -> _Session:
        state = _check_state(state)
        raw, stall, sv = self._read_time()
        hk = self._key(session_id)  # the id's __hash__, outside the lock
        self._enter()
        try:
            now = self._effective(raw, stall, sv)
            if hk in self._sessions:
                problem = "open"
            elif len(self._sessions) >= self._max_sessions:
                problem = "full"
            else:
                s = _Session(session_id, key, state, now)
                s.hkey = hk
                inserted = False
                try:
                    self._reschedule(s)
                    existing = self._sessions.setdefault(hk, s)  # the id's __eq__ may run
                    if existing is s:
                        inserted = True
                        s.handle = next(self._opened)
                        self._handles[s.handle] = s
                        self._counts[state] += 1
                        hk.stored = True
                        return s
                except BaseException:
                    # An __eq__ that raised, out of memory: nothing of it stays.
                    self._wheel.cancel(s)
                    if inserted:
                        del self._sessions[hk]  # found by identity: stored ids' __eq__ is not asked
                        self._handles.pop(s.handle, None)
                    raise
                self._wheel.cancel(s)  # an __eq__ that changed its mind: already open
                problem = "open"
        finally:
            self._exit()
        if problem == "open":
            raise ValueError(f"session {session_id!r} is already open")
        raise RegistryFull(
            f"registry holds max_sessions={self._max_sessions} sessions; "
            f"cannot open {session_id!r}"
        )

    def _open_handle(self, session_id: Hashable, key: Any, state: str) -> int:
        return self._open(session_id, key, state).handle

    def progress(self, session_id: Hashable) -> None:
        """The session is moving: its stuck clock restarts (O(1)).

        A stuck session recovers (a ``recovered`` event). KeyError when unknown."""
        # The hot path: one lookup, two stores, one O(1) wheel move. (Bound
        # acquire/release cost half of what `with lock:` does.)
        raw = self._clock()
        if type(raw) is not float or raw - raw != 0.0:
            raw = _clock_value(raw)
        stall = self._stall
        sv = None if stall is None else self._read_stall(stall)
        hk = self._key(session_id)
        self._acquire()
        if self._busy:
            self._release()
            raise RuntimeError(_REENTERED)
        self._busy = True
        try:
            s = self._sessions.get(hk)
            if s is not None:
                now = self._effective(raw, stall, sv)
                if s.stuck:
                    self._recover(s, now, now - s.activity())
                s.last_progress = now
                s.epoch += 1
                try:
                    if s.state in _ACTIVE:
                        self._schedule(s, now + self._stuck_after)
                    elif self._idle_timeout is not None and s.state == "idle":
                        self._schedule(s, now + self._idle_timeout)
                except ValueError:
                    self._reschedule(s)
                return
        finally:
            self._busy = False
            self._release()
        raise _unknown(session_id)

    def progress_handle(self, handle: int, /) -> None:
        """:meth:`progress` by the session's handle (:attr:`SessionView.handle`,
        :attr:`SessionScope.handle`): no hashing, no lookup by id. KeyError
        once that session is closed or evicted (never another session's
        heartbeat), TypeError for a non-int."""
        handle = _check_handle(handle)
        raw = self._clock()
        if type(raw) is not float or raw - raw != 0.0:
            raw = _clock_value(raw)
        stall = self._stall
        sv = None if stall is None else self._read_stall(stall)
        self._enter()
        try:
            s = self._handles.get(handle)
            if s is not None:
                now = self._effective(raw, stall, sv)
                if s.stuck:
                    self._recover(s, now, now - s.activity())
                s.last_progress = now
                s.epoch += 1
                self._reschedule(s)
                return
        finally:
            self._exit()
        raise _unknown_handle(handle)

    def set_state(self, session_id: Hashable, state: str, queue_depth: int | None = None) -> None:
        """Change a session's state (and queue depth, when given).

        A change of state restarts the stuck clock, and a stuck session that
        changes state recovers. The same state again only updates the queue
        depth. KeyError when unknown, ValueError for an unknown state or a
        queue depth outside 0 .. 2**31 - 1."""
        state = _check_state(state)
        queue_depth = _check_depth(queue_depth)
        raw, stall, sv = self._read_time()
        hk = self._key(session_id)
        self._enter()
        try:
            s = self._sessions.get(hk)
            if s is not None:
                self._change_state(s, state, queue_depth, raw, stall, sv)
                return
        finally:
            self._exit()
        raise _unknown(session_id)

    def _set_state_handle(self, handle: int, state: str, queue_depth: int | None = None) -> None:
        handle = _check_handle(handle)
        state = _check_state(state)
        queue_depth = _check_depth(queue_depth)
        raw, stall, sv = self._read_time()
        self._enter()
        try:
            s = self._handles.get(handle)
            if s is not None:
                self._change_state(s, state, queue_depth, raw, stall, sv)
                return
        finally:
            self._exit()
        raise _unknown_handle(handle)

    def _change_state(self, s: _Session, state: str, queue_depth: int | None, raw: float,
                      stall: Any, sv: float | None) -> None:
        """Under the lock: set_state's change."""
        if queue_depth is not None:
            self._queued += queue_depth - (s.queue_depth or 0)
            s.queue_depth = queue_depth
        if state == s.state:
            return
        now = self._effective(raw, stall, sv)
        age = now - s.activity()
        self._counts[s.state] -= 1
        self._counts[state] += 1
        s.state = state
        s.state_since = now
        s.epoch += 1
        if s.stuck:
            self._recover(s, now, age)
        self._reschedule(s)

    def close(self, session_id: Hashable) -> bool:
        """Stop tracking a session. Idempotent: False when it was not open."""
        hk = self._key(session_id)
        self._enter()
        try:
            s = self._sessions.get(hk)
            if s is None:
                return False
            task = s.task
            self._remove(s)
        finally:
            self._exit()
        del task  # after the lock: the task's finalizer may call the registry
        return True

    def _close_handle(self, handle: int) -> bool:
        """Close this very session, not a later one opened under its id."""
        self._enter()
        try:
            s = self._handles.get(handle)
            if s is None:
                return False
            task = s.task
            self._remove(s)
        finally:
            self._exit()
        del task  # after the lock: the task's finalizer may call the registry
        return True

    def _handle_alive(self, handle: int) -> bool:
        return handle in self._handles

    def get(self, session_id: Hashable) -> SessionView:
        """A read-only view of a session; KeyError when unknown."""
        hk = self._key(session_id)
        self._enter()
        try:
            s = self._sessions.get(hk)
            if s is not None:
                return s.view()
        finally:
            self._exit()
        raise _unknown(session_id)

    def _get_handle(self, handle: int) -> SessionView:
        self._enter()
        try:
            s = self._handles.get(handle)
            if s is not None:
                return s.view()
        finally:
            self._exit()
        raise _unknown_handle(handle)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        hk = self._key(session_id)
        self._enter()  # the lookup may run an id's __eq__: under the lock, as for every lookup
        try:
            return hk in self._sessions
        finally:
            self._exit()

    def __iter__(self) -> Iterator[SessionView]:
        """Views of every session (a snapshot taken at the call)."""
        self._enter()
        try:
            views = [s.view() for s in self._sessions.values()]
        finally:
            self._exit()
        return iter(views)

    def time(self) -> float:
        """The registry's time now: the clock's reading minus the time the
        loop spent stalled since :meth:`set_stall_clock` (the clock itself
        without a stall clock); never decreasing. The times of a
        :class:`SessionView` (``opened_at``, ``state_since``,
        ``last_progress``...) are on this time: ``registry.time() -
        view.last_progress`` is how long a session has made no progress,
        stalls excluded."""
        raw, stall, sv = self._read_time()
        self._enter()
        try:
            return self._effective(raw, stall, sv)
        finally:
            self._exit()

    def counts(self) -> dict[str, int]:
        """Sessions per state (all four states, kept incrementally: O(1))."""
        self._enter()
        try:
            return dict(self._counts)
        finally:
            self._exit()

    def _filed(self) -> int:
        """Sessions with an entry in the wheel (the tests' view inside)."""
        return len(self._wheel)

    def _wheel_time(self) -> float:
        """The wheel's time: the latest time a check collected at."""
        wheel_time: float = self._wheel.time
        return wheel_time

    def queued(self) -> int:
        """The sum of the sessions' queue depths (kept incrementally: O(1))."""
        return self._queued

    def stuck(self) -> list[SessionView]:
        """Views of the stuck sessions, longest without progress first
        (O(stuck sessions): the others are not looked at)."""
        self._enter()
        try:
            views = [s.view() for s in self._stuck]
        finally:
            self._exit()
        views.sort(key=_since_progress_order)
        return views

    def next_check(self) -> float | None:
        """The earliest clock time at which :meth:`check` may find something
        (never later than the first due event; may be earlier), or None
        when nothing is scheduled. A pending recovery makes it now."""
        raw, stall, sv = self._read_time()
        self._enter()
        try:
            now = self._effective(raw, stall, sv)
            if self._events:
                return raw
            deadline = self._wheel.next_deadline()
        finally:
            self._exit()
        # From the registry's time back to the clock's: never later.
        return None if deadline is None else deadline + (raw - now)

    # -- lifetimes ----------------------------------------------------------------
    def bind_task(self, session_id: Hashable, task: asyncio.Future[Any]) -> None:
        """Close the session when ``task`` (an asyncio Task or Future) ends,
        however it ends. Binding another task replaces the first binding.
        Call it from the task's event loop."""
        if not hasattr(task, "add_done_callback"):
            raise TypeError(f"bind_task needs an asyncio Task or Future, got {task!r}")
        hk = self._key(session_id)
        self._enter()
        try:
            s = self._sessions.get(hk)
            if s is not None:
                old, old_cb = s.task, s.task_cb
                s.task = task
                s.task_cb = functools.partial(self._task_done, s)
                callback = s.task_cb
        finally:
            self._exit()
        if s is None:
            raise _unknown(session_id)
        if old is not None and old is not task and old_cb is not None:
            old.remove_done_callback(old_cb)
        task.add_done_callback(callback)

    def _task_done(self, s: _Session, task: Any) -> None:
        self._enter()
        try:
            if not s.alive or s.task is not task:
                return  # closed already, reopened under the same id, or rebound
            self._remove(s)
        finally:
            self._exit()

    # -- checking -------------------------------------------------------------------
    def _collect(self, now_arg: Any, events: list[SessionEvent],
                 pending: list[tuple[Any, Hashable]]) -> float:
        """Under the lock: the events due by now and the stuck reports that
        wait for the store (each with its session's id), appended to the
        caller's lists; returns now (the registry's time). Runs no caller
        code: the wheel holds the sessions themselves, and removal is by
        identity. Interrupted (Ctrl-C, out of memory building an event):
        every session taken off the wheel and not handled, and every one
        waiting for the store (``pending`` is emptied), goes back, due at
        once; only the event being built is lost."""
        raw, stall, sv = self._read_time(now_arg)
        due: list[_Session] = []
        done = 0
        self._enter()
        try:
            now = self._effective(raw, stall, sv)
            if self._events:
                events.extend(self._events)
                self._events = []
            due = self._wheel.expire(now)
            while done < len(due):
                s = due[done]
                done += 1
                wake = self._wake_time(s)
                if wake is None or wake > now:
                    # filed early (past the horizon, see _schedule_at): refile
                    if wake is not None:
                        self._schedule_at(s, wake)
                    continue
                if s.state in _ACTIVE:
                    if (
                        s.stuck
                        and self._evict_after is not None
                        and now >= s.stuck_since + self._evict_after
                    ):
                        events.append(self._evict(s, STUCK_TOO_LONG, now))
                    elif self._store is not None:
                        pending.append((_Pending(s, now), s.sid))
                    else:
                        events.append(self._report(s, now))
                elif s.state == "idle" and self._idle_timeout is not None:
                    events.append(self._evict(s, IDLE, now))
        except BaseException:
            for s in due[max(done - 1, 0):]:
                if s.alive:
                    self._reschedule(s)
            self._put_back(pending)
            raise
        finally:
            self._exit()
        return now

    def _unask(self, pending: list[tuple[Any, Hashable]]) -> None:
        """Questions collected and never settled (the check was interrupted
        before it could): their sessions go back to the wheel, due at once."""
        self._enter()
        try:
            self._put_back(pending)
        finally:
            self._exit()

    def _put_back(self, pending: list[tuple[Any, Hashable]]) -> None:
        for p, _ in pending:
            s = p.session
            if s.alive and s.epoch == p.epoch:
                self._reschedule(s)
        del pending[:]

    def _settle(self, pending: list[tuple[Any, Hashable]], answers: list[Any],
                now: float) -> list[SessionEvent]:
        """Under the lock: apply the store's answers. A session that changed
        since (progress, new state, closed) is left as it now is; one without
        an answer (the store call was interrupted) counts as present."""
        events = []
        settled = 0
        self._enter()
        try:
            for i, (p, _) in enumerate(pending):
                s = p.session
                settled = i + 1
                if not s.alive or s.epoch != p.epoch:
                    continue
                present = answers[i] if i < len(answers) else True
                if present:
                    events.append(self._report(s, now))
                else:
                    events.append(self._evict(s, GHOST, now))
        except BaseException:
            # Interrupted (Ctrl-C, out of memory building an event): the
            # questions not settled yet go back to the wheel, due at once,
            # asked again at the next check; none is left filed nowhere.
            self._put_back(pending[settled:])
            raise
        finally:
            self._exit()
        return events

    def _report(self, s: _Session, now: float) -> SessionEvent:
        if not s.stuck:
            s.stuck = True
            self._stuck[s] = None
            s.stuck_since = s.activity() + self._stuck_after
            s.reports = 0
            s.interval = self._stuck_after
        s.reports += 1
        s.interval = min(s.interval * self._backoff, self._max_interval)
        s.next_report_at = now + s.interval
        self._reschedule(s)
        next_at: float | None = s.next_report_at
        if self._evict_after is not None and s.stuck_since + self._evict_after <= s.next_report_at:
            next_at = None
        return SessionEvent(STUCK, s.view(), now, None, now - s.activity(), s.reports, next_at)

    def _evict(self, s: _Session, reason: str, now: float) -> SessionEvent:
        reports = s.reports if s.stuck else 0
        event = SessionEvent(EVICTED, s.view(), now, reason, now - s.activity(), reports, None)
        self._remove(s)
        return event

