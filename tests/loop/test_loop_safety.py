"""Fork and interpreter exit with a running loop monitor, on both
implementations and on asyncio and uvloop.

Chosen fork behaviour: a forked child gets its parent's monitors cleanly
stopped (``running`` False, ``stopped_by_fork`` True, snapshots still
readable, no thread, loop hooks removed); new monitors work in the child.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings

import pytest

from loop_support import (
    REPO,
    Stalls,
    impl_env,
    new_loop,
    run_for,
    wait_until,
)


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _child_checks(impl, kind: str, monitor) -> None:
    """What a forked child must find; raises AssertionError otherwise."""
    assert not monitor.running
    assert monitor.stopped_by_fork
    stats = monitor.snapshot()  # still readable, from the parent's data
    assert not stats.running and stats.total.sample_count > 0
    assert "run_forever" not in vars(monitor.loop)
    # a new loop in the child is watched by a new monitor that works
    stalls = Stalls()
    loop = new_loop(kind)
    try:
        with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.03,
                              on_stall=stalls) as child_monitor:
            run_for(loop, 0.05)
            loop.call_soon(time.sleep, 0.1)
            run_for(loop, 0.02)
            # the sleep's stall (a loaded machine may add short ones of its own)
            assert wait_until(lambda: any(e.kind == "ended" and e.duration >= 0.09
                                          for e in stalls.of_kind("ended"))), \
                f"the sleep's stall was not reported in the child: {stalls.events}"
            child_stats = child_monitor.snapshot()
    finally:
        loop.close()
    assert child_stats.total.sample_count > 0
    assert child_stats.total.stall_count >= 1
    assert child_stats.total.longest_stall >= 0.09


def _mp_child(impl_name: str, kind: str, monitor, queue) -> None:
    from loopwatch._selector import load_implementation

    try:
        asyncio.events._set_running_loop(None)  # forked from inside the parent's loop
        _child_checks(load_implementation(impl_name), kind, monitor)
        queue.put("ok")
    except BaseException:
        queue.put(traceback.format_exc())


def _tasks() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


# Threads the test process had before any test ran (an xdist worker has
# execnet's): CPython counts them at a fork, so with any such thread the
# fork warning is right, and only the rest is checked.
_PRESENT_AT_COLLECTION = _tasks() - {str(threading.get_native_id())}


def _other_threads() -> list[str]:
    """The OS threads of this process that are neither this one, nor
    loopwatch's (its Python threads by native id, its native ones by name),
    nor there before the tests ran."""
    from loopwatch._forking import NATIVE_THREAD_NAMES

    ours = {threading.get_native_id()} | {
        t.native_id for t in threading.enumerate() if t.name.startswith("loopwatch-")}
    others = []
    for task in _tasks() - _PRESENT_AT_COLLECTION:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
        except OSError:  # gone meanwhile
            continue
        if int(task) not in ours and name not in NATIVE_THREAD_NAMES:
            others.append(f"{task}:{name}")
    return others


def _fork_from_the_loop(loop, monitor, fork):
    """Runs the loop in this thread and calls fork() from one of its
    callbacks, as an application forks, with the monitor running; returns
    fork's result and the fork DeprecationWarnings it raised. Only
    loopwatch's threads may run beside this one, and they pause across the
    fork, so CPython 3.12+ must see a single-threaded process."""
    async def main():
        assert wait_until(lambda: not _other_threads(), timeout=10), _other_threads()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fork()
        before = monitor.snapshot(reset_interval=False).total.sample_count
        deadline = time.monotonic() + 10
        while monitor.snapshot(reset_interval=False).total.sample_count <= before:
            assert time.monotonic() < deadline, "the parent's monitor stopped sampling"
            await asyncio.sleep(0.005)
        return result, [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]

    return loop.run_until_complete(main())


@pytest.fixture
def running_monitor(impl, loop_kind):
    loop = new_loop(loop_kind)
    monitor = impl.LoopMonitor(loop, resolution=0.005).start()
    run_for(loop, 0.05)
    assert monitor.snapshot(reset_interval=False).total.sample_count > 0
    yield monitor
    monitor.stop()
    loop.close()


def test_os_fork_child_gets_a_cleanly_stopped_monitor(impl, loop_kind, running_monitor):
    read_end, write_end = os.pipe()

    def fork() -> int:
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                os.close(read_end)
                asyncio.events._set_running_loop(None)
                _child_checks(impl, loop_kind, running_monitor)
                code = 0
            except BaseException:
                os.write(write_end, traceback.format_exc().encode())
            finally:
                os._exit(code)
        return pid

    pid, fork_warnings = _fork_from_the_loop(running_monitor.loop, running_monitor, fork)
    os.close(write_end)
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("forked child hung")
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0, message
    if not _PRESENT_AT_COLLECTION:
        assert fork_warnings == []  # loopwatch's threads were paused across the fork
    assert running_monitor.running


def test_multiprocessing_fork_child_gets_a_cleanly_stopped_monitor(impl, loop_kind,
                                                                   running_monitor):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_mp_child, args=(impl.name, loop_kind, running_monitor, queue))
    _, fork_warnings = _fork_from_the_loop(running_monitor.loop, running_monitor, child.start)
    result = queue.get(timeout=60)
    child.join(30)
    assert result == "ok", result
    assert child.exitcode == 0
    if not _PRESENT_AT_COLLECTION:
        assert fork_warnings == []
    assert running_monitor.running


EXIT_WITH_IDLE_MONITOR = """
import asyncio, sys
kind = sys.argv[1]
if kind == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.SelectorEventLoop()
import loopwatch
monitor = loopwatch.LoopMonitor(loop, resolution=0.001).start()
loop.run_until_complete(asyncio.sleep(0.02))
print("exiting", loopwatch.IMPLEMENTATION, flush=True)
# no stop(), no close(): the interpreter exits with the monitor running
"""

EXIT_DURING_A_STALL = """
import asyncio, atexit, sys, threading, time
# a slow exit (this handler runs after loopwatch's): the loop thread is still
# blocked when the interpreter exits, so loopwatch's exit handler ends the
# stall (every started stall gets its end); that end must not be reported
# after "exiting"
atexit.register(time.sleep, 0.3)
kind = sys.argv[1]
if kind == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.SelectorEventLoop()
import loopwatch
cond = threading.Condition()
blocking = threading.Event()
exited = False
ongoing = set()  # ids of stalls started and not ended
def on_stall(event):
    # A loaded machine may make short stalls of its own before the block
    # (the loop thread kept off a core past the 20 ms threshold); they are
    # fine. What must not happen is a report after "exiting".
    with cond:
        if exited:
            print("late", event.kind, flush=True)
        elif event.kind == "started":
            ongoing.add(event.stall_id)
        else:
            ongoing.discard(event.stall_id)
        cond.notify_all()
