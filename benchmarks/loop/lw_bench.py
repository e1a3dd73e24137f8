"""What the loop monitor's benchmarks share: fresh child processes with a
fixed heap, the realistic baseline, and callgrind runs that count only the
measured window of one thread.

* Every child runs with fixed glibc malloc thresholds (MALLOC_ENV): with
  the defaults the heap adapts its mmap threshold to what was freed, and an
  echo benchmark's CPU per request swung 3x with it (issue 13); the
  monitor's own allocations must not move the application's buffers
  between the heap and mmap. PYTHONHASHSEED is fixed too.
* The realistic baseline (`realistic()`): the same process unwatched, with
  one unrelated timer scheduled (asyncio compares the heap top with the
  clock every iteration: a real service always has one), one idle thread
  (any second thread shares the fd table, which puts the process's fd
  system calls on the kernel's reference-counted path), and loopwatch
  imported but not started (the import alone moves a server's count by
  up to 0.9 %: see realistic()). The single-threaded baseline has none of
  them; "plain" has the timer and the thread but not the import.
* Callgrind: valgrind starts with instrumentation off; the child turns it
  on around the measured work (`CallgrindWindow`, client requests from a
  small C library built here from valgrind/callgrind.h) and dumps the
  counters per thread (--separate-threads=yes), so start-up and imports
  are not counted and no empty run is subtracted. Thread 1 is the main
  thread, where every child runs its loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from typing import Any, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable  # the venv's (a resolved path would be the base interpreter)

#: Fixed heap behaviour in every child (see the module docstring).
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(4 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
    "MALLOC_TOP_PAD_": str(16 << 20),
    "PYTHONHASHSEED": "0",
}

_CALLGRIND_C = r"""
#include <valgrind/callgrind.h>
void lw_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void lw_cg_stop(void) { CALLGRIND_DUMP_STATS_AT("measured"); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark child: ours, the fixed heap, `extra`."""
    env = dict(os.environ)
    env.update(MALLOC_ENV)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def new_loop(kind: str) -> Any:
    """A fresh event loop: "asyncio" (the selector loop) or "uvloop"."""
    import asyncio

    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


def realistic(loop: Any, import_loopwatch: bool = True) -> threading.Event:
    """Make the process the realistic baseline: one unrelated timer on the
    loop, one idle thread, and loopwatch imported (not started), as in the
    watched process. Returns the event that ends the thread.

    The import matters on its own: the same server with loopwatch imported
    and nothing started runs +0.14 % (aiohttp) to +0.9 % (uvicorn) more
    loop-thread instructions per request, +0.4 % with the garbage collector
    off (measured): a different heap and type-cache layout, nothing
    loopwatch executes. So the monitor's cost is measured against a
    baseline that has imported it too, and the import's effect is reported
    apart (import_loopwatch=False: the "plain" variant)."""
    loop.call_later(3600, lambda: None)
    done = threading.Event()
    threading.Thread(target=done.wait, name="idle-thread", daemon=True).start()
    if import_loopwatch:
        import loopwatch  # noqa: F401
    return done


def start_monitor(loop: Any, resolution: float, scale: float = 1.0) -> Any:
    """The native LoopMonitor at `resolution` (seconds), its resolution and
    threshold (100 ms, or the resolution if larger) stretched by `scale`
    (valgrind's slowdown: the same pings per unit of work as in real
    time). Call in the loop thread, the loop running or not."""
    from loopwatch._selector import load_implementation

    impl = load_implementation("native")
    monitor = impl.LoopMonitor(loop, resolution=resolution * scale,
                               stall_threshold=max(0.1, resolution) * scale)
    return monitor.start()


class CallgrindWindow:
    """In a child under `valgrind --tool=callgrind --instr-atstart=no`:
    start() turns instrumentation on and zeroes the counters; stop() dumps
    them (one file per thread) and turns it off. Outside valgrind both do
    nothing (the client requests are no-ops)."""

    def __init__(self) -> None:
        path = os.environ.get("LW_CALLGRIND_LIB")
        self._lib = ctypes.CDLL(path) if path else None

    def start(self) -> None:
        if self._lib is not None:
            self._lib.lw_cg_start()

    def stop(self) -> None:
        if self._lib is not None:
            self._lib.lw_cg_stop()


@contextlib.contextmanager
def callgrind_lib() -> Iterator[str]:
    """Build the client-request library (needs valgrind/callgrind.h and a C
    compiler); yields its path."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("valgrind") is None:
        raise RuntimeError("callgrind benchmarks need valgrind and a C compiler")
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "lw_cg.c"), os.path.join(tmp, "lw_cg.so")
        with open(src, "w") as f:
            f.write(_CALLGRIND_C)
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", lib, src], check=True,
                       capture_output=True)
        yield lib


def callgrind_command(out: str) -> list[str]:
    """valgrind's command line for a child whose window is counted; the
    child's own arguments follow."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={out}", PY]


def read_window(out: str, stderr: str = "") -> dict[int, int]:
    """{thread number: instructions in the measured window} from the dumps
    of `callgrind_command(out)`; thread 1 is the main thread."""
    counts: dict[int, int] = {}
    for path in glob.glob(out + ".*-*"):
        with open(path) as f:
            text = f.read()
        if "Client Request: measured" not in text:
            continue
        thread = int(path.rsplit("-", 1)[1])
        found = re.search(r"^summary:\s*(\d+)", text, re.M)
        counts[thread] = counts.get(thread, 0) + (int(found.group(1)) if found else 0)
    if 1 not in counts:
        raise RuntimeError("the child dumped no measured window: " + stderr[-2000:])
    return counts


def run_callgrind(lib: str, args: list[str], timeout: float = 1800,
                  extra_env: dict[str, str] | None = None) -> tuple[dict[int, int], str]:
    """Run `python args...` under callgrind with the window library; returns
    ({thread number: instructions in the measured window}, the child's
    stdout). Thread 1 is the main thread."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = child_env({"LW_CALLGRIND_LIB": lib, **(extra_env or {})})
        run = subprocess.run(callgrind_command(out) + args, capture_output=True, text=True,
                             timeout=timeout, env=env)
        if run.returncode != 0:
            raise RuntimeError(f"callgrind child failed ({run.returncode}): {run.stderr[-2000:]}")
        return read_window(out, run.stderr), run.stdout


def run_child(args: list[str], timeout: float = 600,
              extra_env: dict[str, str] | None = None) -> str:
    """Run `python args...` natively in a fresh process; its stdout."""
    run = subprocess.run([PY, *args], capture_output=True, text=True, timeout=timeout,
                         env=child_env(extra_env))
    if run.returncode != 0:
        raise RuntimeError(f"child {args} failed ({run.returncode}): {run.stderr[-2000:]}")
    return run.stdout


def field(text: str, name: str) -> float:
    """The number after `name` in a child's output (`name value`)."""
    found = re.search(rf"^{re.escape(name)} (\S+)", text, re.M)
    if found is None:
        raise RuntimeError(f"no {name!r} in the child's output: {text[-1000:]}")
    return float(found.group(1))


def median(values: list[float]) -> float:
    return statistics.median(values)
