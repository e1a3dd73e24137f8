"""SessionRegistry: in-memory session state that reports stuck sessions with
backoff, evicts ghosts, and cannot outlive its owner.

Each session has at most one entry in a TimerWheel, at its next "interesting"
time: when it would become stuck, its next stuck report, its eviction, or its
idle timeout. ``progress()`` only moves that entry (O(1), lazily in the
wheel), and ``check()`` touches only the entries that are due: no scan, ever.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Hashable, Iterator

__all__ = [
    "RegistryFull",
    "SessionEvent",
    "SessionRegistry",
    "SessionScope",
    "SessionView",
    "STATES",
]

from . import wheel_twin as _wheel_twin

logger = logging.getLogger("loopwatch.sessions")

STATES = ("idle", "queued", "processing", "waiting")
_ACTIVE = frozenset(("processing", "waiting"))  # the states in which a session can get stuck
_STATE_SET = frozenset(STATES)

MAX_DURATION = 365.0 * 86400.0  # well inside the wheel's two-year horizon
STUCK = "stuck"
RECOVERED = "recovered"
EVICTED = "evicted"
GHOST = "ghost"
STUCK_TOO_LONG = "stuck_too_long"
IDLE = "idle"
# check(now=...) may be at most this far ahead of the registry's clock: a time
# from another clock (time.time() on a monotonic registry) would otherwise move
# the wheel's cursor years ahead and pile every later deadline into one slot.
MAX_CHECK_AHEAD = 1.0
_REENTERED = (
    "SessionRegistry re-entered while it holds its lock (from a session id's "
    "__eq__ during a registry call): call the registry from elsewhere"
)


def _printable(value: Any) -> str:
    """``str(value)`` for a log line: control characters, line breaks and
    escape sequences written as ``repr`` writes them, so no id or key can
    forge, break or hide a line."""
    try:
        text = value if type(value) is str else str.__str__(str(value))
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _clock_value(t: Any, what: str = "the registry's clock") -> float:
    """A time read from a caller's clock as a finite float, or TypeError/ValueError."""
    if type(t) is not float:
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"{what} must return a number of seconds, got {type(t).__name__}")
        t = int.__float__(t) if isinstance(t, int) else float.__float__(t)
    if not math.isfinite(t):
        raise ValueError(f"{what} returned {t!r}, not a finite time")
    seconds: float = t
    return seconds


class RegistryFull(RuntimeError):
    """Raised by :meth:`SessionRegistry.open` when the registry already holds
    ``max_sessions`` sessions. Nothing is evicted to make room."""

    def __init__(self, *args: object) -> None:  # a signature inspect can read
        super().__init__(*args)


