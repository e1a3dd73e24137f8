"""Child of loop_callgrind.py: a chain of N call_soon callbacks (each
schedules the next: one loop iteration per callback, the worst case for
anything a monitor adds per iteration), in a fresh process.

    python child_chain.py KIND VARIANT N SCALE
    KIND: asyncio | uvloop
    VARIANT: single (unwatched, nothing else), realistic (unwatched, one
        unrelated timer, one idle thread, loopwatch imported), plain
        (realistic without the import), watched-10ms / watched-1ms
        (realistic + the native monitor; resolution and threshold times
        SCALE, valgrind's slowdown)

Prints the chain's wall time ("elapsed"); under callgrind the measured
window (lw_bench.CallgrindWindow) is the chain alone, warm.
"""

from __future__ import annotations

import sys
import time

import lw_bench


async def chain(n: int, window: lw_bench.CallgrindWindow | None = None) -> float:
    import asyncio

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n]

    def step() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_soon(step)
        else:
            done.set_result(None)

    if window is not None:
        window.start()
    start = time.perf_counter()
    loop.call_soon(step)
    await done
    elapsed = time.perf_counter() - start
    if window is not None:
        window.stop()
    return elapsed


def main() -> None:
    kind, variant, n, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    loop = lw_bench.new_loop(kind)
    if variant != "single":
        lw_bench.realistic(loop, import_loopwatch=variant != "plain")
    monitor = None
    if variant.startswith("watched-"):
        resolution = float(variant.split("-")[1][:-2]) / 1000
        monitor = lw_bench.start_monitor(loop, resolution, scale)
    loop.run_until_complete(chain(2000))  # warm: the code paths, the monitor's first pings
    before = monitor._core.ping_counts()[0] if monitor is not None else 0
    elapsed = loop.run_until_complete(chain(n, lw_bench.CallgrindWindow()))
    if monitor is not None:
        sent = monitor._core.ping_counts()[0] - before  # pings sent during the chain
        monitor.stop()
        print(f"pings {sent}")
    print(f"elapsed {elapsed:.6f}")
    loop.close()


if __name__ == "__main__":
    main()
