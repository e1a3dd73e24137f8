"""Pure-Python twin of the native status core: the same protocol, served by
a Python thread.

It answers while the loop is blocked in Python code (the server thread gets
the GIL at each switch interval), but not while the loop thread holds the
GIL inside native code: only the native core can, and only it writes the
watchdog's stall lines (``set_stall_lines`` is accepted and does nothing).
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from typing import Any

from . import document

__all__ = ["StatusCore"]

_MAX_BATCH = 1024
_WRITE_TIMEOUT = 0.2


class StatusCore:
    """A Python thread answering on a listening socket (see the native
    core's documentation in ext/status/lw_status.h: same protocol)."""

    served_by = "python"

    @staticmethod
    def current_thread_state() -> int:
        """No thread state is needed by the twin."""
        return 0

    @staticmethod
    def stack_dumper_available() -> bool:
        """The twin never reads stacks without the GIL."""
        return False

    def __init__(self, listen_fd: int, scratch_fd: int, fresh_wait: float) -> None:
        self._sock = socket.socket(fileno=listen_fd)
        self._sock.setblocking(False)
        if scratch_fd >= 0:
            os.close(scratch_fd)
        self._fresh_wait = fresh_wait
        self._cond = threading.Condition()
        self._published: bytes | None = None
        self._published_ns = 0
        self._requested = self._taken = self._answered = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._loops: dict[int, tuple[Any, str]] = {}
        self._sessions: dict[int, Any] = {}  # registry id -> registry
        self._served = 0

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                raise OSError("status server already running")
            if self._sock.fileno() < 0:
                raise OSError("status socket closed")
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="loopwatch-status",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        self.stop()
        self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def after_fork_child(self) -> None:
        self._cond = threading.Condition()
        self._thread = None
        self._stopping = True
        self._loops.clear()
        try:
            self._sock.detach()
        except OSError:
            pass

    def set_stall_lines(self, fd: int, grace: float) -> None:
        """Python cannot report a stall while the GIL is held elsewhere."""

    def wait_request(self, timeout: float | None) -> int:
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if self._stopping:
                    return -1
                if self._requested != self._taken:
                    self._taken = self._requested
                    return 1
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return 0
                self._cond.wait(left)

    def publish(self, document: bytes) -> None:
        if not isinstance(document, bytes):
            raise TypeError("document must be bytes")
        if len(document) < 2 or not document.startswith(b"{"):
            raise ValueError("a status document must be a JSON object")
        with self._cond:
            self._published = document
            self._published_ns = time.monotonic_ns()
            self._answered = self._taken
            self._cond.notify_all()

    def add_loop(self, loop_id: int, core: Any, thread_state: int, name: str,
                 line_prefix: str = "") -> None:
        """Serve a monitor's live figures (the twin writes no watchdog
        lines, so line_prefix is unused)."""
        if loop_id in self._loops:
            raise OSError(f"loop {loop_id} already registered")
        self._loops[loop_id] = (core, name)

    def remove_loop(self, loop_id: int) -> None:
        self._loops.pop(loop_id, None)

    def add_sessions(self, registry_id: int, registry: Any) -> None:
        """Serve a registry's counts and stuck sessions in the live part
        (read through its Python API, which needs the GIL, as everything
        the twin's thread does)."""
        if registry_id in self._sessions:
            raise OSError(f"registry {registry_id} already registered")
        self._sessions[registry_id] = registry

    def remove_sessions(self, registry_id: int) -> None:
        self._sessions.pop(registry_id, None)

    def ack_stall(self, loop_id: int, stall_id: int) -> None:
        pass

    @property
    def served(self) -> int:
        return self._served

    @property
    def stall_lines(self) -> int:
        return 0

    # -- the server thread --------------------------------------------------
    def _live(self, fresh: bool) -> dict[str, Any]:
        now = time.monotonic_ns()
        loops = []
        for loop_id, (core, name) in list(self._loops.items()):
            sampling, loop_running, in_stall, stall_id, started, heartbeat, samples = core.read_live()
            entry: dict[str, Any] = {
                "id": loop_id, "name": name, "sampling": sampling, "loop_running": loop_running,
                "heartbeat_age_s": (now - heartbeat) / 1e9, "samples": samples,
                "stalled": in_stall,
            }
            if in_stall:
                entry.update(stall_id=stall_id, stall_so_far_s=(now - started) / 1e9,
                             stack_text=None, stack_error=None)
            loops.append(entry)
        live: dict[str, Any] = {"python_answered": fresh, "loops": loops}
        if not fresh and self._sessions:
            live["sessions"] = [{"id": registry_id, "table": document.sessions_live(registry)}
                                for registry_id, registry in list(self._sessions.items())]
        return live

    def _document(self, fresh: bool) -> bytes:
        now = time.monotonic_ns()
        head = {
            "served_by": "python",
            "published_age_s": None if self._published is None
            else (now - self._published_ns) / 1e9,
            "live": self._live(fresh),
        }
        text = json.dumps(head, separators=(",", ":")).encode()
        if self._published is None:
            return text[:-1] + b',"pid":%d}\n' % os.getpid()
        return text[:-1] + b"," + self._published[1:] + b"\n"

    def _answer(self, clients: list[socket.socket]) -> None:
        with self._cond:
            self._requested += 1
            target = self._requested
            self._cond.notify_all()
            deadline = time.monotonic() + self._fresh_wait
            while self._answered < target and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            fresh = self._answered >= target
            document = self._document(fresh)
        for client in clients:
            try:
                client.settimeout(_WRITE_TIMEOUT)
                client.sendall(document)
                self._served += 1
                # Unread input would reset the connection on close: drop it.
                client.setblocking(False)
                for _ in range(64):
                    if not client.recv(4096):
                        break
            except OSError:
                pass
            finally:
                client.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                readable, _, _ = select.select([self._sock, self._wake_r], [], [])  # type: ignore[type-var]  # a socket and an fd
            except (OSError, ValueError):
                return
            if self._wake_r in readable:
                try:
                    while os.read(self._wake_r, 64):
                        pass
                except OSError:
                    pass
            if self._sock in readable:
                clients: list[socket.socket] = []
                while len(clients) < _MAX_BATCH:
                    try:
                        client, _ = self._sock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    clients.append(client)
                if clients:
                    self._answer(clients)