@dataclass(frozen=True, slots=True)
class SessionView:
    """A read-only snapshot of one session.

    Attributes:
        session_id: the id given to :meth:`SessionRegistry.open`.
        key: the caller's label (a routing key, a user...), or None.
        state: ``"idle"``, ``"queued"``, ``"processing"`` or ``"waiting"``.
        queue_depth: the last queue depth given to ``set_state``, or None.
        opened_at: the registry's time of ``open`` (its clock, minus the
            loop's stalls with a stall clock: :meth:`SessionRegistry.time`).
        state_since: the registry's time of the last state change.
        last_progress: the registry's time of the last ``progress()`` (or
            ``opened_at``).
        stuck_reports: stuck reports made in the current stuck episode (0 when
            the session is not stuck).
        stuck: whether the session is stuck now.
        task: the task bound by ``bind_task``, or None.
    """

    session_id: Hashable
    key: Any
    state: str
    queue_depth: int | None
    opened_at: float
    state_since: float
    last_progress: float
    stuck_reports: int
    stuck: bool = False
    task: Any = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something :meth:`SessionRegistry.check` found.

    Attributes:
        kind: ``"stuck"``, ``"recovered"`` or ``"evicted"``.
        session: the session as it was at the event.
        at: clock time at which the event was reported.
        reason: for ``evicted``: ``"ghost"``, ``"stuck_too_long"`` or ``"idle"``;
            otherwise None.
        age: seconds without progress (for ``idle``: seconds idle) at ``at``.
        reports: stuck reports made in this stuck episode, this one included.
        next_report_at: for ``stuck``: when the next report is due (None when
            the session will be evicted first).
    """

    kind: str
    session: SessionView
    at: float
    reason: str | None = None
    age: float = 0.0
    reports: int = 0
    next_report_at: float | None = None

    @property
    def session_id(self) -> Hashable:
        """The id of the session the event is about."""
        return self.session.session_id

    def __str__(self) -> str:
        # The log line: the id and key in printable form (control characters
        # escaped); the event's fields keep the raw values.
        s = self.session
        key = "-" if s.key is None else _printable(s.key)
        depth = "-" if s.queue_depth is None else s.queue_depth
        head = f"sessionId={_printable(s.session_id)} sessionKey={key} state={s.state}"
        if self.kind == STUCK:
            nxt = (
                "never (evicted first)"
                if self.next_report_at is None
                else f"{self.next_report_at - self.at:.0f}s"
            )
            return (
                f"stuck session: {head} age={self.age:.0f}s queueDepth={depth} "
                f"reports={self.reports} nextReportIn={nxt}"
            )
        if self.kind == RECOVERED:
            return (
                f"session recovered: {head} stuckFor={self.age:.0f}s queueDepth={depth} "
                f"reports={self.reports}"
            )
        return (
            f"session evicted: {head} reason={self.reason} age={self.age:.0f}s "
            f"queueDepth={depth} reports={self.reports}"
        )


class _Session:
    __slots__ = (
        "sid", "key", "state", "queue_depth", "opened_at", "state_since", "last_progress",
        "stuck", "stuck_since", "reports", "interval", "next_report_at", "task", "task_cb",
        "epoch", "hkey", "alive",
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

    def activity(self) -> float:
        """The last sign of life: progress or a state change."""
        return self.last_progress if self.last_progress > self.state_since else self.state_since

    def view(self) -> SessionView:
        return SessionView(
            self.sid, self.key, self.state, self.queue_depth, self.opened_at,
            self.state_since, self.last_progress, self.reports if self.stuck else 0,
            self.stuck, self.task,
        )


def _duration(name: str, value: Any, *, allow_none: bool = False,
              allow_zero: bool = False) -> Any:  # float, or None if allowed
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    if value > MAX_DURATION:
        raise ValueError(f"{name} must be at most one year ({MAX_DURATION:.0f} s), got {value!r}")
    return value


def _check_state(state: Any) -> str:
    """The state as a plain str (a str subclass's own __hash__/__eq__ never
    runs under the lock), or ValueError."""
    if isinstance(state, str):
        plain = str.__str__(state)
        if plain in _STATE_SET:
            return plain
    raise ValueError(f"unknown session state {state!r}; valid states: {', '.join(STATES)}")


def _unknown(session_id: Hashable) -> KeyError:
    return KeyError(f"unknown session {session_id!r}")


class _Pending:
    """A stuck report waiting for the store's answer."""

    __slots__ = ("session", "epoch", "now")

    def __init__(self, session: _Session, now: float) -> None:
        self.session = session
        self.epoch = session.epoch
        self.now = now