monitor = loopwatch.LoopMonitor(loop, resolution=0.002, stall_threshold=0.02,
                                on_stall=on_stall).start()
def block_for_a_while():
    blocking.set()
    time.sleep(30)  # far longer than any delay of a loaded machine: still blocked at exit
loop.call_soon(block_for_a_while)
threading.Thread(target=loop.run_forever, daemon=True).start()
def only_the_blocks_stall_is_open():
    # the stall going on (the block's: it lasts until exit) has been
    # reported, and every earlier one has had its end reported
    current = monitor.current_stall()
    return blocking.is_set() and current is not None and ongoing == {current.stall_id}
deadline = time.monotonic() + 10
with cond:
    while not only_the_blocks_stall_is_open():
        assert time.monotonic() < deadline, ongoing
        cond.wait(0.01)
    print("stall started", flush=True)
    exited = True
print("exiting", flush=True)
"""

EXIT_FROM_ASYNCIO_RUN = """
import asyncio, sys
import loopwatch
async def main():
    async with loopwatch.watch(resolution=0.001):
        await asyncio.sleep(0.02)
        print("exiting", flush=True)
        sys.exit(3)
if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize(
    "script, expected_stdout, expected_code",
    [
        (EXIT_WITH_IDLE_MONITOR, "exiting {impl}\n", 0),
        (EXIT_DURING_A_STALL, "stall started\nexiting\n", 0),
        (EXIT_FROM_ASYNCIO_RUN, "exiting\n", 3),
    ],
    ids=["idle", "during-stall", "sys-exit-in-asyncio-run"],
)
def test_interpreter_exits_cleanly_with_a_running_monitor(impl, loop_kind, script,
                                                          expected_stdout, expected_code):
    """Many runs, in parallel: no crash, no hang, nothing printed after exit."""
    runs = 6
    env = dict(os.environ, **impl_env(impl.name))
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), loop_kind], cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(runs)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    expected = expected_stdout.format(impl=impl.name)
    for code, out, err in results:
        assert code == expected_code, err
        assert out == expected
        # stall lines go to stderr through the logger's last-resort handler,
        # and nothing else (no traceback, no error from a thread at exit). A
        # machine loaded enough to keep the loop thread off a core for the
        # threshold makes a real stall of an idle loop: reported, and fine.
        for line in err.splitlines():
            assert line.startswith("event loop stall #"), err
        if script is EXIT_DURING_A_STALL:
            assert err.startswith("event loop stall #1 in progress"), err
