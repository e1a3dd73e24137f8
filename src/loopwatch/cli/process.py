"""What ``loopwatch run`` does in each process of the service it runs.

One :class:`ProcessWatch` per process: a :class:`~loopwatch.cli.run.LoopWatcher`
(a monitor on every loop), the live stall lines, and the process's exit
summary, printed once whichever way the process ends:

* a normal end: ``loopwatch run`` prints it after the program returns (the
  top process), an atexit handler (every other process);
* ``os._exit`` (how forked children of multiprocessing, forkserver and
  gunicorn leave): ``os._exit`` is wrapped to print first;
* SIGTERM, SIGINT or SIGHUP with the default disposition (see below).

Child processes: ``loopwatch run`` puts :data:`BOOTSTRAP_DIR` (a folder
holding only ``sitecustomize.py``) first on ``PYTHONPATH`` and its options
in :data:`ENV_RUN` / :data:`ENV_OPTIONS`; every Python process started from
it with that environment (multiprocessing spawn and forkserver, a
``subprocess`` running ``sys.executable``, uvicorn's workers and reloader)
imports that ``sitecustomize`` at startup, which calls
:func:`start_from_environment` and then runs the next ``sitecustomize`` on
``sys.path``, if any. Forked children inherit the parent's watch: the
parent's loops are forgotten at the fork, the child's own are numbered
from 1 and summarized under the child's pid. Each process with a watched
loop serves its own status socket (its pid's), so ``loopwatch status``
lists every worker; the exporters (Prometheus, .hlog) are the top
process's only.

Signals: for each of SIGTERM, SIGINT and SIGHUP whose disposition is the
default (SIG_DFL), a Python handler stands in for it. When the signal
comes it prints the summary, puts SIG_DFL back and sends the signal to the
process again, which then dies of it as it would have without loopwatch
(same wait status, no atexit handlers, no cleanup of the program's). The
program never sees it: ``signal.getsignal`` answers SIG_DFL for it and
``signal.signal`` returns SIG_DFL where it stood; a handler the program
installs replaces it (loopwatch steps aside: the program's handler runs as
usual), and when the program puts SIG_DFL back (uvicorn does before it
re-raises the signal with ``signal.raise_signal``), the stand-in comes
back. SIGINT's Python default (``default_int_handler``: KeyboardInterrupt)
and SIG_IGN are left alone.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

__all__ = ["BOOTSTRAP_DIR", "ENV_OPTIONS", "ENV_RUN", "ProcessWatch", "child_environment",
           "current", "start_from_environment"]

#: The folder ``loopwatch run`` puts first on PYTHONPATH for its children.
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")
#: "1" in every process started under ``loopwatch run``.
ENV_RUN = "LOOPWATCH_RUN"
#: The run options, JSON: resolution, stall_threshold (seconds), capture_stack
#: (bool), summary_file (a path with {pid}, or null), status (bool: serve
#: ``loopwatch status`` in each process).
ENV_OPTIONS = "LOOPWATCH_RUN_OPTIONS"

WATCHED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                        if hasattr(signal, name))

_current: ProcessWatch | None = None
_hooks_installed = False
_real_signal = signal.signal
_real_getsignal = signal.getsignal
_real_exit = os._exit


def current() -> ProcessWatch | None:
    """The watch of this process, if ``loopwatch run`` watches it."""
    return _current


class ProcessWatch:
    """Everything ``loopwatch run`` keeps in one process.

    Args:
        options: resolution, stall_threshold, capture_stack, summary_file,
            and status (serve ``loopwatch status`` in this process; the
            default True).
        on_watch: called with (name, monitor) for each new loop (the top
            process exports this way).
        top: the ``loopwatch run`` process itself, which says "no event
            loop ran" when none did (other processes print nothing then).
        status_server: the top process's status server, acquired before
            the program runs; other processes acquire their own when their
            first loop runs (a forked child's socket is its own, never
            the parent's).
    """

    def __init__(self, options: dict[str, Any],
                 on_watch: Callable[[str, Any], Any] | None = None, top: bool = False,
                 status_server: Any = None) -> None:
        from .run import LoopWatcher

        self.options = options
        self.top = top
        self.pid = os.getpid()
        #: Called (in the process that added them) before the process dies
        #: of a signal or leaves through os._exit: release the status
        #: socket, write the last interval log lines.
        self.before_abrupt_exit: list[Callable[[], Any]] = []
        self._printed = False
        self._print_lock = threading.Lock()
        self._on_watch = on_watch
        self._status_server = status_server
        self._status_refused = False
        self.watcher = LoopWatcher(self._monitor_for, self._on_new_loop)
        self._handler: logging.Handler | None = None

    def _on_new_loop(self, name: str, monitor: Any) -> None:
        """In the new loop's thread: serve it in status (or, without
        status, give it the native watchdog's stall lines), then on_watch."""
        server = self._status_server or self._acquire_status()
        if server is not None:
            entry = self.watcher.label(monitor.loop)
            server.add_monitor(monitor, name, entry.prefix() if entry is not None else None)
        if self._on_watch is not None:
            self._on_watch(name, monitor)

    def _acquire_status(self) -> Any:
        """This process's own status server, once (a refusal is said once);
        without status, a watchdog alone (no socket): a stall in native code
        holding the GIL still gets its line while it goes on."""
        if self._status_refused:
            return None
        from ..status import server as status_server
        from ..status.paths import StatusFolderError

        if not self.options.get("status", True):
            watchdog = status_server.StatusServer(listen=False, stall_lines=True).start()
            self._status_server = watchdog
            self.before_abrupt_exit.append(watchdog.stop)
            return watchdog
        try:
            server = status_server.acquire(stall_lines=True)
        except (StatusFolderError, OSError) as exc:
            self._status_refused = True
            try:
                sys.stderr.write(f"loopwatch[pid {os.getpid()}]: status not served: {exc}\n")
            except (OSError, ValueError, AttributeError):
                pass
            return None
        self._status_server = server
        # a normal exit stops it (status.server's atexit); os._exit and a
        # signal's default action would leave the socket behind
        self.before_abrupt_exit.append(server.stop)
        return server

    def _monitor_for(self, loop: Any) -> Any:
        import loopwatch

        return loopwatch.LoopMonitor(loop, resolution=self.options["resolution"],
                                     stall_threshold=self.options["stall_threshold"],
                                     capture_stack=self.options["capture_stack"])

    def start(self) -> ProcessWatch:
        """Watch this process: the loop hook, the stall lines, the exit paths."""
        global _current
        from .run import live_stall_handler

        previous, _current = _current, self
        if previous is not None and previous is not self:
            previous.disable()  # a `loopwatch run` inside a watched process: this one reports
        stall_logger = logging.getLogger("loopwatch.loop")
        self._handler = live_stall_handler(prefix=self.watcher.prefix)
        stall_logger.addHandler(self._handler)
        stall_logger.setLevel(logging.WARNING)
        stall_logger.propagate = False  # one line per report, whatever the app's logging
        self.watcher.install()
        _install_process_hooks()
        return self

    def disable(self) -> None:
        """Stop watching new loops and never print (another watch took over)."""
        self._printed = True
        self.watcher.uninstall()
        if self._handler is not None:
            logging.getLogger("loopwatch.loop").removeHandler(self._handler)
            self._handler = None

    # -- the summary --------------------------------------------------------
    def summary_text(self, reason: str | None = None) -> str | None:
        """This process's summary (None when there is nothing to say)."""
        from .run import format_summary

        pid = os.getpid()
        loops = list(self.watcher.loops)
        if not loops:
            return f"loopwatch[pid {pid}]: no event loop ran\n" if self.top else None
        header = f"loopwatch[pid {pid}]: summary of {len(loops)} event loop"
        header += "" if len(loops) == 1 else "s"
        if reason:
            header += f" ({reason})"
        blocks = [header]
        for entry in loops:
            try:
                stats = entry.monitor.snapshot(reset_interval=False)
            except RuntimeError:  # never started
                continue
            blocks.append(format_summary(entry.loop_type, stats, prefix=entry.prefix(pid)))
        return "\n".join(blocks) + "\n"

    def print_summaries(self, reason: str | None = None) -> None:
        """Print this process's summary once (later calls do nothing), on
        stderr or in the summary file."""
        with self._print_lock:
            if self._printed:
                return
            self._printed = True
        text = self.summary_text(reason)
        if text is None:
            return
        path = self.options.get("summary_file")
        if path:
            path = str(path).replace("{pid}", str(os.getpid()))
            try:
                # one write, appended: processes sharing a file do not interleave lines
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, text.encode("utf-8", "replace"))
                finally:
                    os.close(fd)
                return
            except OSError as exc:
                text = (f"loopwatch[pid {os.getpid()}]: cannot write the summary file "
                        f"{path!r}: {exc.strerror or exc}; here it is\n") + text
        stream = sys.stderr
        try:
            if stream is None:
                raise OSError("no sys.stderr")
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone
            try:
                os.write(2, text.encode("utf-8", "replace"))
            except OSError:
                pass

    def _before_abrupt_exit(self, reason: str) -> None:
        try:
            self.print_summaries(reason)
        except Exception:
            pass
        callbacks, self.before_abrupt_exit = self.before_abrupt_exit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                pass

    def _after_fork_in_child(self) -> None:
        # The watcher forgets the parent's loops itself (its own fork hook).
        self._printed = False
        self._print_lock = threading.Lock()
        self.top = False
        self.pid = os.getpid()
        self.before_abrupt_exit = []
        self._on_watch = None  # the parent's exporters stay the parent's
        self._status_server = None  # the parent's socket is not this process's
        self._status_refused = False


