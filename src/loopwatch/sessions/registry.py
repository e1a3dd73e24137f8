"""SessionRegistry's shared part: the value types (SessionView,
SessionEvent, RegistryFull), the validation of its options, and what both
implementations do alike on top of their session tables (checking with a
store, publishing events, watching, the session scope).

The tables are ``sessions.native`` (a C table: ext/sessions/) and its
pure-Python twin ``sessions.twin``; ``loopwatch.SessionRegistry`` is the
one ``loopwatch._selector`` picked. Each provides, besides the public calls
the README lists, ``_collect(now, events, pending)`` (the events due and the
store questions to ask, under its lock, appended to the caller's lists),
``_settle(pending, answers, now)`` (the store's answers applied) and
``_unask(pending)`` (questions put back unanswered), which
:class:`RegistryBase` drives.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Hashable

__all__ = [
    "RegistryFull",
    "SessionEvent",
    "SessionScope",
    "SessionView",
    "STATES",
]

logger = logging.getLogger("loopwatch.sessions")

STATES = ("idle", "queued", "processing", "waiting")
_ACTIVE = frozenset(("processing", "waiting"))  # the states in which a session can get stuck
_STATE_SET = frozenset(STATES)

MAX_DURATION = 365.0 * 86400.0  # well inside the wheel's two-year horizon
# The most sessions a registry holds (the native table's record indices fit
# 26 bits); max_sessions above it is refused by both implementations.
MAX_SESSIONS = 2**26 - 2
# A queue depth is kept in 32 bits: 0 .. 2**31 - 1.
MAX_QUEUE_DEPTH = 2**31 - 1
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
REENTERED = (
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
        handle: an opaque int naming this opening of the session, for
            :meth:`SessionRegistry.progress_handle` (the fastest heartbeat:
            no hashing, no lookup by id). It never names another session:
            once the session is closed, it is unknown (KeyError).
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
    handle: int = 0


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


def _unknown_handle(handle: Any) -> KeyError:
    return KeyError(f"unknown session handle {handle!r} (closed, evicted, or never opened)")


def _check_handle(handle: Any) -> int:
    """A handle as a plain int, or TypeError."""
    if type(handle) is int:
        return handle
    if isinstance(handle, bool) or not isinstance(handle, int):
        raise TypeError(f"a session handle is an int, got {type(handle).__name__}")
    return int.__int__(handle)


def _check_depth(queue_depth: Any) -> int | None:
    """A queue depth as a plain int (or None), or TypeError/ValueError."""
    if queue_depth is None:
        return None
    if isinstance(queue_depth, bool) or not isinstance(queue_depth, int):
        raise TypeError(f"queue_depth must be an int or None, got {queue_depth!r}")
    queue_depth = int.__int__(queue_depth)
    if not 0 <= queue_depth <= MAX_QUEUE_DEPTH:
        raise ValueError(f"queue_depth must be between 0 and {MAX_QUEUE_DEPTH}, got {queue_depth!r}")
    depth: int = queue_depth
    return depth



SESSION_REGISTRY_DOC = """Sessions and their states, with stuck detection that never scans.

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
        max_sessions: :meth:`open` beyond this raises :class:`RegistryFull`
            (at most 2**26 - 2: 67,108,862).
        clock: the monotonic clock, in seconds (tests pass a fake one). It
            must return finite numbers (else TypeError/ValueError); a clock
            that goes back is held at its latest reading: the registry's time
            never decreases. ``time.monotonic`` (the default) is read in C by
            the native registry.
        wheel_factory: the pure-Python registry only (``loopwatch.sessions.
            twin.SessionRegistry``): ``(resolution, now=...) -> TimerWheel``,
            loopwatch's selected TimerWheel by default. The native registry
            files its sessions in a wheel inside its own table and refuses
            one (TypeError).

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


