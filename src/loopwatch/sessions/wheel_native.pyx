# cython: language_level=3, boundscheck=False, wraparound=False
"""Native TimerWheel: a thin binding over ext/wheel/lw_wheel.c. See sessions/wheel_twin.py
for the documented behaviour; both twins answer identically.

The C wheel names entries by 32-bit handles (slab indices); this binding keeps
the index from key to handle (a dict) and from handle to key (a list)."""

from libc.stdint cimport uint32_t

from loopwatch.sessions.lw_wheel cimport *

import time as _time

from loopwatch.sessions.wheel_twin import as_seconds, deadline_error, resolution_error

NODE_BYTES = lw_wheel_node_size()


cdef class TimerWheel:
    """Keyed deadlines on a monotonic clock, in a hierarchical timer wheel
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
    cdef dict _index
    cdef list _keys

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

    def __contains__(self, key):
        return key in self._index

    def __iter__(self):
        """The keys, in the order they were first scheduled."""
        return iter(self._index)

    def __repr__(self):
        return (f"<TimerWheel entries={len(self._index)} resolution={self.resolution!r} "
                f"time={self.time!r}>")

    def schedule(self, key, deadline):
        """Give ``key`` the deadline ``deadline`` (adding it, or moving it)."""
        cdef double d = deadline if type(deadline) is float else as_seconds("deadline", deadline)
        cdef uint32_t h
        cdef lw_wheel_status status
        handle = self._index.get(key)
        if handle is not None:
            status = lw_wheel_move(self._w, <uint32_t>handle, d)
            if status != LW_WHEEL_OK:
                self._fail(status, d)
            return
        status = lw_wheel_insert(self._w, d, &h)
        if status != LW_WHEEL_OK:
            self._fail(status, d)
        try:
            if h == len(self._keys):
                self._keys.append(key)
            else:
                self._keys[h] = key
            self._index[key] = h
        except BaseException:
            lw_wheel_remove(self._w, h)
            if h < len(self._keys):
                self._keys[h] = None
            raise

    def cancel(self, key):
        """Remove ``key``; False when it had no deadline."""
        handle = self._index.pop(key, None)
        if handle is None:
            return False
        lw_wheel_remove(self._w, <uint32_t>handle)
        self._keys[<uint32_t>handle] = None
        return True

    def deadline(self, key):
        """The deadline of ``key``; KeyError when it has none."""
        return lw_wheel_deadline(self._w, <uint32_t>self._index[key])

    def clear(self):
        """Remove every key."""
        lw_wheel_clear(self._w)
        self._index.clear()
        self._keys.clear()

    def next_deadline(self):
        """The earliest time at which a key may be due; None when empty.

        Never later than the earliest deadline, and exact when that deadline
        is filed at level 0 (the wheel's current run of 64 ticks, which holds
        every overdue key). Further ahead it is the start of
        the coarse slot holding it: expire() at that time refiles the slot,
        and the next call answers more finely."""
        cdef double out
        if lw_wheel_next_deadline(self._w, &out):
            return out
        return None

    def expire(self, now):
        """Remove and return every key whose deadline <= ``now``, sorted by
        deadline (ties in the order they were last scheduled), and advance
        :attr:`time` to ``now`` when it is later. ``math.inf`` expires
        everything; NaN raises ValueError."""
        cdef double t = now if type(now) is float else as_seconds("now", now)
        cdef const lw_wheel_due *due
        cdef size_t n, i
        cdef uint32_t h
        if t != t:
            raise ValueError("now must not be NaN")
        status = lw_wheel_expire(self._w, t, &due, &n)
        if status == LW_WHEEL_ENOMEM:
            raise MemoryError()
        if n == 0:
            return []
        keys = self._keys
        index = self._index
        out = [None] * n
        for i in range(n):
            h = due[i].handle
            key = keys[h]
            keys[h] = None
            del index[key]
            out[i] = key
        return out
