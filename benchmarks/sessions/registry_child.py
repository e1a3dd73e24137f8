"""One measurement of a SessionRegistry, in a fresh process (run by
table.py): prints one JSON object.

    python registry_child.py progress NAME N      cold progress() by id and by handle
    python registry_child.py check NAME N K       K check()s with nothing due
    python registry_child.py bulk N               open, progress, close N sessions (native)
    python registry_child.py calls NAME N K WHAT KMAX   the first K of KMAX progress() calls
                                                     (by id or handle; for callgrind, see measured())

NAME: native (the C table), python (the twin on the pure wheel), heapq
(the twin on a heapq: the baseline). Ids are random UUID strings, as a
gateway's session ids are; "cold" means every session once, in a random
order, so each call finds its session out of the caches (what 10**6
sessions heartbeating at random do). CPU time of this process only, with
the garbage collector off during the timed loop (each side's own cost; the
twin's per-call allocations would otherwise also pay for collections).
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import sys
import time
import uuid
from collections import deque
from itertools import repeat, starmap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from heapq_timers import registry_factories  # noqa: E402

STUCK_AFTER = 120.0


def measured(calls) -> None:
    """Run an iterator of calls through deque.extend (a C function): under
    callgrind, table.py counts only inside ``deque_extend``
    (``--toggle-collect``), so the count is these calls and the C loop
    driving them (about 180 instructions a call, on both sides of every
    ratio) and nothing of the build. Counting the whole process instead
    and subtracting a run without the calls left a difference of the
    build's own variation: the wheel files each session by the real clock,
    which valgrind's slowdown spreads over other slots from run to run,
    +-20 M instructions at 10**5 sessions (more than 20,000 calls cost)."""
    deque(calls, maxlen=0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def ids(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n)]


def build(name: str, n: int, clock=None):
    factory = registry_factories()[name]
    kwargs = {"clock": clock} if clock is not None else {}
    reg = factory(stuck_after=STUCK_AFTER, max_sessions=max(n, 1), **kwargs)
    sids = ids(n)
    handles = [reg.open(sid, key="agent:main", state="processing").handle for sid in sids]
    return reg, sids, handles


def timed(fn, items) -> float:
    gc.collect()
    gc.disable()  # for the rest of the process (see main)
    t0 = time.process_time_ns()
    for item in items:
        fn(item)
    return (time.process_time_ns() - t0) / len(items)


def progress(name: str, n: int) -> dict:
    reg, sids, handles = build(name, n)
    order = list(range(n))
    random.Random(2).shuffle(order)
    by_id = timed(reg.progress, [sids[i] for i in order])
    random.Random(3).shuffle(order)
    by_handle = timed(reg.progress_handle, [handles[i] for i in order])
    return {"by_id_ns": by_id, "by_handle_ns": by_handle, "n": n}


def check(name: str, n: int, k: int) -> dict:
    clock = Clock()
    # Everything the build made is kept: letting 10**7 ids' handles go just
    # before the timed loop left the process a one-time cost (tens of ms)
    # inside it, which is no part of check().
    reg, sids, handles = build(name, n, clock)
    clock.t += STUCK_AFTER / 2  # every session half way to stuck: nothing due
    assert reg.check() == []
    check = reg.check
    gc.collect()
    gc.disable()
    for _ in range(2000):  # warm-up, untimed and not counted
        check()
    t0 = time.process_time_ns()
    measured(starmap(check, repeat((), k)))
    per = (time.process_time_ns() - t0) / max(k, 1)
    out = {"check_ns": per, "n": n}
    if hasattr(reg, "_native_memory"):
        out["native_bytes_per_session"] = reg._native_memory() / max(n, 1)
    return out


def bulk(n: int) -> dict:
    """n sessions opened, each progressed once, then each closed (the C
    table): times and the process's peak resident memory."""
    from loopwatch._selector import load_implementation

    reg = load_implementation("native").SessionRegistry(stuck_after=STUCK_AFTER, max_sessions=n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    handles = [reg.open(i, state="processing").handle for i in range(n)]
    t1 = time.process_time()
    for h in handles:
        reg.progress_handle(h)
    t2 = time.process_time()
    memory = reg._native_memory()
    for i in range(n):
        reg.close(i)
    t3 = time.process_time()
    assert len(reg) == 0
    return {"n": n, "open_s": t1 - t0, "progress_s": t2 - t1, "close_s": t3 - t2,
            "native_bytes": memory,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_before_bytes": rss0 * 1024}


def calls(name: str, n: int, k: int, what: str, k_max: int) -> dict:
    """The first k of k_max cold heartbeats (by id or by handle) after
    building n sessions: everything but the k calls themselves is the same
    whatever k, so a run with k = 0 is the base to subtract."""
    reg, sids, handles = build(name, n)
    rnd = random.Random(4)
    picks = [rnd.randrange(n) for _ in range(k_max)]
    args = [sids[i] for i in picks] if what == "id" else [handles[i] for i in picks]
    call = reg.progress if what == "id" else reg.progress_handle
    gc.collect()
    gc.disable()
    measured(map(call, args[:k]))
    return {"k": k}


def main() -> None:
    what = sys.argv[1]
    if what == "progress":
        out = progress(sys.argv[2], int(sys.argv[3]))
    elif what == "check":
        out = check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif what == "bulk":
        out = bulk(int(sys.argv[2]))
    elif what == "calls":
        out = calls(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    print(json.dumps(out), flush=True)
    # No teardown: with the collector off since the measured loop, the
    # process ends the same whatever was measured, so two runs differing
    # only in the number of calls differ only by those calls (callgrind).
    os._exit(0)


if __name__ == "__main__":
    main()
