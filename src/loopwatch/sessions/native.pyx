# cython: language_level=3, boundscheck=False, wraparound=False
"""The native SessionRegistry: a thin binding over ext/sessions/, the C
session table (one slab of 64-byte records with the timer wheel's links
inside, a hash index by id, the stuck sessions' bookkeeping, counts, the
registry's time and a mutex). sessions/twin.py is the pure-Python twin;
sessions/registry.py holds what both share (checking with the store,
publishing events, the session scope).

What the binding does that C cannot: own the references to ids, keys and
tasks; hash ids (outside the lock) and compare two ids whose hashes match
(the eq callback, under it); read a caller's clock and stall clock
(outside the lock); build views and events (after the lock is released,
from a snapshot taken under it, so no Python code runs while it is held
but an id's ``__eq__``).

A handle is ``gen << 32 | index``: the record's index in the slab and its
generation, which the table bumps when the record is freed, so a handle
never names a later session that reuses the record.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
cimport cython

from loopwatch.sessions.lw_sessions cimport *

import functools as _functools
import json as _json
import math as _math
import os as _os
import time as _time
import weakref as _weakref

from loopwatch.sessions.registry import (
    MAX_CHECK_AHEAD,
    REENTERED,
    SESSION_REGISTRY_DOC,
    STATES,
    RegistryBase,
    RegistryFull,
    SessionEvent,
    SessionView,
    _check_depth,
    _check_handle,
    _check_state,
    _clock_value,
    _printable,
    _unknown,
    _unknown_handle,
    logger,
)

__all__ = ["SessionRegistry"]

cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyThreadState_Get()
    void PyErr_Clear()
    # Declared without an exception value: it returns -1 with the error set,
    # which the C lookup passes up as LW_SESSIONS_EQERR.
    int _rich_eq "PyObject_RichCompareBool" (PyObject *a, PyObject *b, int op)
    int Py_EQ

cdef extern from "lw_loop_clock.h" nogil:
    int64_t lw_loop_now_ns()

RECORD_BYTES = sizeof(lw_sess)

cdef tuple _STATE_NAMES = STATES
cdef dict _STATE_NUMBERS = {name: i for i, name in enumerate(STATES)}
cdef tuple _KINDS = (None, "stuck", "recovered", "evicted")
cdef tuple _REASONS = (None, "ghost", "stuck_too_long", "idle")
cdef object _monotonic = _time.monotonic
cdef double _INF = float("inf")

# Every live table, for the fork handler: a child's copy of a mutex may
# have been held by a thread the child does not have.
_TABLES = _weakref.WeakSet()


def _after_fork_in_child():
    for table in list(_TABLES):
        (<_NativeTable>table)._after_fork_child()


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


cdef extern from *:
    """
    /* An id whose hash and equality are the interpreter's own C code (no
     * caller code runs for them, whatever they are compared with). */
    static inline int lw_plain_id(PyObject *o) {
        PyTypeObject *t = Py_TYPE(o);
        return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyBytes_Type || t == &PyFloat_Type;
    }

    /* Whether a stored id and a probed one whose stored hashes (32 bits)
     * match may be asked __eq__: 1 when their whole hashes are equal (or
     * both are plain: their equality runs no caller code), 0 when they
     * differ, -1 on error. The stored id's whole hash: its own C code for a
     * plain id, else the one kept in `hashes` (record index -> hash). */
    static int lw_same_whole_hash(PyObject *stored, PyObject *probe, uint32_t index,
                                  Py_hash_t probe_full, PyObject *hashes) {
        Py_hash_t full;
        PyObject *key, *kept;
        if (lw_plain_id(stored) && lw_plain_id(probe))
            return 1;
        if (lw_plain_id(stored)) {
            full = PyObject_Hash(stored);
            if (full == -1 && PyErr_Occurred())
                return -1;
        } else {
            key = PyLong_FromUnsignedLong(index);
            if (!key)
                return -1;
            kept = PyDict_GetItemWithError(hashes, key); /* borrowed */
            Py_DECREF(key);
            if (!kept) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_SystemError, "loopwatch: a stored session id's hash is missing");
                return -1;
            }
            full = PyLong_AsSsize_t(kept);
            if (full == -1 && PyErr_Occurred())
                return -1;
        }
        return full == probe_full;
    }

    /* Under the table's lock, where nothing may fail half-way: keep the
     * whole hash of a stored id that is not plain (0, or -1 with an error
     * set: out of memory). */
    static int lw_keep_hash(PyObject *hashes, uint32_t index, Py_hash_t full) {
        int status;
        PyObject *key = PyLong_FromUnsignedLong(index), *value;
        if (!key)
            return -1;
        value = PyLong_FromSsize_t(full);
        if (!value) {
            Py_DECREF(key);
            return -1;
        }
        status = PyDict_SetItem(hashes, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        return status;
    }

    /* Under the table's lock: forget a freed record's kept hash. Never
     * fails: an entry left behind when memory runs out is harmless (read
     * only for a stored id that is not plain, and opening one at this
     * index overwrites it). */
    static void lw_forget_hash(PyObject *hashes, uint32_t index) {
        PyObject *key;
        if (PyDict_GET_SIZE(hashes) == 0)
            return;
        key = PyLong_FromUnsignedLong(index);
        if (!key) {
            PyErr_Clear();
            return;
        }
        if (PyDict_DelItem(hashes, key) < 0)
            PyErr_Clear(); /* KeyError: a plain id's record */
        Py_DECREF(key);
    }
    """
    bint lw_plain_id(PyObject *o) noexcept
    int lw_same_whole_hash(PyObject *stored, PyObject *probe, uint32_t index,
                           Py_hash_t probe_full, PyObject *hashes) noexcept
    int lw_keep_hash(PyObject *hashes, uint32_t index, Py_hash_t full) noexcept
    void lw_forget_hash(PyObject *hashes, uint32_t index) noexcept


ctypedef struct _Probe:
    Py_hash_t full        # the probed id's whole hash
    PyObject *hashes      # the table's dict: record index -> whole hash of a stored non-plain id


cdef int _eq(void *stored, void *probe, uint32_t index, void *ctx) noexcept:
    """Two ids whose stored hashes (32 bits) match: as a dict does, the
    stored id's __eq__ runs only against an id of the same whole hash (the
    C record keeps 32 bits of it). Under the lock."""
    cdef _Probe *p = <_Probe *>ctx
    cdef int same = lw_same_whole_hash(<PyObject *>stored, <PyObject *>probe, index, p.full, p.hashes)
    if same <= 0:
        return same
    return _rich_eq(<PyObject *>stored, <PyObject *>probe, Py_EQ)


cdef inline double _clock_now() noexcept nogil:
    """time.monotonic(), read here: the same nanoseconds, converted as
    CPython converts them (_PyTime_AsSecondsDouble)."""
    cdef int64_t ns = lw_loop_now_ns()
    if ns % 1000000000 == 0:
        return <double>(ns // 1000000000)
    return <double>ns / 1e9


cdef int _raise_pending() except -1:
    """An exception set by the eq callback, raised here."""
    return -1


cdef inline uint64_t _handle_bits(uint32_t index, uint32_t gen) noexcept nogil:
    return (<uint64_t>gen << 32) | index


cdef inline object _handle_of(uint32_t index, uint32_t gen):
    return _handle_bits(index, gen)


cdef class _NativeTable:
    """The C session table and what the binding keeps beside it: the clock,
    the stall clock, the tasks bound to sessions, the recoveries waiting for
    check(). The public class is :class:`SessionRegistry` below."""

    cdef lw_sessions *_t
    cdef object _c_clock
    cdef bint _clock_native      # the clock is time.monotonic: read in C
    cdef object _c_stall         # the stall clock, or None
    cdef lw_sessions_stall_fn _stall_fn  # ... read in C (a native loop monitor's), or NULL
    cdef const void *_stall_ctx
    cdef object _stall_keep      # what keeps _stall_ctx alive (the monitor's core)
    cdef uint64_t _stall_token   # names the stall clock in readings
    cdef bint _stall_warned
    cdef dict _tasks             # index -> (gen, task, done-callback)
    cdef dict _hashes            # index -> whole hash of a stored id that is not plain (see _eq)
    cdef lw_sessions_event *_rq  # recoveries, queued under the lock (references held), for check()
    cdef size_t _rq_len, _rq_cap
    cdef list _c_events          # recoveries that found no room in _rq (out of memory), for check()
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        self._t = NULL
        self._tasks = {}
        self._hashes = {}
        self._c_events = []

    def __dealloc__(self):
        cdef uint32_t i
        cdef lw_sess *r
        if self._t is NULL:
            return
        i = lw_sessions_next(self._t, 0)
        while i != LW_SESSIONS_NIL:
            r = lw_sessions_record(self._t, i)
            Py_XDECREF(<PyObject *>r.id)
            Py_XDECREF(<PyObject *>r.key)
            i = lw_sessions_next(self._t, i + 1)
        lw_sessions_free(self._t)
        self._t = NULL
        for k in range(self._rq_len):
            Py_XDECREF(<PyObject *>self._rq[k].id)
            Py_XDECREF(<PyObject *>self._rq[k].key)
        free(self._rq)
        self._rq = NULL

    def __reduce__(self):
        raise TypeError("cannot pickle SessionRegistry")

    def _setup(self, double start, wheel_factory):
        cdef lw_sessions_config cfg
        if wheel_factory is not None:
            raise TypeError(
                "the native SessionRegistry files its sessions in a wheel inside its own "
                "table: wheel_factory is for loopwatch.sessions.twin.SessionRegistry")
        if self._t is not NULL:
            raise RuntimeError("SessionRegistry is already initialized")
        cfg.stuck_after = self._stuck_after
        cfg.report_backoff = self._backoff
        cfg.max_report_interval = self._max_interval
        cfg.evict_after = -1.0 if self._evict_after is None else self._evict_after
        cfg.idle_timeout = -1.0 if self._idle_timeout is None else self._idle_timeout
        cfg.max_sessions = self._max_sessions
        cfg.has_store = self._store is not None
        if abs(start / 0.001) >= 2.0**52:  # the wheel's 1 ms ticks, counted in a double
            raise ValueError(f"now must be a finite time on a monotonic clock, got {start!r}")
        self._c_stall = None
        self._t = lw_sessions_new(&cfg, start)
        if self._t is NULL:
            raise MemoryError()
        self._time_source()
        _TABLES.add(self)

    @property
    def _clock(self):
        """The registry's clock (the C table reads time.monotonic itself)."""
        return self._c_clock

    @_clock.setter
    def _clock(self, clock):
        self._c_clock = clock
        self._clock_native = clock is _monotonic
        self._time_source()

    cdef _time_source(self):
        """Tell the table where its time comes from (it reads it itself
        when it can: the hot path and the status thread)."""
        if self._t is not NULL:
            lw_sessions_set_time_source(self._t, self._clock_native, self._stall_fn,
                                        self._stall_ctx,
                                        self._c_stall is not None and self._stall_fn is NULL)

    @property
    def _stall(self):
        """The stall clock (set_stall_clock), or None."""
        return self._c_stall

    @_stall.setter
    def _stall(self, stalled):
        # Another function under the same attachment (the tests' broken
        # monitor): set_stall_clock is the way to attach one. Under the
        # lock, as there: the status thread reads the C reader through it.
        cdef object old_stall, old_keep
        self._live()
        self._lock()
        old_stall, old_keep = self._c_stall, self._stall_keep
        self._c_stall = stalled
        self._stall_fn = NULL
        self._stall_ctx = NULL
        self._stall_keep = None
        self._time_source()
        lw_sessions_unlock(self._t)
        del old_stall, old_keep  # after the lock: their finalizers may call the registry

    cdef int _live(self) except -1:
        if self._t is NULL:
            raise RuntimeError("SessionRegistry.__init__ was not called")
        return 0

    def _after_fork_child(self):
        if self._t is not NULL:
            lw_sessions_after_fork_child(self._t)

    # -- the lock --------------------------------------------------------------
    cdef int _lock(self) except -1:
        # The calling thread's state names it (cheaper than its id): the
        # lock's owner, for telling a call back from under it.
        cdef unsigned long me = <unsigned long><size_t>PyThreadState_Get()
        if self._t is NULL:
            self._live()
        if lw_sessions_trylock(self._t, me):
            return 0
        if lw_sessions_owner(self._t) == me:
            raise RuntimeError(REENTERED)
        with nogil:  # another thread holds it (maybe in an id's __eq__): wait without the GIL
            lw_sessions_lock(self._t, me)
        return 0

    # -- time -------------------------------------------------------------------
    cdef int _read(self, lw_sessions_reading *r) except -1:
        """The clock and the stall clock, outside the lock."""
        cdef object raw, stall, v
        if lw_sessions_read_native(self._t, r):  # the monotonic clock, and a native stall clock or none
            return 0
        if self._clock_native:
            r.raw = _clock_now()
        else:
            raw = self._c_clock()
            if type(raw) is float and raw - raw == 0.0:
                r.raw = raw
            else:
                r.raw = _clock_value(raw)
        stall = self._c_stall
        r.token = self._stall_token
        r.sv_ok = 0
        r.sv = 0.0
        if self._stall_fn is not NULL:
            r.sv = <double>self._stall_fn(self._stall_ctx, lw_loop_now_ns()) / 1e9
            r.sv_ok = 1
        elif stall is not None:
            v = self._read_stall(stall, False)
            if v is not None:
                r.sv_ok = 1
                r.sv = v
        return 0

    cdef int _read_at(self, lw_sessions_reading *r, object now) except -1:
        """_read, for a check at an explicit time ``now`` (None: the clock)."""
        cdef double t
        self._read(r)
        if now is None:
            return 0
        if isinstance(now, bool) or not isinstance(now, (int, float)):
            raise TypeError(f"now must be a number of seconds, got {now!r}")
        t = int.__float__(now) if isinstance(now, int) else float.__float__(now)
        if not _math.isfinite(t):
            raise ValueError(f"now must be finite, got {now!r}")
        if t > r.raw + MAX_CHECK_AHEAD:
            raise ValueError(
                f"now={now!r} is more than MAX_CHECK_AHEAD={MAX_CHECK_AHEAD:g} s ahead of "
                f"the registry's clock ({r.raw!r}); pass a time read from that clock")
        r.raw = t
        return 0

    cdef object _read_stall(self, object stall, bint fresh):
        """One reading of the stall clock (outside the lock), or None when it
        is unusable (logged once)."""
        cdef double last
        try:
            v = stall()
            if type(v) is not float:
                v = _clock_value(v, "the stall clock")
        except Exception as exc:
            self._stall_problem(f"raised {type(exc).__name__}")
            return None
        if not (0.0 <= v < _INF):
            self._stall_problem(f"returned {v!r}")
            return None
        if not fresh and stall is self._c_stall and lw_sessions_stall_last(self._t, &last) and v < last:
            self._stall_problem(f"went back from {last!r} to {v!r}")
            return None
        return v

    cdef _stall_problem(self, str what):
        if not self._stall_warned:
            self._stall_warned = True
            logger.warning("stall clock %s; counting no stall added for such readings "
                           "(logged once)", what)

    def set_stall_clock(self, stalled):
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
        cdef size_t fn = 0, ctx = 0
        cdef object old_stall, old_keep
        if stalled is not None and not callable(stalled):
            raise TypeError(f"stalled must be a callable returning seconds or None, got {stalled!r}")
        self._live()
        native = _native_stall_reader(stalled)
        if native is not None:
            fn, ctx, keep = native
            first = <double>(<lw_sessions_stall_fn>fn)(<const void *>ctx, lw_loop_now_ns()) / 1e9
        else:
            keep = None
            first = None if stalled is None else self._read_stall(stalled, True)
        self._lock()
        # The previous clock and what kept its reader alive are let go after
        # the lock (their finalizers may call the registry).
        old_stall = self._c_stall
        old_keep = self._stall_keep
        self._stall_token += 1
        lw_sessions_set_stall(self._t, self._stall_token, first is not None,
                              0.0 if first is None else first)
        self._c_stall = stalled
        self._stall_fn = <lw_sessions_stall_fn>fn
        self._stall_ctx = <const void *>ctx
        self._stall_keep = keep
        self._stall_warned = False
        self._time_source()
        lw_sessions_unlock(self._t)
        del old_stall, old_keep

    def time(self):
        """The registry's time now: the clock's reading minus the time the
        loop spent stalled since :meth:`set_stall_clock` (the clock itself
        without a stall clock); never decreasing. The times of a
        :class:`SessionView` (``opened_at``, ``state_since``,
        ``last_progress``...) are on this time: ``registry.time() -
        view.last_progress`` is how long a session has made no progress,
        stalls excluded."""
        cdef lw_sessions_reading r
        cdef double now
        self._live()
        self._read(&r)
        self._lock()
        now = lw_sessions_now(self._t, &r)
        lw_sessions_unlock(self._t)
        return now

    # -- views and events -------------------------------------------------------
    cdef object _view(self, lw_sessions_event *ev, bint release):
        """A SessionView of a snapshot (after the lock is released). With
        `release`, the snapshot's references to the id and key are dropped."""
        cdef object sid = <object>ev.id
        cdef object key = None if ev.key is NULL else <object>ev.key
        task = None
        if ev.has_task:
            bound = self._tasks.get(ev.index)
            if bound is not None and bound[0] == ev.gen:
                task = bound[1]
        if release:
            Py_XDECREF(<PyObject *>ev.id)
            Py_XDECREF(<PyObject *>ev.key)
            ev.id = ev.key = NULL
        return SessionView(
            sid, key, _STATE_NAMES[ev.state], None if ev.queue_depth < 0 else ev.queue_depth,
            ev.opened_at, ev.state_since, ev.last_progress, ev.view_reports if ev.stuck else 0,
            bool(ev.stuck), task, _handle_of(ev.index, ev.gen))

    cdef object _event(self, lw_sessions_event *ev):
        """The SessionEvent of a snapshot; drops its references."""
        view = self._view(ev, False)
        event = SessionEvent(
            _KINDS[ev.kind], view, ev.at, _REASONS[ev.reason] if ev.kind == LW_SESSIONS_EV_EVICTED else None,
            ev.age, ev.reports, None if ev.next_report_at != ev.next_report_at else ev.next_report_at)
        if ev.kind == LW_SESSIONS_EV_EVICTED:
            # The record may hold a later session already (another thread
            # ran since the lock was released): only this one's binding goes.
            bound = self._tasks.get(ev.index)
            if bound is not None and bound[0] == ev.gen:
                del self._tasks[ev.index]
        Py_XDECREF(<PyObject *>ev.id)
        Py_XDECREF(<PyObject *>ev.key)
        ev.id = ev.key = NULL
        return event

    cdef inline void _hold(self, lw_sessions_event *ev) noexcept:
        """Under the lock: keep a snapshot's id and key alive past it."""
        Py_XINCREF(<PyObject *>ev.id)
        Py_XINCREF(<PyObject *>ev.key)

    cdef bint _queue_recovery(self, lw_sessions_event *ev) noexcept:
        """Under the lock: queue a recovery (its id and key held) for the
        next check(), in order with every other thread's; False when no
        room could be made (the caller appends its event after the lock)."""
        self._hold(ev)
        return self._queue_event(ev)

    cdef bint _queue_event(self, lw_sessions_event *ev) noexcept:
        """Under the lock: queue an event whose references are held for the
        next check(); False when no room could be made."""
        cdef lw_sessions_event *grown
        cdef size_t cap
        if self._rq_len == self._rq_cap:
            cap = 16 if self._rq_cap == 0 else self._rq_cap * 2
            grown = <lw_sessions_event *>realloc(self._rq, cap * sizeof(lw_sessions_event))
            if grown is NULL:
                return False
            self._rq = grown
            self._rq_cap = cap
        self._rq[self._rq_len] = ev[0]
        self._rq_len += 1
        return True

    cdef int _recovered(self, lw_sessions_event *ev) except -1:
        """After the lock: a recovery _queue_recovery found no room for."""
        self._c_events.append(self._event(ev))
        return 0

    # -- sessions ------------------------------------------------------------------
    cdef uint64_t _open_handle_c(self, object session_id, object key, object state,
                                 lw_sessions_event *snapshot=NULL) except? 0:
        """Open a session; its handle (and, given `snapshot`, the session as
        its view shows it, taken under the same hold of the lock, so the
        view is of this very opening whatever other threads do)."""
        cdef lw_sessions_reading r
        cdef uint32_t index, gen
        cdef int status, number = _STATE_NUMBERS[_check_state(state)]
        cdef Py_hash_t full
        cdef _Probe probe
        cdef void *removed_id
        cdef void *removed_key
        self._live()
        self._read(&r)
        full = hash(session_id)  # the id's __hash__, outside the lock
        probe.full = full
        probe.hashes = <PyObject *>self._hashes
        self._lock()
        Py_XINCREF(<PyObject *>session_id)
        if key is not None:
            Py_XINCREF(<PyObject *>key)
        status = lw_sessions_open(self._t, <void *>session_id, NULL if key is None else <void *>key,
                                  <uint32_t><uint64_t>full, number, &r, _eq, &probe, &index)
        if status == LW_SESSIONS_OK and not lw_plain_id(<PyObject *>session_id):
            if lw_keep_hash(<PyObject *>self._hashes, index, full) < 0:
                # Out of memory keeping its hash: the opening is undone
                # (the table's references come back to us, released below).
                PyErr_Clear()
                lw_sessions_remove(self._t, index, &removed_id, &removed_key)
                status = LW_SESSIONS_ENOMEM
        if status == LW_SESSIONS_OK:
            gen = lw_sessions_record(self._t, index).gen
            if snapshot is not NULL:
                lw_sessions_snapshot(self._t, index, snapshot)
                self._hold(snapshot)
            lw_sessions_unlock(self._t)
            return _handle_bits(index, gen)
        lw_sessions_unlock(self._t)
        Py_XDECREF(<PyObject *>session_id)
        if key is not None:
            Py_XDECREF(<PyObject *>key)
        if status == LW_SESSIONS_EQERR:
            _raise_pending()
        if status == LW_SESSIONS_EXISTS:
            raise ValueError(f"session {session_id!r} is already open")
        if status == LW_SESSIONS_FULL:
            raise RegistryFull(
                f"registry holds max_sessions={self._max_sessions} sessions; "
                f"cannot open {session_id!r}")
        raise MemoryError()

    def open(self, session_id, key=None, state="idle"):
        """Start tracking a session; returns its view (with its
        :attr:`~SessionView.handle`).

        Raises ValueError for an unknown state or an id already open,
        :class:`RegistryFull` at ``max_sessions``."""
        cdef lw_sessions_event ev
        cdef uint64_t handle = self._open_handle_c(session_id, key, state, &ev)
        try:
            return self._view(&ev, True)
        except BaseException:
            # No view (out of memory, Ctrl-C): the caller cannot know the
            # session is open, so it is not (it would be a ghost).
            Py_XDECREF(<PyObject *>ev.id)
            Py_XDECREF(<PyObject *>ev.key)
            self._close_handle(handle)
            raise

    def _open_handle(self, session_id, key, state):
        return self._open_handle_c(session_id, key, state)

    cdef int _find(self, object session_id, Py_hash_t full, uint32_t *index) except -1:
        """Under the lock: 1 found, 0 not (an __eq__ that raised: raised,
        with the lock released). full: the id's hash, taken before the lock."""
        cdef _Probe probe
        cdef int found
        probe.full = full
        probe.hashes = <PyObject *>self._hashes
        found = lw_sessions_find(self._t, <void *>session_id, <uint32_t><uint64_t>full, _eq, &probe,
                                 index)
        if found < 0:
            lw_sessions_unlock(self._t)
            _raise_pending()
        return found

    def progress(self, session_id):
        """The session is moving: its stuck clock restarts (O(1)).

        A stuck session recovers (a ``recovered`` event). KeyError when unknown."""
        cdef lw_sessions_reading r
        cdef lw_sessions_event ev
        cdef uint32_t index
        cdef Py_hash_t full
        cdef _Probe probe
        cdef int found, recovered
        if self._t is NULL:
            self._live()
        self._read(&r)
        full = hash(session_id)  # outside the lock
        probe.full = full
        probe.hashes = <PyObject *>self._hashes
        self._lock()
        found = lw_sessions_find(self._t, <void *>session_id, <uint32_t><uint64_t>full, _eq, &probe,
                                 &index)
        if found <= 0:
            lw_sessions_unlock(self._t)
            if found < 0:
                _raise_pending()
            raise _unknown(session_id)
        recovered = lw_sessions_progress(self._t, index, &r, &ev)
        if recovered and self._queue_recovery(&ev):
            recovered = 0
        lw_sessions_unlock(self._t)
        if recovered:
            self._recovered(&ev)

    @cython.always_allow_keywords(False)
    def progress_handle(self, handle, /):
        """:meth:`progress` by the session's handle (:attr:`SessionView.handle`,
        :attr:`SessionScope.handle`): no hashing, no lookup by id. KeyError
        once that session is closed or evicted (never another session's
        heartbeat), TypeError for a non-int."""
        cdef lw_sessions_reading r
        cdef lw_sessions_event ev
        cdef uint64_t hv
        cdef int recovered
        if type(handle) is not int:
            handle = _check_handle(handle)
        try:
            hv = handle
        except OverflowError:  # negative, or past 64 bits: never a handle
            raise _unknown_handle(handle) from None
        if self._t is NULL:
            self._live()
        self._read(&r)
        self._lock()
        if lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is NULL:
            lw_sessions_unlock(self._t)
            raise _unknown_handle(handle)
        recovered = lw_sessions_progress(self._t, <uint32_t>hv, &r, &ev)
        if recovered and self._queue_recovery(&ev):
            recovered = 0
        lw_sessions_unlock(self._t)
        if recovered:
            self._recovered(&ev)

    cdef int _change_state(self, uint32_t index, int number, object depth,
                           lw_sessions_reading *r) except -1:
        """Under the lock, which it releases: set_state's change."""
        cdef lw_sessions_event ev
        cdef int recovered = lw_sessions_set_state(
            self._t, index, number, depth is not None, -1 if depth is None else <int32_t>depth, r, &ev)
        if recovered and self._queue_recovery(&ev):
            recovered = 0
        lw_sessions_unlock(self._t)
        if recovered:
            self._recovered(&ev)
        return 0

    def set_state(self, session_id, state, queue_depth=None):
        """Change a session's state (and queue depth, when given).

        A change of state restarts the stuck clock, and a stuck session that
        changes state recovers. The same state again only updates the queue
        depth. KeyError when unknown, ValueError for an unknown state or a
        queue depth outside 0 .. 2**31 - 1."""
        cdef Py_hash_t h
        cdef lw_sessions_reading r
        cdef uint32_t index
        cdef int number = _STATE_NUMBERS[_check_state(state)]
        depth = _check_depth(queue_depth)
        self._live()
        self._read(&r)
        h = hash(session_id)  # outside the lock: a failing __hash__ changes nothing
        self._lock()
        if not self._find(session_id, h, &index):
            lw_sessions_unlock(self._t)
            raise _unknown(session_id)
        self._change_state(index, number, depth, &r)

    def _set_state_handle(self, handle, state, queue_depth=None):
        cdef lw_sessions_reading r
        cdef uint64_t hv
        cdef int number = _STATE_NUMBERS[_check_state(state)]
        handle = _check_handle(handle)
        depth = _check_depth(queue_depth)
        try:
            hv = handle
        except OverflowError:
            raise _unknown_handle(handle) from None
        self._live()
        self._read(&r)
        self._lock()
        if lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is NULL:
            lw_sessions_unlock(self._t)
            raise _unknown_handle(handle)
        self._change_state(<uint32_t>hv, number, depth, &r)

    cdef int _remove(self, uint32_t index) except -1:
        """Under the lock, which it releases: remove a session; its id, key
        and task are let go after."""
        cdef void *sid
        cdef void *key
        lw_sessions_remove(self._t, index, &sid, &key)
        lw_forget_hash(<PyObject *>self._hashes, index)
        lw_sessions_unlock(self._t)
        bound = self._tasks.pop(index, None)
        Py_XDECREF(<PyObject *>sid)
        Py_XDECREF(<PyObject *>key)
        del bound  # its __del__ may run: the table is consistent
        return 0

    def close(self, session_id):
        """Stop tracking a session. Idempotent: False when it was not open."""
        cdef Py_hash_t h
        cdef uint32_t index
        self._live()
        h = hash(session_id)
        self._lock()
        if not self._find(session_id, h, &index):
            lw_sessions_unlock(self._t)
            return False
        self._remove(index)
        return True

    def _close_handle(self, handle):
        """Close this very session, not a later one opened under its id."""
        cdef uint64_t hv = handle
        self._live()
        self._lock()
        if lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is NULL:
            lw_sessions_unlock(self._t)
            return False
        self._remove(<uint32_t>hv)
        return True

    def _handle_alive(self, handle):
        cdef uint64_t hv = handle
        self._live()
        return lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is not NULL

    def get(self, session_id):
        """A read-only view of a session; KeyError when unknown."""
        cdef Py_hash_t h
        cdef lw_sessions_event ev
        cdef uint32_t index
        self._live()
        h = hash(session_id)
        self._lock()
        if not self._find(session_id, h, &index):
            lw_sessions_unlock(self._t)
            raise _unknown(session_id)
        lw_sessions_snapshot(self._t, index, &ev)
        self._hold(&ev)
        lw_sessions_unlock(self._t)
        return self._view(&ev, True)

    def _get_handle(self, handle):
        cdef lw_sessions_event ev
        cdef uint64_t hv = handle
        self._live()
        self._lock()
        if lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is NULL:
            lw_sessions_unlock(self._t)
            raise _unknown_handle(handle)
        lw_sessions_snapshot(self._t, <uint32_t>hv, &ev)
        self._hold(&ev)
        lw_sessions_unlock(self._t)
        return self._view(&ev, True)

    def __len__(self):
        self._live()
        return lw_sessions_len(self._t)

    def __contains__(self, session_id):
        cdef Py_hash_t h
        cdef uint32_t index
        self._live()
        h = hash(session_id)
        self._lock()
        found = self._find(session_id, h, &index)
        lw_sessions_unlock(self._t)
        return bool(found)

    def __iter__(self):
        """Views of every session (a snapshot taken at the call)."""
        cdef uint64_t *handles
        cdef size_t n = 0, cap
        cdef uint32_t i
        self._live()
        self._lock()
        cap = lw_sessions_len(self._t)
        handles = <uint64_t *>malloc((cap + 1) * sizeof(uint64_t))
        if handles is NULL:
            lw_sessions_unlock(self._t)
            raise MemoryError()
        i = lw_sessions_next(self._t, 0)
        while i != LW_SESSIONS_NIL and n < cap:
            handles[n] = _handle_bits(i, lw_sessions_record(self._t, i).gen)
            n += 1
            i = lw_sessions_next(self._t, i + 1)
        lw_sessions_unlock(self._t)
        try:
            # Views are built after the lock is released; a session another
            # thread closes in between is left out (and one it opens in a
            # record freed meanwhile is not taken for it: handles, not
            # record numbers).
            return iter(self._live_views(handles, n, False))
        finally:
            free(handles)

    cdef list _live_views(self, uint64_t *handles, size_t n, bint only_stuck):
        """Views of the sessions still open (and, with `only_stuck`, still
        stuck), in one hold of the lock."""
        cdef lw_sessions_event *snap
        cdef lw_sess *rec
        cdef size_t k, m = 0
        if n == 0:
            return []
        snap = <lw_sessions_event *>malloc(n * sizeof(lw_sessions_event))
        if snap is NULL:
            raise MemoryError()
        try:
            self._lock()
            for k in range(n):
                rec = lw_sessions_get(self._t, <uint32_t>handles[k], <uint32_t>(handles[k] >> 32))
                if rec is NULL or (only_stuck and not (rec.links.tag[1] & LW_SESS_STUCK)):
                    continue
                lw_sessions_snapshot(self._t, <uint32_t>handles[k], &snap[m])
                self._hold(&snap[m])
                m += 1
            lw_sessions_unlock(self._t)
            views = [None] * m
            for k in range(m):
                views[k] = self._view(&snap[k], True)
            return views
        finally:
            for k in range(m):
                Py_XDECREF(<PyObject *>snap[k].id)
                Py_XDECREF(<PyObject *>snap[k].key)
            free(snap)

    def counts(self):
        """Sessions per state (all four states, kept incrementally: O(1))."""
        cdef int64_t c0, c1, c2, c3
        self._live()
        self._lock()
        c0 = lw_sessions_count(self._t, 0)
        c1 = lw_sessions_count(self._t, 1)
        c2 = lw_sessions_count(self._t, 2)
        c3 = lw_sessions_count(self._t, 3)
        lw_sessions_unlock(self._t)
        return {"idle": c0, "queued": c1, "processing": c2, "waiting": c3}

    def queued(self):
        """The sum of the sessions' queue depths (kept incrementally: O(1))."""
        self._live()
        return lw_sessions_queued(self._t)

    def stuck(self):
        """Views of the stuck sessions, longest without progress first
        (O(stuck sessions): the others are not looked at)."""
        cdef uint64_t *handles
        cdef size_t n, k
        cdef uint32_t i
        self._live()
        self._lock()
        n = lw_sessions_stuck_count(self._t)
        handles = <uint64_t *>malloc((n + 1) * sizeof(uint64_t))
        if handles is NULL:
            lw_sessions_unlock(self._t)
            raise MemoryError()
        for k in range(n):
            i = lw_sessions_stuck_at(self._t, k)
            handles[k] = _handle_bits(i, lw_sessions_record(self._t, i).gen)
        lw_sessions_unlock(self._t)
        try:
            views = self._live_views(handles, n, True)
        finally:
            free(handles)
        views.sort(key=_since_progress_order)
        return views

    def next_check(self):
        """The earliest clock time at which :meth:`check` may find something
        (never later than the first due event; may be earlier), or None
        when nothing is scheduled. A pending recovery makes it now."""
        cdef lw_sessions_reading r
        cdef double now, wake
        cdef int found
        self._live()
        self._read(&r)
        self._lock()
        now = lw_sessions_now(self._t, &r)
        if self._rq_len or self._c_events:
            lw_sessions_unlock(self._t)
            return r.raw
        found = lw_sessions_next_wake(self._t, &wake)
        lw_sessions_unlock(self._t)
        # From the registry's time back to the clock's: never later.
        return wake + (r.raw - now) if found else None

    # -- lifetimes ---------------------------------------------------------------
    def bind_task(self, session_id, task):
        """Close the session when ``task`` (an asyncio Task or Future) ends,
        however it ends. Binding another task replaces the first binding.
        Call it from the task's event loop."""
        cdef Py_hash_t h
        cdef uint32_t index, gen
        if not hasattr(task, "add_done_callback"):
            raise TypeError(f"bind_task needs an asyncio Task or Future, got {task!r}")
        self._live()
        h = hash(session_id)
        self._lock()
        if not self._find(session_id, h, &index):
            lw_sessions_unlock(self._t)
            raise _unknown(session_id)
        gen = lw_sessions_record(self._t, index).gen
        lw_sessions_set_task_flag(self._t, index, 1)
        lw_sessions_unlock(self._t)
        old = self._tasks.get(index)
        callback = _functools.partial(self._task_done, _handle_of(index, gen))
        self._tasks[index] = (gen, task, callback)
        if old is not None and old[0] == gen and old[1] is not task:
            old[1].remove_done_callback(old[2])
        task.add_done_callback(callback)

    def _task_done(self, handle, task):
        cdef uint64_t hv = handle
        index = <uint32_t>hv  # boxed before the lock: nothing under it may fail
        self._lock()
        if lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is NULL:
            lw_sessions_unlock(self._t)
            return  # closed already (perhaps reopened under the same id)
        bound = self._tasks.get(index)
        if bound is None or bound[1] is not task:
            lw_sessions_unlock(self._t)
            return  # rebound to another task
        self._remove(<uint32_t>hv)

    # -- checking ------------------------------------------------------------------
    def _collect(self, now_arg, list events, list pending):
        """The events due by now and the store questions to ask (each with
        its session's id), appended to the caller's lists as they are built
        (so that the caller holds them the moment they exist); returns now
        (the registry's time).

        Interrupted while building (Ctrl-C, out of memory): the questions go
        back to the wheel, due at once (``pending`` is emptied), and the
        events not built yet to the queue the next check reports first;
        only the event being built when it came is lost. No session is left
        filed nowhere."""
        cdef lw_sessions_reading r
        cdef const lw_sessions_event *due
        cdef lw_sessions_event *snap = NULL
        cdef lw_sessions_event *queued = NULL
        cdef size_t n = 0, k, n_queued = 0, built_queued = 0, built = 0
        cdef double now
        cdef int status
        self._live()
        self._read_at(&r, now_arg)
        recoveries, self._c_events = self._c_events, []  # before the lock: no allocation under it
        self._lock()
        status = lw_sessions_collect(self._t, &r, &now, &due, &n)
        if status != LW_SESSIONS_OK:
            lw_sessions_unlock(self._t)
            self._c_events[:0] = recoveries
            raise MemoryError()
        queued, n_queued = self._rq, self._rq_len  # the recoveries queued so far: ours now
        self._rq = NULL
        self._rq_len = self._rq_cap = 0
        if n:
            snap = <lw_sessions_event *>malloc(n * sizeof(lw_sessions_event))
            if snap is NULL:
                # The table changed already: keep the events in its buffer
                # (valid until the next collect, which needs the lock) and
                # build them now, under it, rather than lose them.
                snap = <lw_sessions_event *>due
        if snap is not NULL and snap is not due:
            memcpy(snap, due, n * sizeof(lw_sessions_event))
        for k in range(n):
            if snap[k].kind != LW_SESSIONS_EV_EVICTED:
                self._hold(&snap[k])  # evicted ones' references are already ours
            else:
                lw_forget_hash(<PyObject *>self._hashes, snap[k].index)
        if snap is not due:
            lw_sessions_unlock(self._t)
        try:
            while built_queued < n_queued:
                built_queued += 1  # counted first: one that fails is not put back
                events.append(self._event(&queued[built_queued - 1]))
            events.extend(recoveries)
            recoveries = None
            while built < n:
                built += 1
                k = built - 1
                if snap[k].kind == LW_SESSIONS_EV_ASK:
                    sid = <object>snap[k].id
                    Py_XDECREF(<PyObject *>snap[k].id)
                    snap[k].id = NULL
                    pending.append(((snap[k].index, snap[k].gen), sid))
                else:
                    events.append(self._event(&snap[k]))
        except BaseException:
            self._put_back(queued + built_queued, n_queued - built_queued,
                           snap, n, built, snap is due)
            if recoveries is not None:
                self._c_events[:0] = recoveries
            del pending[:]
            raise
        finally:
            for k in range(n_queued):  # what a failure left held
                Py_XDECREF(<PyObject *>queued[k].id)
                Py_XDECREF(<PyObject *>queued[k].key)
            free(queued)
            for k in range(n):
                Py_XDECREF(<PyObject *>snap[k].id)
                Py_XDECREF(<PyObject *>snap[k].key)
            if snap is due:
                lw_sessions_unlock(self._t)
            elif snap is not NULL:
                free(snap)
        self._label_stuck(events)
        return now

    cdef void _put_back(self, lw_sessions_event *queued, size_t n_queued,
                        lw_sessions_event *snap, size_t n, size_t built, bint locked) noexcept:
        """An interrupted _collect: every question it took (asked or not)
        back to the wheel, due at once; the events not built yet (their
        references moved, not taken again) to the queue the next check
        reports first. Out of memory for that queue, an event is let go."""
        cdef size_t k
        cdef unsigned long me = <unsigned long><size_t>PyThreadState_Get()
        if not locked:
            with nogil:  # the lock's owner may be waiting for the GIL
                lw_sessions_lock(self._t, me)
        for k in range(n):
            if snap[k].kind == LW_SESSIONS_EV_ASK:
                lw_sessions_unask(self._t, snap[k].index, snap[k].gen)
        for k in range(n_queued):
            if self._queue_event(&queued[k]):
                queued[k].id = queued[k].key = NULL
        for k in range(built, n):
            if snap[k].kind != LW_SESSIONS_EV_ASK and self._queue_event(&snap[k]):
                snap[k].id = snap[k].key = NULL
        if not locked:
            lw_sessions_unlock(self._t)

    def _unask(self, list pending):
        """Questions collected and never settled (the check was interrupted
        before it could): their sessions go back to the wheel, due at once."""
        cdef uint32_t index, gen
        questions = [question for question, _ in pending]  # converted before the lock
        del pending[:]
        for number, generation in questions:
            index, gen = number, generation
            self._lock()
            lw_sessions_unask(self._t, index, gen)
            lw_sessions_unlock(self._t)

    def _settle(self, pending, answers, double now):
        """The store's answers: a session that changed since (progress, new
        state, closed) is left as it now is; one without an answer (the
        store call was interrupted) counts as present."""
        cdef lw_sessions_event ev
        cdef int status
        cdef uint32_t index, gen
        cdef bint present
        cdef size_t settled = 0, k
        events = []
        try:
            for number, generation in (question for question, _ in pending):
                # Converted before the lock: an exception must not leave it held.
                index, gen = number, generation
                present = answers[settled] if settled < len(answers) else True
                self._lock()
                status = lw_sessions_settle(self._t, index, gen, present, now, &ev)
                if status > 0 and ev.kind != LW_SESSIONS_EV_EVICTED:
                    self._hold(&ev)
                elif status > 0:
                    lw_forget_hash(<PyObject *>self._hashes, index)
                lw_sessions_unlock(self._t)
                settled += 1
                if status > 0:
                    events.append(self._event(&ev))
                elif status < 0:
                    sid = pending[settled - 1][1]
                    logger.error("out of memory reporting stuck sessionId=%s; it stays due",
                                 _printable(sid), extra={"session_id": sid})
        except BaseException:
            # Interrupted (Ctrl-C, out of memory building an event): the
            # questions not settled yet go back to the wheel, due at once,
            # asked again at the next check; none is left filed nowhere.
            self._unask(pending[settled:])
            raise
        self._label_stuck(events)
        return events

    cdef _label_stuck(self, list events):
        """Give each session that just became stuck the text the status
        server shows for it without the GIL (its id and key, printable and
        escaped for JSON)."""
        cdef bytes text
        cdef uint64_t hv
        for event in events:
            if event.kind != "stuck" or event.reports != 1:
                continue
            view = event.session
            text = ('"id":' + _json.dumps(_printable(view.session_id)) + ',"key":'
                    + ("null" if view.key is None else _json.dumps(_printable(view.key)))).encode()
            hv = view.handle
            self._lock()
            if lw_sessions_get(self._t, <uint32_t>hv, <uint32_t>(hv >> 32)) is not NULL:
                lw_sessions_set_stuck_text(self._t, <uint32_t>hv, text, len(text))
            lw_sessions_unlock(self._t)

    # -- inside views, for tests and benchmarks ---------------------------------------
    def _filed(self):
        """Sessions filed in the wheel."""
        self._live()
        return lw_sessions_filed(self._t)

    def _wheel_time(self):
        """The wheel's time: the latest time a check collected at."""
        self._live()
        return lw_sessions_wheel_time(self._t)

    def _examined(self):
        """Records a check has looked at, in all (a counter)."""
        self._live()
        return lw_sessions_examined(self._t)

    def _native_memory(self):
        """Bytes of native memory the table holds (records handed out,
        index, stuck bookkeeping, buffers)."""
        self._live()
        return lw_sessions_memory(self._t)

    def _stall_source(self):
        """Where the stall clock is read: "native" (a native monitor's, in
        C), "python" (a callable), or None (no stall clock)."""
        if self._stall_fn is not NULL:
            return "native"
        return None if self._c_stall is None else "python"

    def _status_writer(self):
        """``(function, table)`` addresses for the native status server,
        which calls ``lw_sessions_write_live(table, ...)`` from its own
        thread without the GIL; it keeps this registry alive while it may."""
        self._live()
        return (<size_t>&lw_sessions_write_live, <size_t>self._t)

    def _live_json(self, size_t max_stuck=20):
        """What the status server's thread serves (lw_sessions_write_live)."""
        cdef char buf[65536]
        cdef size_t n
        self._live()
        with nogil:
            n = lw_sessions_write_live(self._t, buf, sizeof(buf), max_stuck, -1.0)
        return buf[:n].decode()


def _native_stall_reader(stalled):
    """(function, context, keep-alive) when ``stalled`` is a native loop
    monitor's ``stalled_seconds``: the table then reads the monitor's stall
    clock in C, with no Python call per heartbeat and while Python cannot
    run (the status thread). None otherwise."""
    owner = getattr(stalled, "__self__", None)
    if owner is None or getattr(stalled, "__name__", None) != "stalled_seconds":
        return None
    get = getattr(owner, "_native_stall_reader", None)
    return None if get is None else get()


def _since_progress_order(view):
    """stuck()'s order: longest without progress first, then first opened."""
    return (view.last_progress, view.opened_at)


class SessionRegistry(_NativeTable, RegistryBase):
    __doc__ = SESSION_REGISTRY_DOC
