"""Helpers shared by the tests of every capability (importable from any
folder under tests/: conftest.py puts tests/ on the path). The fixtures
(``impl``, ``loop_kind``, ``loop``) are in conftest.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extras
    uvloop = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOP_KINDS = ["asyncio", "uvloop"]


def new_registry(impl: Any, **kwargs: Any) -> Any:
    """A SessionRegistry of the implementation under test: the native C
    table, or the pure-Python twin on the pure-Python wheel."""
    if impl.name == "python":
        kwargs.setdefault("wheel_factory", impl.TimerWheel)
    return impl.SessionRegistry(**kwargs)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if uvloop is None:
        pytest.skip("uvloop is not installed")
    return uvloop.new_event_loop()


class LoopThread:
    """Runs a loop forever in a thread of its own; ``call(fn)`` runs fn in
    the loop and returns its result."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-loop", daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "loop thread did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # re-raised in the caller
                box.append((False, exc))
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(timeout), "loop did not run the call"
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not self.thread.is_alive(), "loop thread did not stop"


class Stalls:
    """An on_stall callback that keeps the events and signals them."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.started = threading.Event()
        self.ended = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)
        (self.started if event.kind == "started" else self.ended).set()

    def of_kind(self, kind: str) -> list[Any]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]


def run_for(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Run the loop idle for `seconds` (the loop's own timer ends it)."""
    loop.run_until_complete(asyncio.sleep(seconds))


def monitor_threads() -> int:
    """The loop monitors' threads alive in this process: Python threads
    named loopwatch-*, and (Linux) native sampler threads, which name
    themselves lw-loop-sampler, unless exiting. A thread pthread_join has
    returned for can still be listed in /proc for a moment (the kernel
    wakes the joiner before it removes the task); it has PF_EXITING set
    by then, which the kernel sets first thing in exit."""
    count = sum(1 for t in threading.enumerate()
                if t.name.startswith("loopwatch-") and t.is_alive())
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return count
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except OSError:  # the thread just ended
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        flags = int(stat[stat.rindex(")") + 1:].split()[6])  # field 9
        count += comm == "lw-loop-sampler" and not flags & PF_EXITING
    return count


PF_EXITING = 0x4  # include/linux/sched.h


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition that no event signals (thread counts, exit codes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def run_python(code: str, env_extra: dict[str, str] | None = None, timeout: float = 60,
               args: list[str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code, *(args or [])], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def impl_env(impl_name: str) -> dict[str, str]:
    """Environment that makes a subprocess use the given implementation."""
    return {"LOOPWATCH_NO_EXTENSIONS": "1" if impl_name == "python" else "0"}
