"""Child of stall_latency.py: how soon the native monitor (10 ms
resolution, 100 ms threshold) reports a stall after the loop blocks, for
blocks entered four ways: from an idle loop woken by a timer, by a socket
(its event taken first thing), by call_soon_threadsafe from another thread,
and from a busy loop (a chain of call_soon callbacks). Each block is a
0.3 s time.sleep (off the CPU: the case an idle sampler can miss).

    python child_stall.py KIND ROUNDS

Prints one JSON object: {way: [[detected - entered, reported - entered,
the stall's length as reported when it ended], ...]} in seconds, "detected" being the sampler's time
(StallEvent.detected_at) and "reported" when on_stall was called.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time

import lw_bench

BLOCK = 0.3
WAYS = ("idle-timer", "idle-socket", "idle-threadsafe", "busy")


def main() -> None:
    logging.disable(logging.CRITICAL)
    kind, rounds = sys.argv[1], int(sys.argv[2])
    loop = lw_bench.new_loop(kind)
    reported: list[tuple[object, float]] = []
    lengths: dict[int, float] = {}
    ended = threading.Event()

    def on_stall(event) -> None:
        if event.kind == "started":
            reported.append((event, time.monotonic()))
        else:
            lengths[event.stall_id] = event.duration
            ended.set()

    from loopwatch._selector import load_implementation

    impl = load_implementation("native")
    monitor = impl.LoopMonitor(loop, resolution=0.01, stall_threshold=0.1, on_stall=on_stall)
    results: dict[str, list[list[float]]] = {way: [] for way in WAYS}
    r, w = socket.socketpair()
    entered: list[float] = []

    def block() -> None:
        entered.append(time.monotonic())
        time.sleep(BLOCK)

    def on_socket() -> None:
        r.recv(1)
        block()

    loop.add_reader(r.fileno(), on_socket)

    async def busy_then_block(after: float) -> None:
        done = loop.create_future()
        end = time.monotonic() + after

        def step() -> None:
            if time.monotonic() < end:
                loop.call_soon(step)
            else:
                block()
                done.set_result(None)

        loop.call_soon(step)
        await done

    async def run() -> None:
        monitor.start()
        await asyncio.sleep(0.3)
        for i in range(rounds):
            for way in WAYS:
                idle = 0.2 + (i % 7) * 0.013  # wake-ups at varied phases of the sampler's sleep
                ended.clear()
                count = len(reported)
                if way == "idle-timer":
                    loop.call_later(idle, block)
                    await asyncio.sleep(idle + BLOCK + 0.1)
                elif way == "idle-socket":
                    threading.Timer(idle, w.send, args=(b"x",)).start()
                    await asyncio.sleep(idle + BLOCK + 0.1)
                elif way == "idle-threadsafe":
                    threading.Timer(idle, loop.call_soon_threadsafe, args=(block,)).start()
                    await asyncio.sleep(idle + BLOCK + 0.1)
                else:
                    await busy_then_block(idle)
                    await asyncio.sleep(0.1)
                await loop.run_in_executor(None, ended.wait, 5)
                ours = [(e, at) for e, at in reported[count:] if e.detected_at >= entered[-1]]
                if ours:
                    event, at = ours[0]
                    results[way].append([event.detected_at - entered[-1], at - entered[-1],
                                         lengths.get(event.stall_id, 0.0)])
                else:
                    results[way].append([float("inf"), float("inf"), 0.0])
                await asyncio.sleep(0.2)
        monitor.stop()

    loop.run_until_complete(run())
    loop.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