class SessionRegistry:
    """Sessions and their states, with stuck detection that never scans.

    Args:
        stuck_after: a session ``processing`` or ``waiting`` with no progress
            (no ``progress()`` and no state change) for this long is stuck.
        report_backoff: each stuck report comes ``report_backoff`` times later
            than the previous gap (the first at ``stuck_after``, the next
            ``stuck_after * report_backoff`` after it, ...).
        max_report_interval: cap on the gap between two stuck reports.
        evict_after: a session stuck for this long (since it became stuck) is
            evicted with reason ``stuck_too_long``; None never evicts.
        idle_timeout: a session ``idle`` this long is evicted with reason
            ``idle``; None (default) never does.
        store: ``session_id -> bool``, the caller's own record of sessions.
            When a session becomes stuck, and at each stuck report after, a
            session the store does not have is evicted as a ghost. An async
            store is awaited by :meth:`acheck`. A store that raises counts as
            "present" (the error is logged): nothing is evicted on doubt.
        on_evict: called with the :class:`SessionView` of every evicted
            session (after it is removed, outside the registry's lock); it
            may, for example, cancel ``view.task``. Its errors are logged.
        max_sessions: :meth:`open` beyond this raises :class:`RegistryFull`.
        clock: the monotonic clock, in seconds (tests pass a fake one). It
            must return finite numbers (else TypeError/ValueError); a clock
            that goes back is held at its latest reading: the registry's time
            never decreases.
        wheel_factory: ``(resolution, now=...) -> TimerWheel``; loopwatch's
            selected TimerWheel by default.

    ``open``, ``progress``, ``set_state``, ``close``, ``get`` and ``check``
    may be called from any thread. ``bind_task`` and the async context
    manager belong to the event loop's thread.

    Hostile callers: nothing a session id's ``__hash__``/``__eq__``, the
    clock, the stall clock, the store or ``on_evict`` does (raise, call the
    registry back, mutate) crashes the registry or leaves it half-changed.
    The clock, the stall clock, the id's ``__hash__``, the store and
    ``on_evict`` run outside the lock, so calling the registry from them
    works; an id's ``__eq__`` (run only when two ids hash alike) runs under
    it, and calling the registry from there raises RuntimeError. A call that
    raises leaves every structure as before it (or as after it).

    Stalls: see :meth:`set_stall_clock`. With a stall clock attached, the
    registry's times (``opened_at``, ``last_progress``, ``at`` ...) are on
    the unstalled clock: ``clock()`` minus the stall time counted since.
    """

    def __init__(
        self,
        stuck_after: float = 120.0,
        report_backoff: float = 2.0,
        max_report_interval: float = 1800.0,
        evict_after: float | None = 600.0,
        idle_timeout: float | None = None,
        store: Callable[[Hashable], bool | Awaitable[bool]] | None = None,
        on_evict: Callable[[SessionView], Any] | None = None,
        max_sessions: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        wheel_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._stuck_after: float = _duration("stuck_after", stuck_after)
        backoff = _duration("report_backoff", report_backoff)
        if backoff < 1.0:
            raise ValueError(f"report_backoff must be >= 1, got {backoff!r}")
        self._backoff = backoff
        self._max_interval = _duration("max_report_interval", max_report_interval)
        self._evict_after: float | None = _duration("evict_after", evict_after, allow_none=True, allow_zero=True)
        self._idle_timeout: float | None = _duration("idle_timeout", idle_timeout, allow_none=True)
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int):
            raise TypeError(f"max_sessions must be an int, got {max_sessions!r}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions!r}")
        if store is not None and not callable(store):
            raise TypeError("store must be a callable session_id -> bool")
        if on_evict is not None and not callable(on_evict):
            raise TypeError("on_evict must be a callable")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._max_sessions = max_sessions
        self._store: Any = store
        self._store_is_async = store is not None and (
            inspect.iscoroutinefunction(store)
            or inspect.iscoroutinefunction(getattr(store, "__call__", None))
        )
        self._on_evict = on_evict
        # Called with every event, outside the lock (add_event_listener);
        # replaced, never mutated, so _publish iterates without locking.
        self._event_listeners: tuple[Callable[[SessionEvent], Any], ...] = ()
        self._clock = clock
        if wheel_factory is None:
            from .._selector import TimerWheel

            wheel_factory = TimerWheel
        start = _clock_value(clock())
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

    # -- configuration -------------------------------------------------------
    @property
    def stuck_after(self) -> float:
        """Seconds without progress after which an active session is stuck."""
        return self._stuck_after

    @property
    def max_sessions(self) -> int:
        """How many sessions :meth:`open` accepts before :class:`RegistryFull`."""
        return self._max_sessions

    def __repr__(self) -> str:
        return f"<SessionRegistry sessions={len(self._sessions)} counts={self.counts()}>"

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
    def add_event_listener(self, listener: Callable[[SessionEvent], Any]) -> None:
        """Call ``listener(event)`` with every :class:`SessionEvent` the
        registry reports (``stuck``, ``recovered``, ``evicted``), whatever
        the logging configuration: after the event is logged and before
        ``on_evict``, outside the registry's lock, in the thread that ran
        the check. Exporters count evictions this way. Its exceptions are
        logged, never raised. Adding the same listener twice calls it once.
        """
        if not callable(listener):
            raise TypeError("listener must be a callable taking a SessionEvent")
        listeners = self._event_listeners
        if listener not in listeners:
            self._event_listeners = listeners + (listener,)

    def remove_event_listener(self, listener: Callable[[SessionEvent], Any]) -> bool:
        """Stop calling ``listener``; False when it was not added."""
        listeners = self._event_listeners
        if listener not in listeners:
            return False
        self._event_listeners = tuple(fn for fn in listeners if fn != listener)
        return True

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
        try:
            if self._stall_base is not None and self._stall_last is not None:
                self._shift += self._stall_last - self._stall_base
            self._stall = stalled
            # A first reading that failed: the first good one becomes the base.
            self._stall_base = self._stall_last = first
            self._stall_warned = False
        finally:
            self._exit()

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
        s.stuck = False
        s.reports = 0
        self._events.append(
            SessionEvent(RECOVERED, s.view(), now, None, age, view_reports, None)
        )

    def _remove(self, s: _Session) -> None:
        # A stored key, found by identity: no caller code runs, nothing fails.
        del self._sessions[s.hkey]
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
        return self._open(session_id, key, state).view()

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
                self._reschedule(s)
                try:
                    existing = self._sessions.setdefault(hk, s)  # the id's __eq__ may run
                except BaseException:
                    self._wheel.cancel(s)
                    raise
                if existing is s:
                    hk.stored = True
                    self._counts[state] += 1
                    return s
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

    def set_state(self, session_id: Hashable, state: str, queue_depth: int | None = None) -> None:
        """Change a session's state (and queue depth, when given).

        A change of state restarts the stuck clock, and a stuck session that
        changes state recovers. The same state again only updates the queue
        depth. KeyError when unknown, ValueError for an unknown state or a
        negative queue depth."""
        state = _check_state(state)
        if queue_depth is not None:
            if isinstance(queue_depth, bool) or not isinstance(queue_depth, int):
                raise TypeError(f"queue_depth must be an int or None, got {queue_depth!r}")
            queue_depth = int.__int__(queue_depth)
            if queue_depth < 0:
                raise ValueError(f"queue_depth must be >= 0, got {queue_depth!r}")
        raw, stall, sv = self._read_time()
        hk = self._key(session_id)
        self._enter()
        try:
            s = self._sessions.get(hk)
            if s is not None:
                if queue_depth is not None:
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
                return
        finally:
            self._exit()
        raise _unknown(session_id)

    def close(self, session_id: Hashable) -> bool:
        """Stop tracking a session. Idempotent: False when it was not open."""
        hk = self._key(session_id)
        self._enter()
        try:
            s = self._sessions.get(hk)
            if s is None:
                return False
            self._remove(s)
            return True
        finally:
            self._exit()

    def _close_exact(self, s: _Session) -> bool:
        """Close this very session, not a later one opened under its id."""
        self._enter()
        try:
            if not s.alive:
                return False
            self._remove(s)
            return True
        finally:
            self._exit()

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

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return self._key(session_id) in self._sessions

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
    def session(self, session_id: Hashable, key: Any = None, state: str = "idle") -> SessionScope:
        """A context manager (``with`` or ``async with``) that opens the
        session on entry and closes it on every way out: return, exception,
        cancellation, timeout, or the coroutine being closed."""
        return SessionScope(self, session_id, key, state)

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
    def check(self, now: float | None = None) -> list[SessionEvent]:
        """The events due by ``now`` (default: the clock), each logged on
        ``loopwatch.sessions``. Costs O(events due): nothing else is touched.

        ``now`` must be a time read from the registry's clock: more than
        ``MAX_CHECK_AHEAD`` (1 s) ahead of ``clock()`` raises ValueError (a
        time from another clock would move the wheel years ahead); a ``now``
        before the registry's latest time counts as that time. With a stall
        clock it is shifted like the clock (see :meth:`set_stall_clock`).
        With an async store use :meth:`acheck` (TypeError here)."""
        if self._store_is_async:
            raise TypeError("the store is async: use 'await registry.acheck()'")
        events, pending, now = self._collect(*self._read_time(now))
        answers: list[Any] = []
        try:
            for p in pending:
                answers.append(self._ask_store(p.session.sid))
        finally:
            # Even when the store call is interrupted: settle (unanswered =
            # present) and log what happened, then let the error through.
            if pending:
                events += self._settle(pending, answers, now)
            self._publish(events)
        return events

    async def acheck(self, now: float | None = None) -> list[SessionEvent]:
        """:meth:`check` for a store that is async (or sync: both work).
        The store is asked about every due session at once (gathered)."""
        events, pending, now = self._collect(*self._read_time(now))
        answers: list[Any] = []
        try:
            if pending:
                asks = [self._ask_store(p.session.sid, allow_async=True) for p in pending]
                waits = [a for a in asks if inspect.isawaitable(a)]
                if waits:
                    done = iter(await asyncio.gather(*waits, return_exceptions=True))
                    asks = [
                        self._store_answer(p.session.sid, next(done))
                        if inspect.isawaitable(a) else a
                        for p, a in zip(pending, asks)
                    ]
                answers = asks
        finally:
            # Also on cancellation: settle (unanswered = present), log, re-raise.
            if pending:
                events += self._settle(pending, answers, now)
            self._publish(events)
        return events

    async def watch(self, max_interval: float = 1.0) -> None:
        """Check forever (until cancelled): each time the next event may be
        due, and at least every ``max_interval`` seconds. Events are logged;
        run it as a task: ``asyncio.create_task(registry.watch())``."""
        max_interval = _duration("max_interval", max_interval)
        while True:
            await self.acheck()
            nxt = self.next_check()
            delay = max_interval if nxt is None else min(max_interval, nxt - self._clock())
            await asyncio.sleep(max(delay, 0.0))

    def _ask_store(self, session_id: Hashable, allow_async: bool = False) -> Any:
        try:
            answer = self._store(session_id)
        except Exception:
            logger.exception("session store failed for sessionId=%s; keeping it",
                             _printable(session_id), extra={"session_id": session_id})
            return True
        if inspect.isawaitable(answer):
            if allow_async:
                return answer
            if hasattr(answer, "close"):
                answer.close()
            logger.error("session store returned an awaitable; use acheck(). Keeping %s",
                         _printable(session_id), extra={"session_id": session_id})
            return True
        return bool(answer)

    def _store_answer(self, session_id: Hashable, answer: Any) -> bool:
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer
            logger.error("session store failed for sessionId=%s; keeping it",
                         _printable(session_id), exc_info=answer,
                         extra={"session_id": session_id})
            return True
        return bool(answer)

    def _collect(self, raw: float, stall: Any, sv: float | None
                 ) -> tuple[list[SessionEvent], list[_Pending], float]:
        """Under the lock: the events due by now, the stuck reports that
        wait for the store, and now (the registry's time). Runs no caller code:
        the wheel holds the sessions themselves, and removal is by identity."""
        events: list[SessionEvent] = []
        pending: list[_Pending] = []
        self._enter()
        try:
            now = self._effective(raw, stall, sv)
            if self._events:
                events, self._events = self._events, []
            for s in self._wheel.expire(now):
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
                        pending.append(_Pending(s, now))
                    else:
                        events.append(self._report(s, now))
                elif s.state == "idle" and self._idle_timeout is not None:
                    events.append(self._evict(s, IDLE, now))
        finally:
            self._exit()
        return events, pending, now

    def _settle(self, pending: list[_Pending], answers: list[Any], now: float) -> list[SessionEvent]:
        """Under the lock: apply the store's answers. A session that changed
        since (progress, new state, closed) is left as it now is; one without
        an answer (the store call was interrupted) counts as present."""
        events = []
        self._enter()
        try:
            for i, p in enumerate(pending):
                s = p.session
                if not s.alive or s.epoch != p.epoch:
                    continue
                present = answers[i] if i < len(answers) else True
                if present:
                    events.append(self._report(s, now))
                else:
                    events.append(self._evict(s, GHOST, now))
        finally:
            self._exit()
        return events

    def _report(self, s: _Session, now: float) -> SessionEvent:
        if not s.stuck:
            s.stuck = True
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

    def _publish(self, events: list[SessionEvent]) -> None:
        """Outside the lock: log each event, then call on_evict."""
        for event in events:
            level = logging.INFO if event.kind == RECOVERED else logging.WARNING
            if logger.isEnabledFor(level):
                # The line escapes the id and key (str(event)); the record's
                # structured fields keep them raw.
                logger.log(level, "%s", event, extra={
                    "session_id": event.session_id,
                    "session_key": event.session.key,
                    "session_event": event,
                })
        for listener in self._event_listeners:
            for event in events:
                try:
                    listener(event)
                except Exception:
                    logger.exception("session event listener failed for sessionId=%s",
                                     _printable(event.session_id),
                                     extra={"session_id": event.session_id})
        if self._on_evict is None:
            return
        for event in events:
            if event.kind == EVICTED:
                try:
                    self._on_evict(event.session)
                except Exception:
                    logger.exception("on_evict failed for sessionId=%s",
                                     _printable(event.session_id),
                                     extra={"session_id": event.session_id})


