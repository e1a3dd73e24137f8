"""What the loop monitor costs a busy loop, in instructions of the loop
thread under callgrind: a chain of call_soon callbacks (one loop iteration
each, the worst case for anything added per iteration).

Each variant runs in a fresh process (benchmarks/loop/child_chain.py)
under `valgrind --tool=callgrind --separate-threads=yes`, counting only the
warm chain in the main (loop) thread (lw_bench.CallgrindWindow); the
sampler's work is on its own thread, on another core. Valgrind runs the
program ~50x slower, so a watched run's resolution and threshold are
scaled by the slowdown measured in the same run (the realistic baseline's
chain under callgrind against the same chain run natively, best of 3):
pings per callback are as in real time.

Baselines, measured in the same run: *realistic*, the same process
unwatched with one unrelated timer scheduled and one idle thread (what a
service has anyway: asyncio checks the heap top every iteration, and any
second thread puts fd system calls on the kernel's shared-table path, which
callgrind does not see) and loopwatch imported but not started (the
import alone moves counts: lw_bench.realistic); *plain*, the same without
the import; and *single*, unwatched and single-threaded.
Rounds alternate the variants; each ratio is the median over rounds.

    python benchmarks/loop/loop_callgrind.py [--n 50000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lw_bench  # noqa: E402

CHILD = os.path.join(lw_bench.HERE, "child_chain.py")
WATCHED = ("watched-10ms", "watched-1ms")


def native_elapsed(kind: str, n: int, tries: int = 3) -> float:
    """The realistic baseline's chain run natively: best of `tries`."""
    return min(lw_bench.field(lw_bench.run_child([CHILD, kind, "realistic", str(n), "1"]),
                              "elapsed") for _ in range(tries))


def chain_costs(kind: str, n: int, rounds: int, lib: str) -> dict[str, object]:
    """Loop-thread instructions per callback for each variant (median over
    rounds), the ratios of the watched ones to both baselines, and the
    slowdown used to scale the resolutions."""
    real = native_elapsed(kind, n)
    per_cb: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    scale = None
    pings: dict[str, list[float]] = {}
    for r in range(rounds):
        counts: dict[str, float] = {}
        order = ["realistic", "single", "plain", *WATCHED]
        if r % 2:
            order = ["realistic", *reversed(WATCHED), "plain", "single"]
        for variant in order:
            threads, out = lw_bench.run_callgrind(
                lib, [CHILD, kind, variant, str(n), str(scale or 1.0)])
            if variant == "realistic" and scale is None:
                scale = lw_bench.field(out, "elapsed") / real
            counts[variant] = threads[1] / n
            if variant in WATCHED:
                pings.setdefault(variant, []).append(lw_bench.field(out, "pings"))
        for variant, value in counts.items():
            per_cb.setdefault(variant, []).append(value)
        for variant in WATCHED:
            ratios.setdefault(f"{variant}/realistic", []).append(
                counts[variant] / counts["realistic"])
            ratios.setdefault(f"{variant}/single", []).append(counts[variant] / counts["single"])
        ratios.setdefault("realistic/single", []).append(counts["realistic"] / counts["single"])
        ratios.setdefault("realistic/plain", []).append(counts["realistic"] / counts["plain"])
    return {
        "per_callback": {v: lw_bench.median(x) for v, x in per_cb.items()},
        "ratio": {k: lw_bench.median(x) for k, x in ratios.items()},
        "ratios": ratios,
        "pings": {v: lw_bench.median(x) for v, x in pings.items()},
        "scale": scale,
        "native_s": real,
        "n": n,
        "rounds": rounds,
    }


def ping_answer_cost(result: dict[str, object]) -> float | None:
    """Loop-thread instructions one answered ping adds: the 1 ms run against
    the 10 ms run, both watched (the same code loaded: a process's layout
    alone moves the count by tenths of a percent, far more than the pings),
    over the difference in pings."""
    pings = result["pings"]
    extra = pings.get("watched-1ms", 0) - pings.get("watched-10ms", 0)  # type: ignore[union-attr]
    if extra <= 0:
        return None
    pc = result["per_callback"]
    return (pc["watched-1ms"] - pc["watched-10ms"]) * result["n"] / extra  # type: ignore[index,operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"call_soon chain of {args.n}: loop-thread instructions per callback (callgrind), "
          f"median of {args.rounds} rounds of fresh processes")
    with lw_bench.callgrind_lib() as lib:
        for kind in ("asyncio", "uvloop"):
            r = chain_costs(kind, args.n, args.rounds, lib)
            pc, ratio = r["per_callback"], r["ratio"]
            answer = ping_answer_cost(r)
            print(f"{kind}: single {pc['single']:.0f}, plain {pc['plain']:.0f}, realistic "
                  f"{pc['realistic']:.0f} ({ratio['realistic/single']:.4f}x single, "
                  f"{ratio['realistic/plain']:.4f}x plain); valgrind slowdown "
                  f"{r['scale']:.0f}x (resolutions scaled by it)")
            for variant in WATCHED:
                print(f"  {variant:<13} {pc[variant]:.0f}/callback: "
                      f"{ratio[variant + '/realistic']:.4f}x realistic, "
                      f"{ratio[variant + '/single']:.4f}x single "
                      f"({r['pings'][variant]:.0f} pings in the chain)", flush=True)
            if answer is not None:
                print(f"  one ping answered by the busy loop: {answer:.0f} instructions "
                      "(the reader callback; the delay sample in it is one subtraction and "
                      "one histogram record)")


if __name__ == "__main__":
    main()
