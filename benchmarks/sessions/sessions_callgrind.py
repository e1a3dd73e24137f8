"""Repeatable costs of the session registry: instructions per call under
callgrind, which a noisy shared machine does not blur.

For each registry size, a child process opens N sessions and then makes K
calls; the same child with K = 0 is subtracted, so what remains is the calls
alone. check() has nothing due (the flat case); the full scan is the dict walk
a checker without a wheel does; progress() is measured on the native wheel,
the pure twin and the heapq baseline. Instruction counts do not show cache
misses, which dominate progress() at 10**6 sessions in wall time: read them
as the work done, and bench_sessions.py as the time taken.

    python benchmarks/sessions/sessions_callgrind.py [sizes, default 1000,100000]
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable  # the venv's own: its packages are what is measured

CHILD = r"""
import random, sys
sys.path.insert(0, {here!r})
from bench_sessions import STUCK_AFTER, build
what, name, n, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if what == "scan":
    rnd = random.Random(n)
    sessions = {{i: {{"state": "processing", "last_progress": 1000.0 + rnd.random()}}
                for i in range(n)}}
    for _ in range(k):
        due = [sid for sid, s in sessions.items()
               if s["state"] in ("processing", "waiting")
               and s["last_progress"] + STUCK_AFTER <= 1050.0]
        assert not due
else:
    reg, clock = build(name, n)
    clock.t = 1050.0
    if what == "check":
        check = reg.check
        for _ in range(k):
            check()
    else:
        keys = random.Random(2).sample(range(n), min(n, 1000))
        progress = reg.progress
        for i in range(k):
            clock.t += 1e-6
            progress(keys[i % len(keys)])
"""


def instructions(what: str, name: str, n: int, k: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", PY, "-c",
             CHILD.format(here=HERE), what, name, str(n), str(k)],
            check=True, capture_output=True, env=env,
        )
        total = 0
        for path in glob.glob(out + "*"):
            with open(path) as f:
                m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
                total += int(m.group(1))
        return total


def per_call(what: str, name: str, n: int, k: int) -> float:
    return (instructions(what, name, n, k) - instructions(what, name, n, 0)) / k


def main() -> None:
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "1000,100000").split(",")]
    rows = []
    for n in sizes:
        for name in ("native", "python"):
            rows.append(("check, nothing due", name, n, per_call("check", name, n, 2000)))
        rows.append(("check, full scan", "dict walk", n, per_call("scan", "-", n, 3)))
        for name in ("native", "python", "heapq"):
            rows.append(("progress", name, n, per_call("progress", name, n, 20000)))
    for what, name, n, count in rows:
        print(f"{what:20s} {name:10s} n={n:>9,}  {count:14,.0f} instructions per call")


if __name__ == "__main__":
    main()
