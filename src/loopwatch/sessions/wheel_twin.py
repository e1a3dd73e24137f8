"""Pure-Python twin of the native TimerWheel (ext/wheel/lw_wheel.c): the same
hierarchical wheel, step for step, so both answer identically: the same keys
in the same order from expire(), the same next_deadline(), the same errors."""

from __future__ import annotations

import math
import time
from typing import Any, Hashable, Iterator, NoReturn

__all__ = ["TimerWheel"]

SLOT_BITS = 6
SLOTS = 64
SLOT_MASK = SLOTS - 1
MAX_LEVELS = 10
MIN_HORIZON_SECONDS = 2.0 * 365.25 * 86400.0
FAR_TICK = 2**62  # the furthest tick a cursor moves to in one expiry (LW_SLOTS_FAR_TICK)
MIN_RESOLUTION = 1e-6
MAX_RESOLUTION = 3600.0
_INF = math.inf
_NODE_DEADLINE, _NODE_SEQ, _NODE_SLOT, _NODE_KEY, _NODE_ID = 0, 1, 2, 3, 4
REENTERED = (
    "TimerWheel re-entered from a key's __hash__/__eq__ (or a key released "
    "during a call): only len() and the properties may be used there"
)


class HashedKey:
    """A caller's key with its hash taken once (the twin of the native
    ``HashedKey``). The wheel's index is keyed by these: a lookup hashes the
    caller's key exactly once, and removing a stored key never calls the
    caller's ``__hash__``/``__eq__`` (two stored keys of one dict are never
    equal, and a key is found by identity), so a hostile key can fail a
    lookup but never an expiry or a removal half-way."""

    __slots__ = ("key", "hash", "stored")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.hash = hash(key)
        self.stored = False

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not HashedKey:
            return NotImplemented
        if self.stored and other.stored:
            return False
        # The same object is the same key, as a dict decides: its __eq__ is
        # not asked.
        return self.key is other.key or self.key == other.key


def _key_of(hk: HashedKey) -> Hashable:
    return hk.key


