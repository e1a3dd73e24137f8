"""A small but real asyncio gateway that embeds loopwatch: the one
``loopwatch demo`` drives (and ``examples/gateway/server.py`` runs).

    python -m loopwatch.cli.demo_gateway --port 0 --store DIR [options]
    python examples/gateway/server.py --port 0 --store DIR [options]

It prints one line on stdout when it listens::

    listening host=127.0.0.1 port=41235 pid=12345 store=/tmp/store status=/tmp/loopwatch-1000/12345.sock

then logs on stderr (or ``--log FILE``) one JSON object a line: its own
events (logger ``gateway``), loopwatch's stuck reports and evictions
(``loopwatch.sessions``, with the event's fields), stalls
(``loopwatch.loop``) and liveness lines (``loopwatch.liveness``, with the
report's fields).

Protocol: TCP on 127.0.0.1, one JSON object a line each way. A connection
is one client and holds at most one session; the session's lifetime is the
connection's (``registry.session(...)`` scope and ``bind_task``), so a client
that is killed has its session closed when its connection drops. Requests
(``op``):

    open   {"key": K}             open a session (state idle), write its store file
    work   {"seconds": S, "heartbeat": H}
                                  state processing, a progress heartbeat (and a
                                  {"progress": n} line) every H s, then idle
    hang                          state processing, then wait forever on a future
                                  nobody completes, without watching the connection:
                                  the lost cleanup that leaves a ghost behind
    close                         close the session, remove its store file
    block  {"seconds": S, "kind": "busy"|"sleep"}
                                  block the event loop for S s in Python code
    ping                          {"ok": true}
    stats                         sessions, checks made and their CPU time

Every reply has ``"ok"``; errors are ``{"ok": false, "error": ...}``.
The session store is a folder with one file per session (``<id>.session``);
the registry's ``store`` is "that file exists". SIGTERM or SIGINT close the
server, close every session and log ``gateway stopped`` with the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from typing import Any, Sequence

import loopwatch

__all__ = ["JsonFormatter", "busy_block", "main", "sleep_block"]

log = logging.getLogger("gateway")

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def _event_fields(event: Any) -> dict[str, Any]:
    """A loopwatch event (SessionEvent or StallEvent) as JSON fields."""
    if isinstance(event, loopwatch.SessionEvent):
        return {
            "kind": event.kind,
            "session": str(event.session_id),
            "key": event.session.key,
            "state": event.session.state,
            "reason": event.reason,
            "age_s": round(event.age, 3),
            "reports": event.reports,
            "next_report_in_s": None if event.next_report_at is None
            else round(event.next_report_at - event.at, 3),
        }
    if isinstance(event, loopwatch.StallEvent):
        frame = event.blocking_frame
        return {
            "kind": event.kind,
            "stall_id": event.stall_id,
            "duration_s": round(event.duration, 3),
            "blocking_function": frame.function if frame else None,
            "blocking_frame": str(frame) if frame else None,
            "stack_error": event.stack_error,
        }
    return {"value": str(event)}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (loopwatch.SessionEvent, loopwatch.StallEvent)):
        return _event_fields(value)
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (``t``, epoch seconds), level, logger,
    message, every ``extra`` field of the record, and the fields of a
    loopwatch event passed as the message's argument (the registry logs
    ``"%s", event``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = _jsonable(value)
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], loopwatch.SessionEvent):
            out["event"] = _event_fields(args[0])
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


# -- the two ways the report's gateway blocked its loop -------------------------
def busy_block(seconds: float) -> int:
    """CPU-bound Python right on the event loop (the report's tight loop)."""
    deadline = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    return spins


def sleep_block(seconds: float) -> int:
    """A synchronous wait on the event loop (a sync driver, a sleep)."""
    time.sleep(seconds)
    return 0


BLOCKS = {"busy": busy_block, "sleep": sleep_block}


class _Lost(Exception):
    """The client's connection dropped."""


class Gateway:
    """The server: sessions in a :class:`loopwatch.SessionRegistry`, store
    files in a folder, one task per connection."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.store_dir = os.path.abspath(opts.store)
        os.makedirs(self.store_dir, exist_ok=True)
        self.registry = loopwatch.SessionRegistry(
            stuck_after=opts.stuck_after,
            report_backoff=opts.report_backoff,
            max_report_interval=opts.max_report_interval,
            evict_after=opts.evict_after,
            store=self.in_store,
            on_evict=self.on_evict,
        )
        self.connections: set[asyncio.Task[None]] = set()
        self.diag: loopwatch.Diagnostics | None = None
        self.stopping = False

    # -- the store ------------------------------------------------------------
    def store_path(self, sid: str) -> str:
        return os.path.join(self.store_dir, f"{sid}.session")

    def in_store(self, sid: Any) -> bool:
        return os.path.exists(self.store_path(str(sid)))

    def on_evict(self, view: loopwatch.SessionView) -> None:
        """loopwatch evicted a session: end the handler that still holds it
        (the ghost's wedged request), which closes its connection."""
        log.warning("session evicted by loopwatch; cancelling its handler",
                    extra={"session": str(view.session_id), "key": view.key})
        task = view.task
        if task is not None and not task.done():
            task._gateway_evicted = True
            task.cancel()

    # -- one connection ---------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        conn = _Connection(self, reader, writer, task)
        try:
            await conn.serve()
        except asyncio.CancelledError:
            pass  # evicted or shutting down: this task ends here
        finally:
            conn.finish()
            self.connections.discard(task)

    def stats(self) -> dict[str, Any]:
        diag = self.diag
        return {
            "sessions": len(self.registry),
            "counts": self.registry.counts(),
            "checks": diag.checks if diag else 0,
            "check_cpu_s": round(diag.check_cpu_seconds, 6) if diag else 0.0,
            "stall_aware_ages": hasattr(self.registry, "set_stall_clock"),
            "implementation": loopwatch.IMPLEMENTATION,
            "pid": os.getpid(),
        }


class _Connection:
    def __init__(self, gw: Gateway, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        self.gw = gw
        self.reader = reader
        self.writer = writer
        self.task = task
        self.scope: Any = None
        self.sid: str | None = None
        self.gone = asyncio.Event()
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.reading = asyncio.get_running_loop().create_task(self._read())
        self.peer = str(writer.get_extra_info("peername"))

    async def _read(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                await self.requests.put(line)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self.gone.set()
            self.requests.put_nowait(None)

    def send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set() or self.writer.is_closing():
            return
        try:
            self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except (ConnectionError, OSError, RuntimeError):
            pass

    async def serve(self) -> None:
        while True:
            line = await self.requests.get()
            if line is None:
                return  # the client went away
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a request is a JSON object")
                op = req.get("op")
                handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
                if handler is None:
                    raise ValueError(f"unknown op {op!r}")
                reply = await handler(req)
            except _Lost:
                return
            except (ValueError, TypeError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc)}
            self.send(reply)
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                return

    # -- requests -------------------------------------------------------------
    def _need_session(self) -> str:
        if self.scope is None or not self.scope.is_open:
            raise ValueError("no open session on this connection (send open first)")
        assert self.sid is not None
        return self.sid

    async def op_open(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.scope is not None and self.scope.is_open:
            raise ValueError(f"this connection already holds session {self.sid}")
        sid = str(req.get("session") or uuid.uuid4())
        key = req.get("key")
        registry = self.gw.registry
        scope = registry.session(sid, key=key, state="idle")
        scope.__enter__()  # closed in finish(), however the connection ends
        self.scope, self.sid = scope, sid
        registry.bind_task(sid, self.task)
        with open(self.gw.store_path(sid), "w") as f:
            json.dump({"session": sid, "key": key, "opened": time.time(), "peer": self.peer}, f)
        log.info("session opened", extra={"session": sid, "key": key})
        return {"ok": True, "session": sid, "key": key}

    async def op_work(self, req: dict[str, Any]) -> dict[str, Any]:
        sid = self._need_session()
        seconds = float(req.get("seconds", 1.0))
        heartbeat = float(req.get("heartbeat", 0.25))
        if not (seconds >= 0 and heartbeat > 0):
            raise ValueError("seconds must be >= 0 and heartbeat > 0")
        loop = asyncio.get_running_loop()
        self.scope.set_state("processing")
        log.info("work started", extra={"session": sid, "seconds": seconds, "heartbeat": heartbeat})
        deadline = loop.time() + seconds
        steps = 0
        gone = loop.create_task(self.gone.wait())
        try:
            while (left := deadline - loop.time()) > 0:
                done, _ = await asyncio.wait({gone}, timeout=min(heartbeat, left))
                if done:
                    log.info("work interrupted: the client went away", extra={"session": sid})
                    raise _Lost()
                steps += 1
                self.scope.progress()  # the heartbeat: O(1) in loopwatch
                self.send({"progress": steps, "session": sid})
        finally:
            gone.cancel()
        self.scope.set_state("idle")
        log.info("work done", extra={"session": sid, "steps": steps})
        return {"ok": True, "done": True, "session": sid, "steps": steps}

    async def op_hang(self, req: dict[str, Any]) -> dict[str, Any]:
        sid = self._need_session()
        self.scope.set_state("processing")
        log.info("request hangs: awaiting a future nobody completes", extra={"session": sid})
        self.send({"ok": True, "hanging": True, "session": sid})
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        # The bug being simulated: this request no longer watches its
        # connection, so the client's death is never noticed, and nothing
        # will ever complete this future. Only loopwatch gets it out.
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    async def op_close(self, req: dict[str, Any]) -> dict[str, Any]:
        sid = self._need_session()
        self._close("client_close")
        return {"ok": True, "closed": True, "session": sid}

    async def op_block(self, req: dict[str, Any]) -> dict[str, Any]:
        seconds = float(req.get("seconds", 1.0))
        kind = req.get("kind", "busy")
        if kind not in BLOCKS or not 0 <= seconds <= 600:
            raise ValueError("block needs kind busy|sleep and 0 <= seconds <= 600")
        log.warning("block started: the event loop is blocked in Python code",
                    extra={"seconds": seconds, "kind": kind, "function": BLOCKS[kind].__name__})
        start = time.perf_counter()
        BLOCKS[kind](seconds)
        took = time.perf_counter() - start
        log.warning("block ended", extra={"seconds": round(took, 3), "kind": kind})
        return {"ok": True, "blocked_s": round(took, 3), "kind": kind}

    async def op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "pong": True}

    async def op_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.gw.stats()}

    # -- the end of the connection --------------------------------------------
    def _close(self, reason: str) -> None:
        scope, sid = self.scope, self.sid
        if scope is None or sid is None:
            return
        was_open = scope.is_open
        scope.__exit__(None, None, None)
        try:
            os.unlink(self.gw.store_path(sid))
        except FileNotFoundError:
            pass
        self.scope = self.sid = None
        if was_open:
            log.info("session closed", extra={"session": sid, "reason": reason})

    def finish(self) -> None:
        if getattr(self.task, "_gateway_evicted", False):
            reason = "evicted"
        elif self.gone.is_set():
            reason = "connection_lost"
        elif self.gw.stopping:
            reason = "shutdown"
        else:
            reason = "connection_closed"
        if reason == "evicted" and self.sid is not None:
            log.info("evicted session's handler ended, connection closed",
                     extra={"session": self.sid})
        self._close(reason)
        self.reading.cancel()
        try:
            self.writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass


# -- the command ------------------------------------------------------------------
def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demo_gateway",
        description="An asyncio JSON-lines gateway that embeds loopwatch.Diagnostics.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--store", required=True, help="session store folder (one file per session)")
    p.add_argument("--log", help="log file (JSON lines); default stderr")
    p.add_argument("--stuck-after", type=_seconds, default=120.0)
    p.add_argument("--report-backoff", type=float, default=2.0)
    p.add_argument("--max-report-interval", type=_seconds, default=1800.0)
    p.add_argument("--evict-after", type=_seconds, default=600.0)
    p.add_argument("--check-interval", type=_seconds, default=1.0)
    p.add_argument("--liveness-interval", type=_seconds, default=30.0)
    p.add_argument("--liveness-p99-ms", type=float, default=1000.0)
    p.add_argument("--liveness-max-ms", type=float, default=1000.0)
    p.add_argument("--liveness-cooldown", type=float, default=120.0)
    p.add_argument("--resolution", type=_seconds, default=0.01)
    p.add_argument("--stall-threshold", type=_seconds, default=0.1)
    p.add_argument("--log-level", default="INFO")
    return p


def _setup_logging(opts: argparse.Namespace) -> logging.Handler:
    handler: logging.Handler
    if opts.log:
        handler = logging.FileHandler(opts.log)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(opts.log_level.upper())
    # Liveness lines are DEBUG unless a threshold is crossed: keep them all.
    logging.getLogger("loopwatch.liveness").setLevel(logging.DEBUG)
    return handler


async def serve(opts: argparse.Namespace) -> int:
    gw = Gateway(opts)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    thresholds = loopwatch.LivenessThresholds(
        delay_p99_ms=opts.liveness_p99_ms, delay_max_ms=opts.liveness_max_ms,
        cooldown=opts.liveness_cooldown)
    async with loopwatch.Diagnostics(
            gw.registry, resolution=opts.resolution, stall_threshold=opts.stall_threshold,
            liveness_interval=opts.liveness_interval, thresholds=thresholds,
            check_interval=opts.check_interval, name="gateway") as diag:
        gw.diag = diag
        server = await asyncio.start_server(gw.handle, opts.host, opts.port)
        port = server.sockets[0].getsockname()[1]
        log.info("gateway listening", extra={
            "port": port, "store": gw.store_dir, "stuck_after": opts.stuck_after,
            "evict_after": opts.evict_after, "report_backoff": opts.report_backoff,
            "max_report_interval": opts.max_report_interval,
            "check_interval": opts.check_interval, "liveness_interval": opts.liveness_interval,
            "stall_aware_ages": hasattr(gw.registry, "set_stall_clock"),
            "implementation": loopwatch.IMPLEMENTATION})
        print(f"listening host={opts.host} port={port} pid={os.getpid()} store={gw.store_dir} "
              f"status={diag.status_path}", flush=True)
        try:
            await stop.wait()
        finally:
            gw.stopping = True
            server.close()
            for task in list(gw.connections):
                task.cancel()
            if gw.connections:
                await asyncio.gather(*gw.connections, return_exceptions=True)
            await server.wait_closed()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    stats = gw.stats()
    log.info("gateway stopped", extra=stats)
    return 0 if stats["sessions"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    handler = _setup_logging(opts)
    try:
        return asyncio.run(serve(opts))
    finally:
        handler.flush()


if __name__ == "__main__":
    sys.exit(main())
