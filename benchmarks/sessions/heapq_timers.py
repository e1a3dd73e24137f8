"""The baseline the wheel is measured against: keyed deadlines in a heapq with
lazy deletion, asyncio's own scheme (BaseEventLoop._scheduled: a cancelled
handle stays in the heap until it reaches the top, and the heap is rebuilt
when more than half of it is cancelled). Same API as TimerWheel, so
SessionRegistry can run on it too (``wheel_factory=HeapqTimers``)."""

from __future__ import annotations

import heapq
import itertools

_CANCELLED = object()


class HeapqTimers:
    def __init__(self, resolution: float = 0.001, *, now: float = 0.0) -> None:
        self._heap: list[list] = []
        self._entries: dict = {}
        self._cancelled = 0
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def schedule(self, key, deadline: float) -> None:
        old = self._entries.get(key)
        if old is not None:
            old[2] = _CANCELLED
            self._cancelled += 1
        entry = [deadline, next(self._counter), key]
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)
        if self._cancelled * 2 > len(self._heap) > 100:
            self._compact()

    def cancel(self, key) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        entry[2] = _CANCELLED
        self._cancelled += 1
        return True

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[2] is not _CANCELLED]
        heapq.heapify(self._heap)
        self._cancelled = 0

    def next_deadline(self):
        heap = self._heap
        while heap and heap[0][2] is _CANCELLED:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list:
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if entry[2] is _CANCELLED:
                self._cancelled -= 1
                continue
            del self._entries[entry[2]]
            out.append(entry[2])
        return out


def registry_factories():
    """The registries measured against this baseline, by name: "native"
    (the C table, when the extension is built), "python" (the twin on the
    pure wheel) and "heapq" (the twin on this module: the baseline)."""
    import functools

    from loopwatch._selector import load_implementation

    twin = load_implementation("python")
    out = {"python": functools.partial(twin.SessionRegistry, wheel_factory=twin.TimerWheel),
           "heapq": functools.partial(twin.SessionRegistry, wheel_factory=HeapqTimers)}
    try:
        out["native"] = load_implementation("native").SessionRegistry
    except ImportError:
        pass
    return out


def wheel_factories():
    """The wheels measured against this baseline, by name: "native" (when the
    extension is built), "python" (the twin) and "heapq" (this module)."""
    from loopwatch._selector import load_implementation

    out = {"python": load_implementation("python").TimerWheel, "heapq": HeapqTimers}
    try:
        out["native"] = load_implementation("native").TimerWheel
    except ImportError:
        pass
    return out
