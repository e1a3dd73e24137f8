# cython: language_level=3, boundscheck=False, wraparound=False
"""Native TimerWheel: a thin binding over ext/wheel/lw_wheel.c. See sessions/wheel_twin.py
for the documented behaviour; both twins answer identically.

The C wheel names entries by 32-bit handles (slab indices); this binding keeps
the index from key to handle (a dict) and from handle to key (a list)."""

from libc.stdint cimport uint32_t
from cpython.object cimport PyObject_Hash
cimport cython

from loopwatch.sessions.lw_wheel cimport *

import time as _time
from operator import attrgetter as _attrgetter

from loopwatch.sessions.wheel_twin import REENTERED, as_seconds, deadline_error, resolution_error

NODE_BYTES = lw_wheel_node_size()
_key_of = _attrgetter("key")


@cython.freelist(64)
cdef class HashedKey:
    """A caller's key with its hash taken once (see wheel_twin.HashedKey).

    The index is keyed by these: a lookup hashes the caller's key exactly
    once, and removing a stored key never runs the caller's code (two stored
    keys are never equal; a stored key is found by identity)."""

    cdef readonly object key
    cdef Py_hash_t _hash
    cdef public bint stored

    def __init__(self, key):
        self.key = key
        self._hash = PyObject_Hash(key)
        self.stored = False

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if self is other:
            return True
        if type(other) is not HashedKey:
            return NotImplemented
        if self.stored and (<HashedKey>other).stored:
            return False
        # The same object is the same key, as a dict decides: its __eq__ is
        # not asked.
        return self.key is (<HashedKey>other).key or self.key == (<HashedKey>other).key


cdef inline HashedKey _probe(object key):
    cdef HashedKey k = HashedKey.__new__(HashedKey)
    k._hash = PyObject_Hash(key)
    k.key = key
    return k


