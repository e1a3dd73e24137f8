"""A bounded HTTP load generator for http_callgrind.py, in its own process:
CONNECTIONS keep-alive connections, each sending its next GET / as soon
as the last answer came (the server never waits for work: saturation),
REQUESTS in all; before them WARMUP requests, then GET /__start; after
them GET /__stop and GET /__quit. Prints the measured requests' wall time.

    python http_load.py PORT REQUESTS [--connections 8] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, path: str) -> bytes:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{path}: {head[:40]!r}")
        return body


async def connect(port: int) -> Connection:
    for _ in range(600):
        try:
            return Connection(*await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing accepts on port {port}")


async def run(port: int, requests: int, connections: int, warmup: int) -> float:
    conns = [await connect(port) for _ in range(connections)]

    async def drive(conn: Connection, left: list[int]) -> None:
        while left[0] > 0:
            left[0] -= 1
            await conn.get("/")

    await asyncio.gather(*(drive(c, [warmup // connections]) for c in conns))
    await conns[0].get("/__start")
    start = time.perf_counter()
    shared = [requests]
    await asyncio.gather(*(drive(c, shared) for c in conns))
    elapsed = time.perf_counter() - start
    await conns[0].get("/__stop")
    try:
        await conns[0].get("/__quit")
    except (OSError, asyncio.IncompleteReadError, RuntimeError):
        pass
    for c in conns:
        c.writer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("requests", type=int)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    elapsed = asyncio.run(run(args.port, args.requests, args.connections, args.warmup))
    print(f"elapsed {elapsed:.6f}")


if __name__ == "__main__":
    main()
