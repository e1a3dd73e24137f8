"""Pausing loopwatch's threads across os.fork() (issue 12).

On CPython 3.12+, ``os.fork()`` in a process with more than one thread (as
the OS counts them, native threads included) warns that the child may
deadlock. So every loopwatch thread is stopped and joined before a fork
(``os.register_at_fork(before=...)``) and started again in the parent
(``after_in_parent``); CPython counts the threads after the fork and before
the after_in_parent hooks run (posixmodule.c: ``warn_about_fork_with_threads``
comes before ``PyOS_AfterFork_Parent``), so a process whose only other
threads were loopwatch's forks as a single-threaded one.

Each capability registers its own hooks (loop/monitor.py, status/server.py,
gateway/diagnostics.py, export/hlog.py) and reports here the threads it
joined. A joined thread can still be in the kernel's thread list for a
moment (pthread_join returns when the thread cleared its tid, before the
kernel unlinks it; on 3.12 ``Thread.join`` returns even before the thread's
last C code ran), and the count CPython reads is the kernel's: this module's
own ``before`` hook, registered first and so run last, waits until those
threads are gone from ``/proc/self/task`` (Linux; a few microseconds,
bounded by ``GONE_TIMEOUT``).

This module imports nothing of the package.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["joined", "NATIVE_THREAD_NAMES"]

#: The names (/proc/self/task/*/comm) of loopwatch's native threads.
NATIVE_THREAD_NAMES = frozenset({"lw-loop-sampler", "lw-status"})
#: The longest a fork waits for joined threads to leave the kernel's list.
GONE_TIMEOUT = 1.0

_TASKS = "/proc/self/task"
_joined: list[int] = []


def joined(thread: threading.Thread) -> None:
    """A before-fork hook joined this Python thread (the hook's thread)."""
    native_id = thread.native_id
    if native_id is not None:
        _joined.append(native_id)


def _lingering() -> bool:
    """Whether a thread loopwatch joined is still in the kernel's list."""
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return False
    alive = set(tasks)
    if any(str(tid) in alive for tid in _joined):
        return True
    me = str(threading.get_native_id())
    for tid in tasks:
        if tid == me:
            continue
        try:
            with open(f"{_TASKS}/{tid}/comm", "rb") as f:
                name = f.read().strip().decode("ascii", "replace")
        except OSError:
            continue
        if name in NATIVE_THREAD_NAMES:
            return True
    return False


def _wait_gone() -> None:
    try:
        if not os.path.isdir(_TASKS):
            return
        deadline = time.monotonic() + GONE_TIMEOUT
        delay = 50e-6
        # Polling: the kernel tells no one when it unlinks an exited thread.
        while _lingering() and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 2e-3)
    finally:
        _joined.clear()


if hasattr(os, "register_at_fork"):
    # Registered before any capability's hooks (each imports this module
    # first), so it runs after all of theirs: before hooks run in reverse.
    os.register_at_fork(before=_wait_gone)