def as_seconds(name: str, value: Any) -> float:
    """``value`` as a float, or TypeError naming ``name``."""
    if type(value) is float:
        return value
    if not isinstance(value, (str, bytes, bytearray)):
        try:
            return float(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be a real number, got {type(value).__name__}")


def resolution_error(resolution: float) -> ValueError:
    return ValueError(
        f"resolution must be between {MIN_RESOLUTION:g} and {MAX_RESOLUTION:g} seconds, "
        f"got {resolution!r}"
    )


def deadline_error(deadline: float, horizon: float, now: float) -> ValueError:
    if math.isnan(deadline) or math.isinf(deadline):
        return ValueError(f"deadline must be finite, got {deadline!r}")
    return ValueError(
        f"deadline {deadline!r} is more than the wheel's horizon ({horizon:.0f} s) "
        f"after its time {now!r}"
    )


def levels_for(resolution: float) -> tuple[int, int]:
    """(levels, max_ahead ticks) for a resolution: the fewest levels (>= 2)
    whose range reaches MIN_HORIZON_SECONDS."""
    for levels in range(2, MAX_LEVELS + 1):
        span = 1 << (SLOT_BITS * levels)
        max_ahead = span - (span >> SLOT_BITS) - 1
        if float(max_ahead) * resolution >= MIN_HORIZON_SECONDS:
            return levels, max_ahead
    raise resolution_error(resolution)


class TimerWheel:
    """Keyed deadlines on a monotonic clock, in a hierarchical timer wheel.

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

    __slots__ = (
        "_res", "_origin", "_time", "_cur", "_max_ahead", "_seq", "_levels",
        "_nodes", "_slots", "_occupied", "_busy", "_nid",
    )

    def __init__(self, resolution: float = 0.001, *, now: float | None = None) -> None:
        res = as_seconds("resolution", resolution)
        if not (MIN_RESOLUTION <= res <= MAX_RESOLUTION):
            raise resolution_error(res)
        start = time.monotonic() if now is None else as_seconds("now", now)
        if not math.isfinite(start) or abs(start / res) >= 2.0**52:
            raise ValueError(f"now must be a finite time on a monotonic clock, got {start!r}")
        self._levels, self._max_ahead = levels_for(res)
        self._res = res
        self._origin = math.floor(start / res)
        self._time = start
        self._cur = 0
        self._seq = 0
        self._nid = 0
        self._busy = False
        # HashedKey(key) -> [deadline, seq, slot, HashedKey, node id]; slot is
        # level * 64 + index. Slots are keyed by node id: the caller's key is
        # hashed by the index alone, as in the native wheel.
        self._nodes: dict[HashedKey, list[Any]] = {}
        self._slots: list[dict[int, list[Any]]] = [{} for _ in range(self._levels * SLOTS)]
        self._occupied = [0] * self._levels

    # -- properties ----------------------------------------------------------
    @property
    def resolution(self) -> float:
        """The tick, in seconds."""
        return self._res

    @property
    def levels(self) -> int:
        """Number of 64-slot levels."""
        return self._levels

    @property
    def horizon(self) -> float:
        """How far after :attr:`time` a deadline may be, in seconds."""
        return float(self._max_ahead) * self._res

    @property
    def time(self) -> float:
        """The wheel's time: the latest ``now`` given to :meth:`expire`, or its start."""
        return self._time

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, key: object) -> bool:
        self._enter()
        try:
            return HashedKey(key) in self._nodes
        finally:
            self._busy = False

    def __iter__(self) -> Iterator[Hashable]:
        """The keys, in the order they were first scheduled."""
        if self._busy:
            raise RuntimeError(REENTERED)
        return map(_key_of, self._nodes)

    def _enter(self) -> None:
        if self._busy:
            raise RuntimeError(REENTERED)
        self._busy = True

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} entries={len(self)} resolution={self._res!r} "
            f"time={self._time!r}>"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__}")

    # -- filing -------------------------------------------------------------
    def _tick(self, d: float) -> Any:  # an int, or a float infinity for an infinite d
        q = d / self._res
        if math.isinf(q):
            return q
        return math.floor(q) - self._origin

    def _slot_for(self, d: float) -> int:
        q: int = self._tick(d)  # d is finite
        cur = self._cur
        if q <= cur:
            return cur & SLOT_MASK
        level = ((cur ^ q) | SLOT_MASK).bit_length() - 1
        level //= SLOT_BITS
        if level >= self._levels:
            level = self._levels - 1
        return level * SLOTS + ((q >> (SLOT_BITS * level)) & SLOT_MASK)

    # _link and _unlink allocate (ints, a dict entry) before they change
    # anything: out of memory, the node is where it was (an occupied bit
    # left on an empty slot would break next_deadline's min()).
    def _link(self, node: list[Any], slot: int) -> None:
        level = slot >> SLOT_BITS
        occupied = self._occupied[level] | (1 << (slot & SLOT_MASK))
        self._slots[slot][node[_NODE_ID]] = node
        node[_NODE_SLOT] = slot
        self._occupied[level] = occupied

    def _unlink(self, node: list[Any], slot: int | None = None) -> None:
        if slot is None:
            slot = node[_NODE_SLOT]
        bucket = self._slots[slot]
        if len(bucket) > 1:
            del bucket[node[_NODE_ID]]
            return
        level = slot >> SLOT_BITS
        cleared = self._occupied[level] & ~(1 << (slot & SLOT_MASK))
        del bucket[node[_NODE_ID]]
        self._occupied[level] = cleared

    def _take_slot(self, slot: int) -> dict[int, list[Any]]:
        bucket = self._slots[slot]
        self._slots[slot] = {}
        self._occupied[slot >> SLOT_BITS] &= ~(1 << (slot & SLOT_MASK))
        return bucket

    def _first_slot(self) -> tuple[int, int] | None:
        """(slot, start tick) of the earliest occupied slot, or None."""
        cur = self._cur
        occ = self._occupied
        bits = occ[0] & ~((1 << (cur & SLOT_MASK)) - 1)
        if bits:
            i = (bits & -bits).bit_length() - 1
            return i, (cur & ~SLOT_MASK) + i
        for level in range(1, self._levels):
            o = occ[level]
            if not o:
                continue
            shift = SLOT_BITS * level
            c = (cur >> shift) & SLOT_MASK
            block = (cur >> (shift + SLOT_BITS)) << (shift + SLOT_BITS)
            after = o & ~((1 << (c + 1)) - 1)
            if after:
                i = (after & -after).bit_length() - 1
                return level * SLOTS + i, block + (i << shift)
            i = (o & -o).bit_length() - 1  # only the top level wraps
            return level * SLOTS + i, block + (1 << (shift + SLOT_BITS)) + (i << shift)
        return None

    def _tick_start_time(self, t: int) -> float:
        v = (float(self._origin) + float(t)) * self._res
        while self._tick(v) < t:
            v = math.nextafter(v, _INF)
        while True:
            p = math.nextafter(v, -_INF)
            if self._tick(p) < t:
                return v
            v = p

    def _check(self, d: float) -> None:
        if not math.isfinite(d) or self._tick(d) > self._cur + self._max_ahead:
            raise deadline_error(d, self.horizon, self._time)

    # -- entries ------------------------------------------------------------
    # Every method but len() and the properties refuses re-entry (a key's
    # __hash__/__eq__ calling back into the wheel): the caller's code runs only
    # in the index lookups, which come before any change, or in an index insert
    # that is the last step and is undone when it raises. Keys are released
    # (their __del__ may run) only on return, once the wheel is consistent.
    def schedule(self, key: Hashable, deadline: float) -> None:
        """Give ``key`` the deadline ``deadline`` (adding it, or moving it)."""
        d = deadline if type(deadline) is float else as_seconds("deadline", deadline)
        self._enter()
        try:
            hk = HashedKey(key)
            node = self._nodes.get(hk)
            self._check(d)
            # What can fail (an id's __eq__, out of memory) comes before
            # what cannot: a failed schedule leaves the wheel as it was.
            seq = self._seq + 1
            if node is None:
                nid = self._nid + 1
                node = [d, seq, 0, hk, nid]
                self._link(node, self._slot_for(d))
                try:
                    self._nodes[hk] = node  # may run the key's __eq__
                except BaseException:
                    self._unlink(node)
                    raise
                hk.stored = True
                self._seq, self._nid = seq, nid
                return
            if node[_NODE_SLOT] >= SLOTS and d >= node[_NODE_DEADLINE]:
                node[_NODE_DEADLINE] = d  # lazy: refiled when its slot comes due
                node[_NODE_SEQ] = self._seq = seq
                return
            slot = self._slot_for(d)
            old = node[_NODE_SLOT]
            if slot != old:
                self._link(node, slot)
                self._unlink(node, old)
            node[_NODE_DEADLINE] = d
            node[_NODE_SEQ] = self._seq = seq
        finally:
            self._busy = False

    def cancel(self, key: Hashable) -> bool:
        """Remove ``key``; False when it had no deadline."""
        self._enter()
        try:
            node = self._nodes.pop(HashedKey(key), None)
            if node is None:
                return False
            self._unlink(node)
            return True
        finally:
            self._busy = False

    def deadline(self, key: Hashable) -> float:
        """The deadline of ``key``; KeyError when it has none."""
        self._enter()
        try:
            node = self._nodes.get(HashedKey(key))
            if node is None:
                raise KeyError(key)
            deadline: float = node[_NODE_DEADLINE]
            return deadline
        finally:
            self._busy = False

    def clear(self) -> None:
        """Remove every key."""
        self._enter()
        try:
            old = self._nodes  # released on return, once the wheel is empty
            self._nodes = {}
            self._slots = [{} for _ in range(self._levels * SLOTS)]
            self._occupied = [0] * self._levels
        finally:
            self._busy = False
        del old

    def next_deadline(self) -> float | None:
        """The earliest time at which a key may be due; None when empty.

        Never later than the earliest deadline, and exact when that deadline
        is filed at level 0 (the wheel's current run of 64 ticks, which holds
        every overdue key). Further ahead it is the start of
        the coarse slot holding it: ``expire()`` at that time refiles the slot
        (returning whatever is due), and the next call answers more finely.
        """
        if self._busy:
            raise RuntimeError(REENTERED)
        found = self._first_slot()
        if found is None:
            return None
        slot, start = found
        if slot >= SLOTS:
            return self._tick_start_time(start)
        earliest: float = min(node[_NODE_DEADLINE] for node in self._slots[slot].values())
        return earliest

    def expire(self, now: float) -> list[Hashable]:
        """Remove and return every key whose deadline <= ``now``, sorted by
        deadline (ties in the order they were last scheduled), and advance
        :attr:`time` to ``now`` when it is later. ``math.inf`` expires
        everything; NaN raises ValueError. Runs none of the keys' code."""
        now = now if type(now) is float else as_seconds("now", now)
        if math.isnan(now):
            raise ValueError("now must not be NaN")
        self._enter()
        try:
            return self._expire(now)
        finally:
            self._busy = False

    def _expire(self, now: float) -> list[Hashable]:
        if now == -_INF:
            return []
        due: list[tuple[float, int, list[Any]]] = []
        q = _INF if now == _INF else self._tick(now)
        if q < self._cur:
            bucket = self._slots[self._cur & SLOT_MASK]
            for node in list(bucket.values()):
                if node[_NODE_DEADLINE] <= now:
                    self._unlink(node)
                    due.append((node[_NODE_DEADLINE], node[_NODE_SEQ], node))
        else:
            limit = self._cur + (1 << (SLOT_BITS * self._levels))
            # Past one span of the top level everything filed is due: the
            # cursor goes straight to now's tick (lw_wheel.c), up to 2**62.
            target = q if q < limit or q < FAR_TICK else limit
            while True:
                found = self._first_slot()
                if found is None or found[1] > target:
                    break
                slot, start = found
                self._cur = start
                bucket = self._take_slot(slot)
                if slot >= SLOTS:
                    for node in bucket.values():
                        self._link(node, self._slot_for(node[_NODE_DEADLINE]))
                    continue
                for node in bucket.values():
                    if node[_NODE_DEADLINE] <= now:
                        due.append((node[_NODE_DEADLINE], node[_NODE_SEQ], node))
                    else:
                        self._link(node, self._slot_for(node[_NODE_DEADLINE]))
                if self._slots[slot]:
                    break
            if now != _INF and target > self._cur:
                self._cur = int(target)  # finite now: q is an int tick
        if now != _INF and now > self._time:
            self._time = now
        if not due:
            return []
        due.sort(key=_due_order)
        nodes = self._nodes
        out = []
        for _, _, node in due:
            hk = node[_NODE_KEY]
            del nodes[hk]  # a stored key: found by identity, no caller code runs
            out.append(hk.key)
        return out


def _due_order(entry: tuple[float, int, list[Any]]) -> tuple[float, int]:
    return entry[0], entry[1]
