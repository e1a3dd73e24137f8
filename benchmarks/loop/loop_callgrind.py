"""Repeatable overhead of watching the loop: instruction counts of the loop
thread under callgrind, for the 10**6-style call_soon chain.

Wall-clock ratios on a shared 2-core machine drift by more than the 1-3 %
being measured; instruction counts of the loop thread do not. Valgrind runs
the program ~50x slower, so a monitor at 10 ms would fire 50x more often per
callback than it really does: each watched run uses the resolution scaled by
the measured slowdown, which keeps ticks per callback as in real time. Only
the loop (main) thread's instructions are counted: the sampler thread runs on
another core. Per-callback counts subtract a run with an empty chain.

    python benchmarks/loop/loop_callgrind.py [chain length, default 50000]
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = os.path.realpath(sys.executable)

CHILD = r"""
import asyncio, sys, time
sys.path.insert(0, {here!r})
import bench_loop
kind, watcher, n, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if watcher.startswith("loopwatch-"):
    _, impl, res = watcher.split("-")
    bench_loop.WATCHERS[watcher] = bench_loop.loopwatch_at(impl, float(res[:-2]) / 1000 * scale)
loop = bench_loop.new_loop(kind)
with bench_loop.WATCHERS[watcher](loop):
    loop.run_until_complete(bench_loop.call_soon_chain(1000))
    start = time.perf_counter()
    if n:
        loop.run_until_complete(bench_loop.call_soon_chain(n))
    print("elapsed", time.perf_counter() - start)
loop.close()
"""

VARIANTS = {
    "asyncio": ["baseline", "loopwatch-native-10ms", "loopwatch-native-1ms",
                "loopwatch-python-10ms", "loopwatch-python-1ms", "loopmon-10ms",
                "aiodebug-slow-callbacks"],
    "uvloop": ["baseline", "loopwatch-native-10ms", "loopwatch-native-1ms",
               "loopwatch-python-10ms", "loopwatch-python-1ms", "loopmon-10ms"],
}


def native_elapsed(kind: str, n: int) -> float:
    code = CHILD.format(here=HERE)
    best = min(
        float(re.search(r"elapsed (\S+)", subprocess.run(
            [PY, "-c", code, kind, "baseline", str(n), "1"], capture_output=True, text=True,
            check=True).stdout).group(1))
        for _ in range(3))
    return best


def main_thread_instructions(kind: str, watcher: str, n: int, scale: float) -> tuple[int, float]:
    code = CHILD.format(here=HERE)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={out}", PY, "-c", code, kind, watcher, str(n), str(scale)],
            capture_output=True, text=True, check=True)
        elapsed = float(re.search(r"elapsed (\S+)", run.stdout).group(1))
        main = sorted(glob.glob(out + "*-01"))[0]
        with open(main) as f:
            text = f.read()
        total = int(re.search(r"^summary:\s*(\d+)", text, re.M).group(1))
        return total, elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(f"call_soon chain of {n}: loop-thread instructions per callback (callgrind)")
    print(f"{'loop':<8} {'watcher':<26} {'instr/cb':>9} {'ratio':>7}")
    for kind, watchers in VARIANTS.items():
        real = native_elapsed(kind, n)
        _, under = main_thread_instructions(kind, "baseline", n, 1.0)
        scale = under / real
        base = None
        for watcher in watchers:
            full, _ = main_thread_instructions(kind, watcher, n, scale)
            empty, _ = main_thread_instructions(kind, watcher, 0, scale)
            per_cb = (full - empty) / n
            base = base or per_cb
            print(f"{kind:<8} {watcher:<26} {per_cb:>9.0f} {per_cb / base:>7.3f}", flush=True)
        print(f"{kind:<8} (valgrind slowdown {scale:.0f}x, resolutions scaled by it)")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"({time.time() - t0:.0f} s)")
