"""The client of the demo gateway (:mod:`loopwatch.cli.demo_gateway`):
one process, one connection, at most one session. Standard library only, so
it starts fast; ``loopwatch demo`` runs it as separate processes and kills
some of them, as the report's CLI calls were killed.

    python examples/gateway/client.py --port P ping
    python examples/gateway/client.py --port P open [--key K] [--hold S]
    python examples/gateway/client.py --port P work [--seconds S] [--heartbeat H] [--key K]
    python examples/gateway/client.py --port P hang [--key K]
    python examples/gateway/client.py --port P block [--seconds S] [--kind busy|sleep]
    python examples/gateway/client.py --port P stats

Each reply is printed on stdout as one JSON line, with ``event`` naming
what happened (``opened``, ``progress``, ``done``, ``hanging``, ``closed``,
``reply``) and ``t`` (epoch seconds) and, for single requests, ``ms`` (the
round trip). ``open`` holds the session ``--hold`` seconds (default: until
killed or interrupted), then closes it. ``work`` opens a session, works,
closes. ``hang`` opens a session and starts a request that never finishes:
it waits until it is killed. Exit status 0, or 1 on an error reply or a
dropped connection.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from typing import Any, Sequence

__all__ = ["Client", "main"]


class ClientError(RuntimeError):
    pass


class Client:
    """A JSON-lines connection to the gateway."""

    def __init__(self, host: str, port: int, timeout: float | None = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, op: str, **fields: Any) -> None:
        self.sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ClientError("the gateway closed the connection")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.send(op, **fields)
        reply = self.receive()
        if not reply.get("ok"):
            raise ClientError(reply.get("error", "error"))
        return reply

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.time(), 6), **fields}), flush=True)


def _timed(client: Client, op: str, **fields: Any) -> None:
    start = time.perf_counter()
    reply = client.request(op, **fields)
    emit("reply", op=op, ms=round((time.perf_counter() - start) * 1000, 3), reply=reply)


def run(opts: argparse.Namespace) -> int:
    client = Client(opts.host, opts.port, timeout=None if opts.command in ("hang", "open")
                    else opts.timeout)
    try:
        if opts.command in ("ping", "stats"):
            _timed(client, opts.command)
        elif opts.command == "block":
            _timed(client, "block", seconds=opts.seconds, kind=opts.kind)
        elif opts.command == "open":
            reply = client.request("open", key=opts.key)
            emit("opened", session=reply["session"], key=opts.key)
            if opts.hold is None:
                signal.pause() if hasattr(signal, "pause") else time.sleep(1e9)
            else:
                time.sleep(opts.hold)
            client.request("close")
            emit("closed", session=reply["session"])
        elif opts.command == "work":
            reply = client.request("open", key=opts.key)
            sid = reply["session"]
            emit("opened", session=sid, key=opts.key)
            client.send("work", seconds=opts.seconds, heartbeat=opts.heartbeat)
            while True:
                msg = client.receive()
                if "progress" in msg:
                    emit("progress", session=sid, step=msg["progress"])
                    continue
                if not msg.get("ok"):
                    raise ClientError(msg.get("error", "error"))
                emit("done", session=sid, steps=msg.get("steps"))
                break
            client.request("close")
            emit("closed", session=sid)
        elif opts.command == "hang":
            reply = client.request("open", key=opts.key)
            sid = reply["session"]
            emit("opened", session=sid, key=opts.key)
            client.request("hang")
            emit("hanging", session=sid)
            dropped = client.file.readline()  # nothing comes until the gateway drops us
            emit("dropped", session=sid, got=dropped.decode(errors="replace").strip())
            return 1
    except (ClientError, OSError, ValueError) as exc:
        emit("error", error=str(exc))
        return 1
    finally:
        client.close()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="client", description="Client of the demo gateway.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=120.0,
                   help="socket timeout in seconds (not for hang and open)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ping", help="one round trip")
    sub.add_parser("stats", help="the gateway's sessions and loopwatch check counts")
    o = sub.add_parser("open", help="open a session and hold it")
    o.add_argument("--key", default="cli:open")
    o.add_argument("--hold", type=float, default=None, help="seconds (default: until killed)")
    w = sub.add_parser("work", help="open a session, work on it, close it")
    w.add_argument("--key", default="cli:work")
    w.add_argument("--seconds", type=float, default=1.0)
    w.add_argument("--heartbeat", type=float, default=0.25)
    h = sub.add_parser("hang", help="open a session and start a request that never finishes")
    h.add_argument("--key", default="agent:main:main")
    b = sub.add_parser("block", help="make the gateway block its event loop")
    b.add_argument("--seconds", type=float, default=3.0)
    b.add_argument("--kind", choices=("busy", "sleep"), default="busy")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    try:
        return run(opts)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
