"""How soon a stall is reported: from the moment the loop blocks (a 0.3 s
sleep) to the sampler's detection (StallEvent.detected_at) and to the
on_stall call, native monitor at 10 ms resolution and 100 ms threshold,
on asyncio and uvloop, for blocks entered from an idle loop (woken by a
timer, a socket, call_soon_threadsafe) and from a busy one
(benchmarks/loop/child_stall.py, a fresh process per loop kind). The
bound is threshold + 2 x resolution = 120 ms: the timer design's (a
heartbeat up to one resolution old, a sampling pass up to one resolution
late). Wall time: on a loaded machine the sampler's own wake-ups come
late, which this measures too.

    python benchmarks/loop/stall_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lw_bench  # noqa: E402

CHILD = os.path.join(lw_bench.HERE, "child_stall.py")
BOUND = 0.1 + 2 * 0.01


def latencies(kind: str, rounds: int) -> dict[str, list[list[float]]]:
    return json.loads(lw_bench.run_child([CHILD, kind, str(rounds)], timeout=60 + rounds * 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"stall latency, 0.3 s blocks, 10 ms resolution, 100 ms threshold (bound "
          f"{BOUND * 1000:.0f} ms), {args.rounds} rounds: detected / reported, ms")
    for kind in ("asyncio", "uvloop"):
        for way, rows in latencies(kind, args.rounds).items():
            det = sorted(x[0] * 1000 for x in rows)
            rep = sorted(x[1] * 1000 for x in rows)
            length = sorted(x[2] * 1000 for x in rows)
            print(f"{kind:<8} {way:<16} detected median {det[len(det) // 2]:.0f} max {det[-1]:.0f}; "
                  f"reported median {rep[len(rep) // 2]:.0f} max {rep[-1]:.0f}; "
                  f"length measured {length[0]:.0f}-{length[-1]:.0f} (block 300)")


if __name__ == "__main__":
    main()