# -- process-wide hooks, installed once, acting for the current watch ---------
def _install_process_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    signal.signal = _signal
    signal.getsignal = _getsignal
    os._exit = _exit  # type: ignore[assignment]  # returns only through the real one
    if threading.current_thread() is threading.main_thread():
        for sig in WATCHED_SIGNALS:
            try:
                if _real_getsignal(sig) == signal.SIG_DFL:
                    _real_signal(sig, _on_signal)
            except (OSError, ValueError):
                pass
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    if _current is not None:
        _current._after_fork_in_child()


def _at_exit() -> None:
    if _current is not None:
        _current.print_summaries()


def _exit(n: int) -> None:
    """os._exit, after this process's summary."""
    if _current is not None:
        _current._before_abrupt_exit("left through os._exit")
    _real_exit(n)


def _is_default(handler: Any) -> bool:
    return isinstance(handler, int) and not callable(handler) and handler == signal.SIG_DFL


def _signal(signalnum: Any, handler: Any) -> Any:
    """signal.signal, with loopwatch's stand-in for SIG_DFL invisible."""
    if signalnum in WATCHED_SIGNALS and _is_default(handler):
        previous = _real_signal(signalnum, _on_signal)
    else:
        previous = _real_signal(signalnum, handler)
    return signal.SIG_DFL if previous is _on_signal else previous