class RegistryBase:
    """What both SessionRegistry implementations share: the options and
    their validation, checking (with the store asked outside the lock),
    publishing events, ``watch()`` and ``session()``. Not public: see
    :class:`loopwatch.SessionRegistry`."""

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
        if self.__dict__.get("_configured"):  # once: nothing is reconfigured
            raise RuntimeError("SessionRegistry is already initialized")
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
        if not 1 <= max_sessions <= MAX_SESSIONS:
            raise ValueError(f"max_sessions must be between 1 and {MAX_SESSIONS}, got {max_sessions!r}")
        if store is not None and not callable(store):
            raise TypeError("store must be a callable session_id -> bool")
        if on_evict is not None and not callable(on_evict):
            raise TypeError("on_evict must be a callable")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._max_sessions = int.__int__(max_sessions)
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
        self._setup(_clock_value(clock()), wheel_factory)
        self._configured = True

    def _setup(self, start: float, wheel_factory: Callable[..., Any] | None) -> None:
        raise NotImplementedError

    def _collect(self, now: Any, events: list[SessionEvent],
                 pending: list[tuple[Any, Hashable]]) -> float:
        raise NotImplementedError

    def _unask(self, pending: list[tuple[Any, Hashable]]) -> None:
        raise NotImplementedError

    def _settle(self, pending: list[tuple[Any, Hashable]], answers: list[Any],
                now: float) -> list[SessionEvent]:
        raise NotImplementedError

    # -- configuration -------------------------------------------------------
    @property
    def stuck_after(self) -> float:
        """Seconds without progress after which an active session is stuck."""
        return self._stuck_after

    @property
    def max_sessions(self) -> int:
        """How many sessions :meth:`open` accepts before :class:`RegistryFull`."""
        return self._max_sessions

    if TYPE_CHECKING:  # each implementation's own
        def __len__(self) -> int: ...
        def counts(self) -> dict[str, int]: ...
        def next_check(self) -> float | None: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sessions={len(self)} counts={self.counts()}>"

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


    # -- lifetimes ----------------------------------------------------------------
    def session(self, session_id: Hashable, key: Any = None, state: str = "idle") -> SessionScope:
        """A context manager (``with`` or ``async with``) that opens the
        session on entry and closes it on every way out: return, exception,
        cancellation, timeout, or the coroutine being closed."""
        return SessionScope(self, session_id, key, state)

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
        events: list[SessionEvent] = []
        pending: list[tuple[Any, Hashable]] = []
        answers: list[Any] = []
        at: float | None = None
        try:
            # _collect fills the lists as it goes: whatever interrupts this
            # check, what was collected is in hand here (see _answer).
            at = self._collect(now, events, pending)
            for _, sid in pending:
                answers.append(self._ask_store(sid))
        finally:
            # Even when interrupted: settle (unanswered = present), log, re-raise.
            if pending:
                self._answer(events, pending, answers, at)
            self._publish(events)
        return events

    def _answer(self, events: list[SessionEvent], pending: list[tuple[Any, Hashable]],
                answers: list[Any], at: float | None) -> None:
        """The end of every check that asked the store, even an interrupted
        one: settle the answers (unanswered = present), or, interrupted
        before the time of the collection was in hand, put the questions
        back (due at once)."""
        if at is None:
            self._unask(pending)
        else:
            events += self._settle(pending, answers, at)

    async def acheck(self, now: float | None = None) -> list[SessionEvent]:
        """:meth:`check` for a store that is async (or sync: both work).
        The store is asked about every due session at once (gathered)."""
        events: list[SessionEvent] = []
        pending: list[tuple[Any, Hashable]] = []
        answers: list[Any] = []
        at: float | None = None
        try:
            at = self._collect(now, events, pending)
            if pending:
                asks = [self._ask_store(sid, allow_async=True) for _, sid in pending]
                waits = [a for a in asks if inspect.isawaitable(a)]
                if waits:
                    done = iter(await asyncio.gather(*waits, return_exceptions=True))
                    asks = [
                        self._store_answer(sid, next(done))
                        if inspect.isawaitable(a) else a
                        for (_, sid), a in zip(pending, asks)
                    ]
                answers = asks
        finally:
            # Also on cancellation: settle (unanswered = present), log, re-raise.
            if pending:
                self._answer(events, pending, answers, at)
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
    ``progress()`` and ``set_state()`` to the registry, by the session's
    handle: no hashing, no lookup by id, and never another session opened
    later under the same id."""

    __slots__ = ("registry", "session_id", "_key", "_state", "_handle")

    def __init__(self, registry: Any, session_id: Hashable, key: Any, state: str):
        _check_state(state)
        self.registry = registry
        self.session_id = session_id
        self._key = key
        self._state = state
        self._handle: int | None = None

    @property
    def handle(self) -> int | None:
        """The session's handle (:attr:`SessionView.handle`) once entered;
        None before."""
        return self._handle

    def progress(self) -> None:
        """:meth:`SessionRegistry.progress` for this session (KeyError once
        it was closed or evicted)."""
        handle = self._handle
        if handle is None:
            raise _unknown(self.session_id)
        self.registry.progress_handle(handle)

    def set_state(self, state: str, queue_depth: int | None = None) -> None:
        """:meth:`SessionRegistry.set_state` for this session."""
        handle = self._handle
        if handle is None:
            raise _unknown(self.session_id)
        self.registry._set_state_handle(handle, state, queue_depth)

    @property
    def view(self) -> SessionView:
        """The session's current view (KeyError once it was closed or evicted)."""
        handle = self._handle
        if handle is None:
            raise _unknown(self.session_id)
        view: SessionView = self.registry._get_handle(handle)
        return view

    @property
    def is_open(self) -> bool:
        """False before entry, and once the session was closed or evicted."""
        handle = self._handle
        return handle is not None and bool(self.registry._handle_alive(handle))

    def __enter__(self) -> SessionScope:
        if self._handle is not None:
            raise RuntimeError("a session scope can be entered only once")
        self._handle = self.registry._open_handle(self.session_id, self._key, self._state)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._handle is not None:
            self.registry._close_handle(self._handle)

    async def __aenter__(self) -> SessionScope:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        # Never suspends: it also runs when the coroutine is closed (GeneratorExit).
        self.__exit__()