cdef class TimerWheel:
    # The first lines are the constructor's text signature (inspect.signature
    # and help() cannot see __cinit__); CPython strips them from __doc__.
    """TimerWheel(resolution=0.001, *, now=None)
--

Keyed deadlines on a monotonic clock, in a hierarchical timer wheel
    (native implementation).

    Deadlines are float seconds on the clock of ``time.monotonic()`` (and of
    asyncio's ``loop.time()``). Each key has at most one deadline.

    Args:
        resolution: the wheel's tick, in seconds (1e-6 to 3600). Expiry is
            exact whatever the resolution (each entry keeps its exact
            deadline); the tick only sets how finely entries are filed.
        now: the wheel's starting time; ``time.monotonic()`` when omitted.
            Deadlines before it are accepted (they are due at once).

    ``schedule`` and ``cancel`` are O(1), ``expire`` is O(expired + levels)
    amortized and ``next_deadline`` O(levels) (plus the keys of one tick
    when the earliest is filed at level 0). Deadlines up to
    :attr:`horizon` seconds (at least two years) after :attr:`time` are
    accepted. Not thread-safe: guard a shared wheel with a lock.
    """

    cdef lw_wheel *_w
    cdef dict _index   # HashedKey -> handle
    cdef list _keys    # handle -> HashedKey (None when free); len == the slab's used count
    cdef bint _busy    # inside a call that may run a key's code

    # Re-entry (a key's __hash__/__eq__ calling back into the wheel) is refused
    # by every method but len() and the properties: the caller's code runs only
    # in the index lookups, before any change, or in the index insert that ends
    # schedule() and is undone when it raises. Keys are released (their __del__
    # may run) only on return, once the wheel is consistent again.

    def __cinit__(self, resolution=0.001, *, now=None):
        cdef double res = as_seconds("resolution", resolution)
        cdef double start
        if not (LW_WHEEL_MIN_RESOLUTION <= res <= LW_WHEEL_MAX_RESOLUTION):
            raise resolution_error(res)
        start = _time.monotonic() if now is None else as_seconds("now", now)
        status = lw_wheel_new(res, start, &self._w)
        if status == LW_WHEEL_ENOMEM:
            raise MemoryError()
        if status != LW_WHEEL_OK:
            raise ValueError(f"now must be a finite time on a monotonic clock, got {start!r}")
        self._index = {}
        self._keys = []

    def __dealloc__(self):
        if self._w is not NULL:
            lw_wheel_free(self._w)
            self._w = NULL

    def __reduce__(self):
        raise TypeError("cannot pickle TimerWheel")

    cdef int _fail(self, lw_wheel_status status, double deadline) except -1:
        if status == LW_WHEEL_ENOMEM:
            raise MemoryError()
        raise deadline_error(deadline, lw_wheel_horizon(self._w), lw_wheel_time(self._w))

    @property
    def resolution(self):
        """The tick, in seconds."""
        return lw_wheel_resolution(self._w)

    @property
    def levels(self):
        """Number of 64-slot levels."""
        return lw_wheel_levels(self._w)

    @property
    def horizon(self):
        """How far after :attr:`time` a deadline may be, in seconds."""
        return lw_wheel_horizon(self._w)

    @property
    def time(self):
        """The wheel's time: the latest ``now`` given to expire(), or its start."""
        return lw_wheel_time(self._w)

    def _native_memory(self):
        """Bytes of native memory the wheel holds (nodes, levels, buffers)."""
        return lw_wheel_memory(self._w)

    def __len__(self):
        return len(self._index)

    cdef int _enter(self) except -1:
        if self._busy:
            raise RuntimeError(REENTERED)
        self._busy = True
        return 0

    def __contains__(self, key):
        self._enter()
        try:
            return _probe(key) in self._index
        finally:
            self._busy = False

    def __iter__(self):
        """The keys, in the order they were first scheduled."""
        if self._busy:
            raise RuntimeError(REENTERED)
        return map(_key_of, self._index)

    def __repr__(self):
        return (f"<TimerWheel entries={len(self._index)} resolution={self.resolution!r} "
                f"time={self.time!r}>")

    def schedule(self, key, deadline):
        """Give ``key`` the deadline ``deadline`` (adding it, or moving it)."""
        cdef double d = deadline if type(deadline) is float else as_seconds("deadline", deadline)
        cdef uint32_t h
        cdef Py_ssize_t n_keys
        cdef lw_wheel_status status
        cdef HashedKey k
        self._enter()
        try:
            k = _probe(key)
            handle = self._index.get(k)
            if handle is not None:
                status = lw_wheel_move(self._w, <uint32_t>handle, d)
                if status != LW_WHEEL_OK:
                    self._fail(status, d)
                return
            status = lw_wheel_insert(self._w, d, &h)
            if status != LW_WHEEL_OK:
                self._fail(status, d)
            n_keys = len(self._keys)
            try:
                if h > n_keys:
                    raise SystemError("TimerWheel: handle past the key table")
                if h == n_keys:
                    self._keys.append(None)
                self._index[k] = h  # may run the key's __eq__: the last fallible step
            except BaseException:
                lw_wheel_remove(self._w, h)
                raise
            k.stored = True
            self._keys[h] = k
        finally:
            self._busy = False

    def cancel(self, key):
        """Remove ``key``; False when it had no deadline."""
        cdef uint32_t h
        self._enter()
        try:
            handle = self._index.pop(_probe(key), None)
            if handle is None:
                return False
            h = <uint32_t>handle
            old = self._keys[h]  # released on return
            self._keys[h] = None
            lw_wheel_remove(self._w, h)
            return True
        finally:
            self._busy = False

    def deadline(self, key):
        """The deadline of ``key``; KeyError when it has none."""
        self._enter()
        try:
            handle = self._index.get(_probe(key))
            if handle is None:
                raise KeyError(key)
            return lw_wheel_deadline(self._w, <uint32_t>handle)
        finally:
            self._busy = False

    def clear(self):
        """Remove every key."""
        self._enter()
        try:
            old_index, old_keys = self._index, self._keys  # released on return
            self._index = {}
            self._keys = []
            lw_wheel_clear(self._w)
        finally:
            self._busy = False

    def next_deadline(self):
        """The earliest time at which a key may be due; None when empty.

        Never later than the earliest deadline, and exact when that deadline
        is filed at level 0 (the wheel's current run of 64 ticks, which holds
        every overdue key). Further ahead it is the start of
        the coarse slot holding it: expire() at that time refiles the slot,
        and the next call answers more finely."""
        cdef double out
        if self._busy:
            raise RuntimeError(REENTERED)
        if lw_wheel_next_deadline(self._w, &out):
            return out
        return None

    def expire(self, now):
        """Remove and return every key whose deadline <= ``now``, sorted by
        deadline (ties in the order they were last scheduled), and advance
        :attr:`time` to ``now`` when it is later. ``math.inf`` expires
        everything; NaN raises ValueError. Runs none of the keys' code."""
        cdef double t = now if type(now) is float else as_seconds("now", now)
        cdef const lw_wheel_due *due
        cdef size_t n, i
        if t != t:
            raise ValueError("now must not be NaN")
        self._enter()
        try:
            status = lw_wheel_expire(self._w, t, &due, &n)
            if status == LW_WHEEL_ENOMEM:
                raise MemoryError()
            if n == 0:
                return []
            keys = self._keys
            index = self._index
            # The C side has freed the handles: drop them from the index first
            # (stored keys, found by identity: nothing can fail or run the
            # keys' code), then build the answer; the key table lets go last,
            # so no key is released while `due` is read.
            for i in range(n):
                del index[keys[due[i].handle]]
            try:
                out = [None] * n
                for i in range(n):
                    out[i] = (<HashedKey>keys[due[i].handle]).key
            finally:
                for i in range(n):
                    keys[due[i].handle] = None
            return out
        finally:
            self._busy = False