class SessionScope:
    """One session's lifetime as a context manager; see
    :meth:`SessionRegistry.session`. Inside the block it forwards
    ``progress()`` and ``set_state()`` to the registry."""

    __slots__ = ("registry", "session_id", "_key", "_state", "_session")

    def __init__(self, registry: SessionRegistry, session_id: Hashable, key: Any, state: str):
        _check_state(state)
        self.registry = registry
        self.session_id = session_id
        self._key = key
        self._state = state
        self._session: _Session | None = None

    def progress(self) -> None:
        """:meth:`SessionRegistry.progress` for this session."""
        self.registry.progress(self.session_id)

    def set_state(self, state: str, queue_depth: int | None = None) -> None:
        """:meth:`SessionRegistry.set_state` for this session."""
        self.registry.set_state(self.session_id, state, queue_depth)

    @property
    def view(self) -> SessionView:
        """The session's current view (KeyError once it was evicted)."""
        return self.registry.get(self.session_id)

    @property
    def is_open(self) -> bool:
        """False before entry, and once the session was closed or evicted."""
        s = self._session
        return s is not None and s.alive

    def __enter__(self) -> SessionScope:
        if self._session is not None:
            raise RuntimeError("a session scope can be entered only once")
        self._session = self.registry._open(self.session_id, self._key, self._state)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._session is not None:
            self.registry._close_exact(self._session)

    async def __aenter__(self) -> SessionScope:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        # Never suspends: it also runs when the coroutine is closed (GeneratorExit).
        self.__exit__()
