"""Child of idle_cpu.py: an idle loop with a 1 s periodic timer (the loop
wakes once a second, as a service's housekeeping timer makes it), watched
or not; prints the process's CPU time per second of idling, measured after
a settling second, and the monitor's ping counts.

    python child_idle.py KIND VARIANT SECONDS
    KIND: asyncio | uvloop; VARIANT: unwatched | watched-10ms | pinged-10ms
    | polled-10ms (pinged: the monitor pings even when the loop is proved
    idle; polled: its idle sleeps poll, as where io_uring is refused)
"""

from __future__ import annotations

import asyncio
import sys
import time

import lw_bench


def main() -> None:
    kind, variant, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    loop = lw_bench.new_loop(kind)

    def housekeeping() -> None:
        loop.call_later(1.0, housekeeping)

    loop.call_later(1.0, housekeeping)

    async def main_task() -> None:
        monitor = None
        if variant != "unwatched":
            monitor = lw_bench.start_monitor(loop, 0.01)
            if variant.startswith("pinged"):
                monitor._core.set_spare_idle(False)
            elif variant.startswith("polled"):
                monitor._core.set_wake_watch(False)
        await asyncio.sleep(1.0)  # settle: imports, first pings, first sleeps
        counts0 = monitor._core.ping_counts() if monitor else (0, 0, 0)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.monotonic()
        counts1 = monitor._core.ping_counts() if monitor else (0, 0, 0)
        if monitor is not None:
            monitor.stop()
        wall = wall1 - wall0
        print(f"cpu_ms_per_s {(cpu1 - cpu0) * 1000 / wall:.5f}")
        sent, skipped, sleeps = (b - a for a, b in zip(counts0, counts1))
        print(f"pings_per_s {sent / wall:.3f}")
        print(f"skipped_per_s {skipped / wall:.3f}")
        print(f"sleeps_per_s {sleeps / wall:.3f}")

    loop.run_until_complete(main_task())
    loop.close()


if __name__ == "__main__":
    main()
