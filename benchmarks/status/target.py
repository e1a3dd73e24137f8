"""A process for the status benchmarks: an event loop in one of these modes

    idle        an idle loop under Diagnostics
    saturated   a loop kept 100 % busy by a call_soon chain (no stall)
    stall-py    a loop blocked in Python code
    stall-c     a loop blocked in a C call that holds the GIL
    bare        an idle loop, no loopwatch at all (CPU baseline)
    static      no loop: a thread answering the socket with a fixed document
                (the latency baseline: connect + read, nothing computed)

It prints "READY" once set, then runs until stdin closes or SECONDS pass.
"""

import asyncio
import ctypes
import json
import os
import socket
import sys
import threading
import time


CLOSED = threading.Event()


def _wait_stdin(loop, done):
    def wait():
        sys.stdin.read()
        CLOSED.set()
        loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=wait, daemon=True).start()


async def run(mode: str, seconds: float) -> None:
    import loopwatch

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    _wait_stdin(loop, done)
    if mode == "bare":
        print("READY", flush=True)
        await asyncio.wait_for(done, seconds)
        return
    async with loopwatch.Diagnostics(loopwatch.SessionRegistry(), liveness_interval=30.0):
        await asyncio.sleep(0.2)
        print("READY", flush=True)
        if mode == "saturated":
            def spin():
                if not done.done():
                    loop.call_soon(spin)
            spin()
        elif mode == "stall-py":
            end = time.monotonic() + seconds
            while time.monotonic() < end and not CLOSED.is_set():
                pass
        elif mode == "stall-c":
            ctypes.PyDLL(None).sleep(int(seconds))
        try:
            await asyncio.wait_for(done, seconds)
        except asyncio.TimeoutError:
            pass


def static(path: str, seconds: float) -> None:
    doc = json.dumps({"pid": os.getpid(), "static": True, "pad": "x" * 2000}).encode()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(128)
    print("READY", flush=True)

    def serve():
        while True:
            client, _ = sock.accept()
            client.sendall(doc)
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    sys.stdin.read()
    os.unlink(path)


if __name__ == "__main__":
    mode, seconds = sys.argv[1], float(sys.argv[2])
    if mode == "static":
        static(sys.argv[3], seconds)
    else:
        asyncio.run(run(mode, seconds))
