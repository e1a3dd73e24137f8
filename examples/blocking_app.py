"""An asyncio service that blocks its event loop now and then.

It serves simulated requests (each awaits a little simulated I/O), and on a
fixed schedule does the two things that stall real gateways: CPU-bound work
run right on the loop (`render_report`), and a synchronous call that waits
for I/O (`legacy_db_lookup`, a blocking sleep standing in for a sync
database driver). Run it under loopwatch to see the stalls named while they
happen, and the summary at exit:

    loopwatch run examples/blocking_app.py
    loopwatch run --stall-threshold 0.05 examples/blocking_app.py --duration 6 --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time


def render_report(seconds: float) -> int:
    """CPU-bound work on the event loop: hashes until `seconds` have passed."""
    digest = b"report"
    rounds = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        digest = hashlib.sha256(digest).digest()
        rounds += 1
    return rounds


def legacy_db_lookup(seconds: float) -> str:
    """A synchronous driver call made from async code: the loop waits too."""
    time.sleep(seconds)
    return "row"


async def handle_request(n: int) -> int:
    await asyncio.sleep(0.002)  # simulated network / database I/O
    return n * 2


async def serve(duration: float, served: list[int]) -> None:
    n = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        batch = [handle_request(n + i) for i in range(20)]
        await asyncio.gather(*batch)
        served[0] += len(batch)
        n += len(batch)
        await asyncio.sleep(0.01)


async def housekeeping(duration: float, block: float) -> None:
    """Every second, one of the two blocking mistakes, in turn."""
    started = time.monotonic()
    turn = 0
    while time.monotonic() - started + 1.0 < duration:
        await asyncio.sleep(0.5)
        if turn % 2 == 0:
            render_report(block)
        else:
            legacy_db_lookup(block * 0.7)
        turn += 1
        await asyncio.sleep(0.5)


async def main(duration: float, block: float) -> None:
    served = [0]
    await asyncio.gather(serve(duration, served), housekeeping(duration, block))
    print(f"blocking_app: served {served[0]} requests in {duration:g} s")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds to run (4)")
    parser.add_argument("--block", type=float, default=0.3,
                        help="seconds each blocking call takes (0.3)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.duration, args.block))
    else:
        asyncio.run(main(args.duration, args.block))


if __name__ == "__main__":
    cli()
