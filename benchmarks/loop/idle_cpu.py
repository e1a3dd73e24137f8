"""What watching an idle loop costs: process CPU time per second.

Each pair is two fresh processes run one after the other, the same idle
loop with a 1 s periodic timer, unwatched and watched at 10 ms resolution
(native monitor); each measures its own process CPU time
(time.process_time: every thread, user + system) over SECONDS of idling
after a settling second, so start-up is not counted and the machine's
noise, which moves wall time, barely moves CPU time. The cost is the median
over pairs of (watched - unwatched), in ms of CPU per second.

The same with the sampler's idle sleeps polling (as where io_uring is
refused: macOS, Docker's default seccomp profile): it must look every
2 x resolution.

What one ping costs an idle loop: the same with the monitor told to ping
even a loop it proves asleep in its selector (a wake-up of the loop, the
reader callback, the sampler's wake-up), over the pings sent.

    python benchmarks/loop/idle_cpu.py [--seconds 10] [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lw_bench  # noqa: E402

CHILD = os.path.join(lw_bench.HERE, "child_idle.py")


def _run(kind: str, variant: str, seconds: float) -> str:
    return lw_bench.run_child([CHILD, kind, variant, str(seconds)], timeout=seconds * 4 + 60)


def idle_cost(kind: str, seconds: float, pairs: int,
              variant: str = "watched-10ms") -> dict[str, float]:
    """Median over fresh-process pairs: {"unwatched", "watched", "cost"} in
    ms of process CPU per second, plus the watched run's wake-ups per
    second ("sleeps", "skipped", "pings"). variant "polled-10ms": the
    sampler's idle sleeps poll (as where io_uring is refused)."""
    unwatched, watched, costs, sleeps, skipped, pings = [], [], [], [], [], []
    for i in range(pairs):
        # alternate the order so that a drift of the machine hits both
        order = ("unwatched", variant) if i % 2 == 0 else (variant, "unwatched")
        out = {v: _run(kind, v, seconds) for v in order}
        u = lw_bench.field(out["unwatched"], "cpu_ms_per_s")
        w = lw_bench.field(out[variant], "cpu_ms_per_s")
        unwatched.append(u)
        watched.append(w)
        costs.append(w - u)
        sleeps.append(lw_bench.field(out[variant], "sleeps_per_s"))
        skipped.append(lw_bench.field(out[variant], "skipped_per_s"))
        pings.append(lw_bench.field(out[variant], "pings_per_s"))
    return {"unwatched": lw_bench.median(unwatched), "watched": lw_bench.median(watched),
            "cost": lw_bench.median(costs), "sleeps": lw_bench.median(sleeps),
            "skipped": lw_bench.median(skipped), "pings": lw_bench.median(pings),
            "pairs": pairs, "costs": costs}


def ping_cost(kind: str, seconds: float, pairs: int) -> dict[str, float]:
    """What one ping costs an idle loop, in us of process CPU: median over
    pairs of (pinged - unwatched) CPU / pings sent."""
    per_ping, rates = [], []
    for _ in range(pairs):
        u = lw_bench.field(_run(kind, "unwatched", seconds), "cpu_ms_per_s")
        out = _run(kind, "pinged-10ms", seconds)
        w = lw_bench.field(out, "cpu_ms_per_s")
        rate = lw_bench.field(out, "pings_per_s")
        rates.append(rate)
        per_ping.append((w - u) * 1000 / rate if rate > 0 else float("nan"))
    return {"us_per_ping": lw_bench.median(per_ping), "pings_per_s": lw_bench.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    print(f"idle loop, 1 s periodic timer, {args.seconds:g} s per process, median of "
          f"{args.pairs} fresh-process pairs: process CPU ms/s")
    for kind in ("asyncio", "uvloop"):
        r = idle_cost(kind, args.seconds, args.pairs)
        print(f"{kind:<8} unwatched {r['unwatched']:.3f}  watched(10 ms) {r['watched']:.3f}  "
              f"cost {r['cost']:+.3f} ms/s (pairs: {', '.join(f'{c:+.3f}' for c in r['costs'])}; "
              f"sampler sleeps {r['sleeps']:.1f}/s, pings {r['pings']:.2f}/s, "
              f"skipped {r['skipped']:.1f}/s)", flush=True)
        q = idle_cost(kind, args.seconds, max(1, args.pairs // 2), "polled-10ms")
        print(f"{kind:<8} polled idle sleeps (no io_uring): cost {q['cost']:+.3f} ms/s "
              f"(sampler sleeps {q['sleeps']:.1f}/s)", flush=True)
        p = ping_cost(kind, args.seconds, max(1, args.pairs // 2))
        print(f"{kind:<8} one ping of an idle loop: {p['us_per_ping']:.1f} us of process CPU "
              f"({p['pings_per_s']:.0f} pings/s)", flush=True)


if __name__ == "__main__":
    main()