def _getsignal(signalnum: Any) -> Any:
    handler = _real_getsignal(signalnum)
    return signal.SIG_DFL if handler is _on_signal else handler


def _on_signal(signum: int, frame: Any) -> None:
    """A signal whose disposition is the default: summarize, then die of it."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    watch = _current
    if watch is not None:
        watch._before_abrupt_exit(f"ended by {name}")
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
    _real_signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    # The default action ended the process above, unless this thread blocks
    # the signal: let it through; last resort, the shell's status for it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    _real_exit(128 + signum)


# -- children ------------------------------------------------------------------
def child_environment(options: dict[str, Any], environ: dict[str, str] | None = None
                      ) -> dict[str, str]:
    """The variables that make Python processes started with them watched
    (:data:`ENV_RUN`, :data:`ENV_OPTIONS`, PYTHONPATH with the bootstrap
    folder first)."""
    path = (os.environ if environ is None else environ).get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    summary_file = options.get("summary_file")
    return {
        ENV_RUN: "1",
        ENV_OPTIONS: json.dumps({
            "resolution": options["resolution"],
            "stall_threshold": options["stall_threshold"],
            "capture_stack": options["capture_stack"],
            "summary_file": os.path.abspath(summary_file) if summary_file else None,
            "status": bool(options.get("status", True)),
        }),
        "PYTHONPATH": os.pathsep.join([BOOTSTRAP_DIR, *parts]),
    }


def start_from_environment() -> ProcessWatch | None:
    """Called by the bootstrap ``sitecustomize`` in every Python process
    started under ``loopwatch run``: watch this process with the options
    of :data:`ENV_OPTIONS`."""
    if os.environ.get(ENV_RUN) != "1":
        return None
    from ..loop.monitor import validate_options

    raw = json.loads(os.environ.get(ENV_OPTIONS) or "{}")
    options = {
        "resolution": raw.get("resolution", 0.01),
        "stall_threshold": raw.get("stall_threshold", 0.1),
        "capture_stack": raw.get("capture_stack", True),
        "summary_file": raw.get("summary_file"),
        "status": raw.get("status", True),
    }
    validate_options(options["resolution"], options["stall_threshold"], None,
                     options["capture_stack"])
    if options["summary_file"] is not None and not isinstance(options["summary_file"], str):
        raise TypeError("summary_file must be a path or null")
    if not isinstance(options["status"], bool):
        raise TypeError("status must be true or false")
    return ProcessWatch(options).start()
