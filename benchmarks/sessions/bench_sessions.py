"""SessionRegistry: progress() with 10**6 sessions, and check() with nothing
due at 10**3, 10**5 and 10**6 sessions, each against its baseline measured in
the same run: the pure registry on a heapq with lazy deletion (asyncio's
scheme) and on the pure-Python wheel for progress(); a full scan of a dict
of the same sessions for check(). (benchmarks/sessions/table.py measures
the same cold, in fresh processes, for the README's table.)

    python -m pytest benchmarks/sessions/bench_sessions.py -s
"""

from __future__ import annotations

import random

import pytest

from heapq_timers import registry_factories

RESULTS: dict[tuple[str, str, int], float] = {}
BATCH = 1000
STUCK_AFTER = 120.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def build(name: str, n: int):
    factory = registry_factories().get(name)
    if factory is None:
        pytest.skip("native extension not built")
    clock = Clock()
    reg = factory(stuck_after=STUCK_AFTER, clock=clock, max_sessions=n)
    rnd = random.Random(n)
    for i in range(n):
        clock.t = 1000.0 + rnd.random()  # opened over one second
        reg.open(i, key="agent:main", state="processing")
    clock.t = 1001.0
    return reg, clock


@pytest.fixture(scope="module", params=["native", "python", "heapq"])
def million(request):
    reg, clock = build(request.param, 1_000_000)
    yield request.param, reg, clock


def test_progress_1e6(benchmark, million):
    name, reg, clock = million
    keys = random.Random(2).sample(range(len(reg)), BATCH)
    progress = reg.progress

    def heartbeats():
        clock.t += 0.001
        for sid in keys:
            progress(sid)

    benchmark.group = "registry progress() at 10**6 sessions (per 1000 calls)"
    benchmark(heartbeats)
    RESULTS[("progress", name, 1_000_000)] = benchmark.stats.stats.median / BATCH


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
@pytest.mark.parametrize("name", ["native", "python"])
def test_check_nothing_due(benchmark, name, n):
    reg, clock = build(name, n)
    clock.t = 1050.0  # every session is 50 s into its 120 s

    benchmark.group = f"check() with nothing due, {n} sessions"
    events = benchmark(reg.check)
    assert events == []
    RESULTS[("check", name, n)] = benchmark.stats.stats.median


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_check_full_scan_baseline(benchmark, n):
    """What a checker without a wheel does: look at every session."""
    rnd = random.Random(n)
    sessions = {
        i: {"state": "processing", "last_progress": 1000.0 + rnd.random(), "stuck": False}
        for i in range(n)
    }
    active = ("processing", "waiting")

    def full_scan(now=1050.0):
        due = []
        for sid, s in sessions.items():
            if s["state"] in active and s["last_progress"] + STUCK_AFTER <= now:
                due.append(sid)
        return due

    benchmark.group = f"check() with nothing due, {n} sessions"
    rounds = 3 if n >= 100_000 else 50
    assert benchmark.pedantic(full_scan, rounds=rounds, iterations=1) == []
    RESULTS[("check", "full scan", n)] = benchmark.stats.stats.median


def test_zz_ratios():
    r = RESULTS
    lines = ["", "registry progress(), per call at 10**6 sessions:"]
    for name in ("native", "python", "heapq"):
        if ("progress", name, 1_000_000) in r:
            lines.append(f"  {name:8s} {r[('progress', name, 1_000_000)] * 1e9:8.1f} ns")
    if ("progress", "native", 1_000_000) in r and ("progress", "heapq", 1_000_000) in r:
        lines.append("  native / heapq  = %.3f" % (
            r[("progress", "native", 1_000_000)] / r[("progress", "heapq", 1_000_000)]))
        lines.append("  native / python = %.3f" % (
            r[("progress", "native", 1_000_000)] / r[("progress", "python", 1_000_000)]))
    lines.append("check() with nothing due:")
    for n in (1_000, 100_000, 1_000_000):
        row = [f"  n={n:>9,}"]
        for name in ("native", "python", "full scan"):
            if ("check", name, n) in r:
                row.append(f"{name} {r[('check', name, n)] * 1e6:10.3f} us")
        if ("check", "native", n) in r and ("check", "full scan", n) in r:
            row.append(f"scan/native {r[('check', 'full scan', n)] / r[('check', 'native', n)]:,.0f}x")
        lines.append("  ".join(row))
    for name in ("native", "python"):
        if ("check", name, 1_000) in r and ("check", name, 1_000_000) in r:
            lines.append(f"  {name}: 10**6 / 10**3 = "
                         f"{r[('check', name, 1_000_000)] / r[('check', name, 1_000)]:.2f}")
    print("\n".join(lines))
