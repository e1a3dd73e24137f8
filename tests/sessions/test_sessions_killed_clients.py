"""The report's leak, reproduced for real: a gateway-like asyncio server on
127.0.0.1 and real client processes killed with SIGKILL in the middle of a
request. Every session they opened must be closed, by the three ways a
handler can own one: ``async with registry.session()`` around a body read,
``async with`` around an upstream call that a disconnect watcher cancels,
and ``bind_task`` on a worker task."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from loop_support import new_loop, new_registry

from loopwatch import SessionRegistry

CLIENT = r"""
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
conn = socket.create_connection(("127.0.0.1", port))
conn.sendall(("REQ %s\n" % mode).encode())
if mode == "body":
    conn.sendall(b"the first part of a body that never ends")
time.sleep(600)  # mid-request until SIGKILL
"""

MODES = ("body", "upstream", "task")
CLIENTS_PER_MODE = 3
TIMEOUT = 60.0


async def run_gateway(registry: SessionRegistry) -> dict:
    loop = asyncio.get_running_loop()
    mid_request: set[str] = set()
    all_mid_request = asyncio.Event()
    handlers: list[asyncio.Task] = []
    workers: list[asyncio.Task] = []
    opened: list[str] = []
    total = len(MODES) * CLIENTS_PER_MODE
    upstream = loop.create_future()  # an upstream call that never answers

    def reached_mid_request(sid: str) -> None:
        mid_request.add(sid)
        if len(mid_request) == total:
            all_mid_request.set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())
        port = writer.get_extra_info("peername")[1]
        request = (await reader.readline()).decode().split()
        mode, sid = request[1], f"client-{port}"
        opened.append(sid)
        try:
            if mode == "body":
                async with registry.session(sid, key=mode, state="processing") as s:
                    while True:
                        chunk = await reader.read(1024)
                        if not chunk:
                            raise ConnectionResetError("client went away mid-body")
                        s.progress()
                        reached_mid_request(sid)
            elif mode == "upstream":
                this = asyncio.current_task()

                async def on_disconnect():
                    await reader.read()  # EOF (or reset) when the client dies
                    this.cancel()

                watcher = asyncio.create_task(on_disconnect())
                try:
                    async with registry.session(sid, key=mode, state="waiting"):
                        reached_mid_request(sid)
                        await asyncio.shield(upstream)
                finally:
                    watcher.cancel()
            else:
                registry.open(sid, key=mode, state="processing")

                async def work():
                    await asyncio.shield(upstream)

                worker = asyncio.create_task(work())
                workers.append(worker)
                registry.bind_task(sid, worker)
                reached_mid_request(sid)
                try:
                    await reader.read()  # EOF: the client died
                finally:
                    worker.cancel()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [
        await asyncio.create_subprocess_exec(sys.executable, "-I", "-c", CLIENT, str(port), mode)
        for mode in MODES
        for _ in range(CLIENTS_PER_MODE)
    ]
    try:
        await asyncio.wait_for(all_mid_request.wait(), TIMEOUT)
        during = (len(registry), registry.counts())
        for proc in clients:
            proc.send_signal(signal.SIGKILL)
        codes = [await asyncio.wait_for(proc.wait(), TIMEOUT) for proc in clients]
        # wait for every handler and worker to finish: no sleeping, no polling
        await asyncio.wait_for(
            asyncio.gather(*handlers, *workers, return_exceptions=True), TIMEOUT
        )
        await asyncio.sleep(0)  # done-callbacks of the workers run on the next turn
    finally:
        for proc in clients:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        server.close()
        await server.wait_closed()
    return {"during": during, "codes": codes, "opened": opened, "handlers": len(handlers)}


def test_sigkilled_clients_leave_no_session_behind(impl, loop_kind):
    registry = new_registry(impl)
    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as runner:
        result = runner.run(run_gateway(registry))
    total = len(MODES) * CLIENTS_PER_MODE
    assert result["codes"] == [-signal.SIGKILL] * total
    assert result["handlers"] == total and len(set(result["opened"])) == total
    # mid-request, every client had its session open
    assert result["during"] == (
        total,
        {"idle": 0, "queued": 0, "processing": 2 * CLIENTS_PER_MODE, "waiting": CLIENTS_PER_MODE},
    )
    # after the kill: nothing left, not even in the wheel
    assert len(registry) == 0 and list(registry) == []
    assert registry.counts() == {"idle": 0, "queued": 0, "processing": 0, "waiting": 0}
    assert registry._filed() == 0
    for sid in result["opened"]:
        with pytest.raises(KeyError):
            registry.get(sid)
