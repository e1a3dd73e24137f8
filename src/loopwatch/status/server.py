"""The status server of one process: a Unix socket at
:func:`loopwatch.status_socket_path`, answered by a thread that does not
need the event loop (the native core: not even the GIL).

Two threads: the *core*'s server thread accepts connections and writes the
document; a Python *publisher* thread builds the document's Python part
when a client asks for it (the core wakes it) and hands it to the core.
While no Python code can run (the loop thread holds the GIL in native
code), the native core serves the last publication, with its age, plus the
samplers' live figures read from native memory.

One server per process (:func:`acquire` / :func:`release`): Diagnostics
objects and ``loopwatch run`` share it; sources (monitors, registries, the
liveness line) are added and removed as they come and go.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time
from typing import Any

from .. import _forking
from .._selector import IMPLEMENTATION, StatusCore, load_implementation
from . import document
from .paths import ensure_status_folder, status_socket_path

__all__ = ["StatusServer", "acquire", "release", "current_server"]

logger = logging.getLogger("loopwatch.status")

#: How long a client's request waits for a fresh document from Python
#: before the native core serves the last one (while the GIL is held).
FRESH_WAIT = 0.05
#: A stall not reported by Python this long after it passed the threshold
#: gets a line on stderr from the native watchdog.
STALL_LINE_GRACE = 0.1
_LISTEN_BACKLOG = 512


def _core_class(implementation: str | None) -> Any:
    if implementation is None:
        return StatusCore
    return load_implementation(implementation).StatusCore


class StatusServer:
    """Serves this process's status socket.

    Args:
        path: the socket path (default :func:`status_socket_path`).
        implementation: ``"native"`` or ``"python"`` core (default: the one
            loopwatch uses).
        stall_lines: let the native watchdog write a line on stderr for a
            stall Python cannot report while it goes on.
        listen: False for the watchdog alone: no socket, no document, only
            the stall lines (``loopwatch run --no-status``,
            ``Diagnostics(status=False)``). The native core only: with the
            twin, whose thread needs the GIL the stall holds, start() does
            nothing.

    Raises (from :meth:`start`):
        loopwatch.status.paths.StatusFolderError: the socket folder is
            unsafe (not the user's, open to others) or cannot be made.
        OSError: the socket cannot be bound.
    """

    def __init__(self, path: str | None = None, *, implementation: str | None = None,
                 stall_lines: bool = False, listen: bool = True) -> None:
        self._path = path
        self._listen = listen
        self._core_class = _core_class(implementation)
        self._stall_lines = stall_lines
        self._core: Any = None
        self._publisher: threading.Thread | None = None
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._loops: dict[int, tuple[Any, str]] = {}
        self._line_prefixes: dict[int, str] = {}
        self._registries: list[Any] = []
        self._liveness: dict[str, Any] | None = None
        self._liveness_at: float | None = None
        self._started_monotonic = time.monotonic()
        self._owner_pid = 0
        self._fork_paused = False
        self.published = 0

    @property
    def path(self) -> str | None:
        """The socket's path once started."""
        return self._path if self._core is not None else None

    @property
    def served_by(self) -> str:
        """``"native"`` or ``"python"``: which core answers."""
        served_by: str = self._core_class.served_by
        return served_by

    @property
    def running(self) -> bool:
        """Whether the socket is served (between start and stop)."""
        return self._core is not None

    # -- start / stop -------------------------------------------------------
    def start(self) -> StatusServer:
        """Bind the socket (0600, in the user's 0700 status folder) and
        start answering; returns self. Starting a running server does
        nothing. Raises StatusFolderError for an unsafe folder, OSError
        when the socket cannot be bound."""
        with self._lock:
            if self._core is not None:
                return self
            if not self._listen:
                return self._start_watchdog()
            if self._path is None:
                ensure_status_folder()
                self._path = status_socket_path()
            folder = os.path.dirname(self._path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                try:
                    os.unlink(self._path)  # a stale socket of an earlier process with our pid
                except FileNotFoundError:
                    pass
                sock.bind(self._path)
                os.chmod(self._path, 0o600)
                sock.listen(_LISTEN_BACKLOG)
                sock.setblocking(False)
                scratch_fd, scratch = tempfile.mkstemp(prefix=".stack-", dir=folder)
                os.unlink(scratch)
            except BaseException:
                sock.close()
                self._unlink()
                raise
            self._owner_pid = os.getpid()
            try:
                core = self._core_class(sock.detach(), scratch_fd, FRESH_WAIT)
                if self._stall_lines:
                    core.set_stall_lines(2, STALL_LINE_GRACE)
                core.start()
            except BaseException:
                self._unlink()
                raise
            self._core = core
            for loop_id, (monitor, name) in self._loops.items():
                self._attach_live(loop_id, monitor, name)
            for registry in self._registries:
                self._attach_sessions(registry)
            self._publish(core)  # a first document, for clients that come while Python cannot run
            self._publisher = threading.Thread(target=self._publish_loop, args=(core,),
                                               name="loopwatch-status-publisher", daemon=True)
            self._publisher.start()
            _SERVERS.add(self)
            return self

    def _start_watchdog(self) -> StatusServer:
        if self.served_by != "native":
            return self
        self._owner_pid = os.getpid()
        core = self._core_class(-1, -1, FRESH_WAIT)
        core.set_stall_lines(2, STALL_LINE_GRACE)
        core.start()
        self._core = core
        for loop_id, (monitor, name) in self._loops.items():
            self._attach_live(loop_id, monitor, name)
        _SERVERS.add(self)
        return self

    def stop(self) -> None:
        """Stop answering, join the threads and remove the socket."""
        with self._lock:
            core, self._core = self._core, None
            publisher, self._publisher = self._publisher, None
        if core is None:
            return
        core.stop()
        if publisher is not None and publisher is not threading.current_thread():
            publisher.join(5.0)
        self._unlink()
        if hasattr(core, "close"):
            core.close()

    def _unlink(self) -> None:
        if self._path and self._owner_pid in (0, os.getpid()):
            try:
                os.unlink(self._path)
            except OSError:
                pass

    def _suspend_for_fork(self) -> None:
        """Before a fork: join the server thread and the publisher; the
        socket stays open (clients wait in its backlog) and everything
        registered stays."""
        self._fork_paused = False
        core, publisher = self._core, self._publisher
        if core is None:
            return
        core.stop()  # joins the server thread; the publisher wakes and returns
        if publisher is not None and publisher is not threading.current_thread():
            publisher.join()
            _forking.joined(publisher)
        self._fork_paused = True

    def _resume_after_fork(self) -> None:
        """After the fork, in the parent: serve again."""
        if not self._fork_paused:
            return
        self._fork_paused = False
        core = self._core
        if core is None:
            return
        try:
            core.start()
        except OSError:
            logger.exception("loopwatch: the status server could not restart after a fork")
            return
        if not self._listen:
            return  # a watchdog has no publisher
        with self._lock:
            publisher = self._publisher
            if publisher is not None and publisher.is_alive():
                return  # the fork was made from the publisher thread itself
            self._publisher = threading.Thread(target=self._publish_loop, args=(core,),
                                               name="loopwatch-status-publisher", daemon=True)
            self._publisher.start()

    def _after_fork_in_child(self) -> None:
        """The parent's threads are gone and the socket is the parent's:
        leave it alone and stop serving here."""
        self._fork_paused = False
        self._lock = threading.RLock()
        core, self._core, self._publisher = self._core, None, None
        if core is not None:
            core.after_fork_child()
        self._loops.clear()
        self._line_prefixes.clear()
        self._registries.clear()
        self._path = None

    # -- sources -------------------------------------------------------------
    def add_monitor(self, monitor: Any, name: str | None = None,
                    line_prefix: str | None = None) -> int:
        """Serve a (started) loop monitor's figures; returns its id. Call it
        in the loop's thread to let the native watchdog read that thread's
        stack while it holds the GIL in native code. The watchdog's stall
        line starts with `line_prefix` when given (``loopwatch run``'s
        ``loopwatch[pid P loop N thread T]``)."""
        with self._lock:
            loop_id = next(self._ids)
            name = name or threading.current_thread().name
            self._loops[loop_id] = (monitor, name)
            if line_prefix:
                self._line_prefixes[loop_id] = line_prefix
            monitor._stall_listeners.append(self._acknowledger(loop_id))
            if self._core is not None:
                self._attach_live(loop_id, monitor, name)
        self._republish()
        return loop_id

    def remove_monitor(self, loop_id: int) -> None:
        """Stop serving the loop that add_monitor returned this id for
        (an unknown id is ignored)."""
        with self._lock:
            entry = self._loops.pop(loop_id, None)
            self._line_prefixes.pop(loop_id, None)
            if self._core is not None:
                self._core.remove_loop(loop_id)
        if entry is not None:
            listeners = entry[0]._stall_listeners
            for fn in list(listeners):
                if getattr(fn, "_loopwatch_loop_id", None) == loop_id:
                    listeners.remove(fn)
            self._republish()

    def _republish(self) -> None:
        """A new Python part now that the sources changed: a native stall
        that begins before any client asked is then served with them."""
        core = self._core
        if core is not None and self._listen:
            self._publish(core)

    def _acknowledger(self, loop_id: int) -> Any:
        def ack(report: Any) -> None:
            core = self._core
            if core is not None and report.kind == "started":
                core.ack_stall(loop_id, report.stall_id)
        ack._loopwatch_loop_id = loop_id  # type: ignore[attr-defined]
        return ack

    def _attach_live(self, loop_id: int, monitor: Any, name: str) -> None:
        core = getattr(monitor, "_core", None)
        if core is None:
            return
        native_monitor = hasattr(core, "_address")
        if self.served_by == "native" and not native_monitor:
            return  # a twin's sampler has no native memory to read
        loop = monitor.loop
        in_loop_thread = loop is not None and _running_loop() is loop
        thread_state = self._core_class.current_thread_state() if in_loop_thread else 0
        try:
            self._core.add_loop(loop_id, core, thread_state, name,
                                self._line_prefixes.get(loop_id, ""))
        except OSError:
            pass

    def add_registry(self, registry: Any) -> None:
        """Serve a SessionRegistry's counts and stuck sessions (also while
        no Python code can run: the native status thread reads the native
        registry's table itself)."""
        with self._lock:
            if any(r is registry for r in self._registries):
                return
            self._registries.append(registry)
            if self._core is not None and self._listen:
                self._attach_sessions(registry)
        self._republish()

    def remove_registry(self, registry: Any) -> None:
        """Stop serving a registry (one not served is ignored)."""
        with self._lock:
            if not any(r is registry for r in self._registries):
                return
            self._registries = [r for r in self._registries if r is not registry]
            if self._core is not None:
                self._core.remove_sessions(id(registry))
        self._republish()

    def _attach_sessions(self, registry: Any) -> None:
        try:
            self._core.add_sessions(id(registry), registry)
        except (OSError, TypeError):
            pass  # a registry the core cannot read live: served by Python only

    def set_liveness(self, record: dict[str, Any]) -> None:
        """The last liveness line and its fields."""
        with self._lock:
            self._liveness = dict(record)
            self._liveness_at = time.monotonic()
            core = self._core
        if core is not None and self._listen:  # so a native stall is served with this line
            self._publish(core)

    # -- the document --------------------------------------------------------
    def document(self) -> dict[str, Any]:
        """The Python part of the status document, built now."""
        with self._lock:
            loops = list(self._loops.items())
            registries = list(self._registries)
            liveness, liveness_at = self._liveness, self._liveness_at
        now = time.monotonic()
        doc = document.process_entry(self._started_monotonic)
        doc["implementation"] = IMPLEMENTATION
        doc["generated_at"] = time.time()
        entries = []
        for loop_id, (monitor, name) in loops:
            try:
                entries.append(document.loop_entry(loop_id, name, monitor))
            except RuntimeError:  # never started
                continue
        doc["loops"] = entries
        doc["sessions"] = document.sessions_entry(registries)
        doc["liveness"] = None if liveness is None else {
            **liveness, "age_s": round(now - (liveness_at or 0.0), 3)}
        doc["limits"] = {"stuck_listed_max": document.MAX_STUCK_LISTED}
        return doc

    def _publish(self, core: Any) -> None:
        try:
            payload = json.dumps(self.document(), separators=(",", ":"), default=str).encode()
            core.publish(payload)
            self.published += 1
        except Exception:  # never let one bad source end status
            logger.exception("loopwatch: building the status document failed")

    def _publish_loop(self, core: Any) -> None:
        while True:
            got = core.wait_request(None)
            if got < 0:
                return
            if got > 0:
                self._publish(core)


def _running_loop() -> Any:
    import asyncio

    return asyncio._get_running_loop()


# -- the process's shared server --------------------------------------------
_shared_lock = threading.Lock()
_shared: StatusServer | None = None
_shared_users = 0
import weakref as _weakref  # noqa: E402

_SERVERS: _weakref.WeakSet[StatusServer] = _weakref.WeakSet()


def acquire(*, stall_lines: bool = False) -> StatusServer:
    """The process's status server, started on first use; pair each call
    with :func:`release`."""
    global _shared, _shared_users
    with _shared_lock:
        if _shared is None or _shared._owner_pid not in (0, os.getpid()):
            _shared = StatusServer(stall_lines=stall_lines)
            _shared_users = 0
        _shared.start()
        if stall_lines and not _shared._stall_lines and _shared._core is not None:
            _shared._stall_lines = True
            _shared._core.set_stall_lines(2, STALL_LINE_GRACE)
        _shared_users += 1
        return _shared


def release(server: StatusServer) -> None:
    """One user less; the last one stops the server and removes the socket."""
    global _shared, _shared_users
    with _shared_lock:
        if server is not _shared:
            server.stop()
            return
        _shared_users -= 1
        if _shared_users > 0:
            return
        _shared = None
    server.stop()


def current_server() -> StatusServer | None:
    """The process's shared server, if one runs."""
    return _shared


def _after_fork_in_child() -> None:
    global _shared, _shared_users, _shared_lock
    _shared_lock = threading.Lock()
    for server in list(_SERVERS):
        server._after_fork_in_child()
    _shared, _shared_users = None, 0


def _before_fork() -> None:
    for server in list(_SERVERS):
        try:
            server._suspend_for_fork()
        except Exception:  # never fail a fork
            logger.exception("loopwatch: pausing the status server for a fork failed")


def _after_fork_in_parent() -> None:
    for server in list(_SERVERS):
        try:
            server._resume_after_fork()
        except Exception:
            logger.exception("loopwatch: resuming the status server after a fork failed")


def _stop_all_at_exit() -> None:
    for server in list(_SERVERS):
        try:
            server.stop()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
