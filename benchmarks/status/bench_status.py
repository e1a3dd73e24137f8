"""Status answer latency and the idle cost of Diagnostics.

    python -m pytest benchmarks/status/bench_status.py -s

Latency: a client in this process connects to another process's status
socket and reads the document, timed with pytest-benchmark; p50 and p99 of
200 rounds each. Modes: the target idle, its loop 100 % busy (a call_soon
chain, no stall), blocked in Python code, blocked in a C call holding the
GIL. Baseline, measured in the same run: a process whose thread answers a
fixed 2 kB document (connect + read, nothing built).

Idle cost: CPU time (user + system, from wait4) per second of wall time of
an idle asyncio process under Diagnostics (monitor at 10 ms, status
served, liveness every 30 s), against the same process unwatched; paired
runs, alternating, 3 pairs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

from loopwatch.status.client import query_status

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "target.py")
RESULTS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def runtime_dir():
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o700)
        old = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = folder
        yield folder
        if old is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = old


def _start(mode: str, seconds: float, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, TARGET, mode, str(seconds), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=60)
    except Exception:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("mode", ["static", "idle", "saturated", "stall-py", "stall-c"])
def test_status_latency(benchmark, runtime_dir, mode):
    if mode == "static":
        path = os.path.join(runtime_dir, "static.sock")
        proc = _start("static", 120, path)
        ask = lambda: query_status(proc.pid, timeout=10, path=path)  # noqa: E731
    else:
        proc = _start(mode, 20 if mode == "stall-c" else 120)  # 200 rounds take < 15 s
        time.sleep(0.3)  # a stall past its threshold
        ask = lambda: query_status(proc.pid, timeout=10)  # noqa: E731
    times: list[float] = []

    def timed():
        start = time.perf_counter()
        ask()
        times.append(time.perf_counter() - start)

    try:
        benchmark.pedantic(timed, rounds=200, iterations=1)
    finally:
        _stop(proc)
    times.sort()
    RESULTS[mode] = {"p50_ms": times[len(times) // 2] * 1e3,
                     "p99_ms": times[int(len(times) * 0.99) - 1] * 1e3}
    benchmark.extra_info.update(RESULTS[mode])


def _cpu_per_second(mode: str, seconds: float) -> float:
    proc = _start(mode, seconds + 30)
    start = time.monotonic()
    time.sleep(seconds)
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    return (usage.ru_utime + usage.ru_stime) / wall


def test_idle_cpu_cost(runtime_dir):
    pairs = []
    for _ in range(3):
        bare = _cpu_per_second("bare", 5.0)
        watched = _cpu_per_second("idle", 5.0)
        pairs.append((bare, watched))
    RESULTS["idle_cpu"] = {
        "bare_ms_per_s": statistics.median(b for b, _ in pairs) * 1e3,
        "watched_ms_per_s": statistics.median(w for _, w in pairs) * 1e3,
        "added_ms_per_s": statistics.median(w - b for b, w in pairs) * 1e3,
    }


def teardown_module(module):
    base = RESULTS.get("static")
    print("\nstatus answer latency (ms), client in another process:")
    for mode in ("static", "idle", "saturated", "stall-py", "stall-c"):
        if mode in RESULTS:
            r = RESULTS[mode]
            ratio = f"  x{r['p50_ms'] / base['p50_ms']:.1f} of baseline p50" if base else ""
            print(f"  {mode:<10} p50 {r['p50_ms']:7.2f}  p99 {r['p99_ms']:7.2f}{ratio}")
    if "idle_cpu" in RESULTS:
        r = RESULTS["idle_cpu"]
        print(f"idle process CPU, ms per second: unwatched {r['bare_ms_per_s']:.2f}, "
              f"under Diagnostics {r['watched_ms_per_s']:.2f} (+{r['added_ms_per_s']:.2f})")
