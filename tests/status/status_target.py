"""A process to ask for status: a loop under loopwatch.Diagnostics that
blocks on command. Run by the status tests as a subprocess:

    python status_target.py LOOP_KIND BLOCK SECONDS

LOOP_KIND: asyncio | uvloop. BLOCK: python (busy Python code), native (a C
call that holds the GIL: libc's sleep through ctypes.PyDLL), none (idle).
Prints "READY <pid> <socket path>" once status is served, "BLOCKING"
right before the block and "UNBLOCKED" after it; then exits once stdin
closes (or after 60 s).
"""

import asyncio
import ctypes
import sys
import threading
import time

import loopwatch


def block_in_python(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def block_in_native(seconds: float) -> None:
    # PyDLL calls keep the GIL: no Python code anywhere in the process can
    # run until libc's sleep returns.
    ctypes.PyDLL(None).sleep(int(seconds))


async def main(block: str, seconds: float) -> None:
    registry = loopwatch.SessionRegistry(stuck_after=60.0)
    for i in range(3):
        registry.open(f"session-{i}", key=f"user-{i}", state="processing")
    async with loopwatch.Diagnostics(registry, liveness_interval=0.5, check_interval=0.2) as diag:
        await asyncio.sleep(0.3)
        print("READY", diag.status_path, flush=True)
        if block != "none":
            await asyncio.sleep(0.2)
            print("BLOCKING", flush=True)
            if block == "python":
                block_in_python(seconds)
            else:
                block_in_native(seconds)
            print("UNBLOCKED", flush=True)
        done = asyncio.get_running_loop().create_future()
        threading.Thread(target=lambda: (sys.stdin.read(), done.get_loop().call_soon_threadsafe(
            done.set_result, None)), daemon=True).start()
        await asyncio.wait_for(done, 60)


if __name__ == "__main__":
    kind, block, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if kind == "uvloop":
        import uvloop

        uvloop.run(main(block, seconds))
    else:
        asyncio.run(main(block, seconds))
