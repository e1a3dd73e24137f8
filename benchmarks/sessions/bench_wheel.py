"""TimerWheel heartbeats: moving a key's deadline later (what every
progress() does), with 10**6 keys, on the native wheel, its pure-Python twin
and a heapq with lazy deletion (asyncio's scheme), measured in one run.

    python -m pytest benchmarks/sessions/bench_wheel.py -s
"""

from __future__ import annotations

import random

import pytest

from heapq_timers import wheel_factories

N = 1_000_000
BATCH = 1000
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module", params=["native", "python", "heapq"])
def loaded(request):
    factory = wheel_factories().get(request.param)
    if factory is None:
        pytest.skip("native extension not built")
    wheel = factory(0.001, now=0.0)
    rnd = random.Random(7)
    for key in range(N):
        wheel.schedule(key, 120.0 + rnd.random())
    keys = [rnd.randrange(N) for _ in range(BATCH)]
    return request.param, wheel, keys


def test_heartbeat(benchmark, loaded):
    name, wheel, keys = loaded
    clock = [121.0]
    schedule = wheel.schedule

    def heartbeats():
        now = clock[0] = clock[0] + 0.001
        deadline = now + 120.0
        for key in keys:
            schedule(key, deadline)

    benchmark.group = "wheel heartbeat (1000 keys of 10**6, deadline moves later)"
    benchmark(heartbeats)
    RESULTS[name] = benchmark.stats.stats.median / BATCH
    assert len(wheel) == N


def test_zz_ratios():
    with_native = "native" in RESULTS
    lines = ["", "wheel heartbeat, per schedule() call at 10**6 keys:"]
    for name, t in sorted(RESULTS.items(), key=lambda kv: kv[1]):
        lines.append(f"  {name:8s} {t * 1e9:8.1f} ns")
    if with_native and "heapq" in RESULTS:
        lines.append(f"  native / heapq  = {RESULTS['native'] / RESULTS['heapq']:.3f}")
    if with_native and "python" in RESULTS:
        lines.append(f"  native / python = {RESULTS['native'] / RESULTS['python']:.3f}")
    print("\n".join(lines))
