"""A process that forks while loopwatch watches it (run by test_fork_threads.py
in a fresh interpreter, with -W error::DeprecationWarning): prints one JSON
line of findings; exit status 0 once it got that far.

argv[1]: "single" (the loop in the main thread, a monitor and a Diagnostics
with status and liveness, an .hlog logger: the process is single-threaded
but for loopwatch) or "stall" (a stall going on at the fork, the loop in a
thread of its own).
The pause at the fork is made long on purpose (PAUSE s, by a before-fork
hook registered before loopwatch's, so it runs after they paused): a
sampler that counted it would record a lag sample of about PAUSE and report
a stall.
"""

import os
import sys
import time

PAUSE = 1.5
#: The "single" case's stall threshold: below the pause (a counted pause is a
#: stall), far above what a loaded machine does to the loop around a fork.
THRESHOLD = 1.0
os.register_at_fork(before=lambda: time.sleep(PAUSE), after_in_parent=lambda: None)

import asyncio  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402

import loopwatch  # noqa: E402
from loopwatch.export.hlog import LagLogger  # noqa: E402

IMPL = loopwatch.IMPLEMENTATION
found: dict = {"implementation": IMPL}


def threads_now() -> list[str]:
    names = sorted(t.name for t in threading.enumerate())
    try:
        for tid in sorted(os.listdir("/proc/self/task")):
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append("task:" + f.read().strip())
    except OSError:
        pass
    return names


def child_checks(monitor, diag) -> int:
    try:
        ok = (not monitor.running and monitor.stopped_by_fork
              and loopwatch.status.server.current_server() is None)
        return 0 if ok else 3
    except BaseException:
        return 4


async def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def single() -> None:
    stalls: list = []
    monitor = loopwatch.LoopMonitor(resolution=0.005, stall_threshold=THRESHOLD,
                                     on_stall=stalls.append)
    diag = loopwatch.Diagnostics(monitor=monitor, liveness_interval=0.05, status=True)
    diag.start()
    hlog_file = tempfile.NamedTemporaryFile("w", suffix=".hlog", delete=False)
    hlog = LagLogger(hlog_file, interval=0.05).start()
    try:
        assert await wait_for(lambda: monitor.snapshot(reset_interval=False).total.sample_count > 20)
        assert await wait_for(lambda: diag.liveness.last is not None)
        found["threads_before"] = threads_now()
        socket_path = diag.status_path
        before = monitor.snapshot(reset_interval=True)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(child_checks(monitor, diag))
        found["pause"] = time.monotonic() - t0
        # A restarted native thread names itself once it runs: wait for the
        # names (a thread that never came back is still missing after it).
        await wait_for(lambda: set(found["threads_before"]) <= set(threads_now()))
        found["threads_after"] = threads_now()
        # Waited for in a thread: a loop blocked in waitpid (as long as a
        # loaded machine takes to run the child) would be real lag.
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        found["child_exit"] = os.waitstatus_to_exitcode(status)
        found["socket_kept"] = socket_path is not None and os.path.exists(socket_path)
        after_fork = monitor.snapshot(reset_interval=False)
        # The parent goes on sampling.
        found["samples_grow"] = await wait_for(
            lambda: monitor.snapshot(reset_interval=False).total.sample_count
            > after_fork.total.sample_count + 20)
        # Every lag sample so far (before the fork: a quiet loop; the liveness
        # line resets the interval, so the cumulative window).
        found["max_lag_after_fork"] = monitor.snapshot(reset_interval=False).total.lag.max_ms / 1000
        # stalls as long as the fork's pause that began at the fork (a
        # loaded machine makes short ones of its own; one going on when the
        # fork began rightly goes on through it and counts its pause)
        found["stalls_from_fork"] = sum(1 for s in stalls if s.duration >= 0.8 * PAUSE
                                        and s.started_at >= t0 - 0.05)
        # A stall after the fork is reported, started and ended.
        time.sleep(THRESHOLD + 0.3)
        found["stall_reported"] = await wait_for(
            lambda: any(s.kind == "ended" for s in stalls))
        found["stall_kinds"] = [s.kind for s in stalls if s.kind == "started"
                                or s.duration >= THRESHOLD]
        # Status is served in the parent after the fork.
        from loopwatch.status.client import query_status

        # (in a thread: the loop must run to publish the document; a thread
        # made after the fork is no concern of the warning)
        reply = await asyncio.to_thread(query_status, os.getpid())
        found["status_after"] = isinstance(reply, dict) and "loops" in reply
        found["liveness_thread"] = any(t.name == "loopwatch-liveness"
                                       for t in threading.enumerate())
        found["before_sample_count"] = before.total.sample_count
    finally:
        hlog.stop()
        diag.stop()
        with open(hlog_file.name) as f:
            found["hlog_lines"] = sum(1 for line in f if line[:1] not in ("#", '"', ""))
        os.unlink(hlog_file.name)


def stall_at_fork() -> None:
    import warnings

    # The loop runs in a thread of its own, which CPython counts: the
    # warning is right here and is not what this case checks.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    loop = asyncio.new_event_loop()
    stalls: list = []
    started = threading.Event()
    ended = threading.Event()
    blocked_at: list = []  # when the loop entered the block
    ours: list = []  # the block's stall id

    # A loaded machine makes short stalls of its own (the threshold is
    # 50 ms): the stall examined is the one detected once the block began.
    def on_stall(event):
        stalls.append(event)
        if event.kind == "started" and not ours and blocked_at \
                and event.detected_at >= blocked_at[0]:
            ours.append(event.stall_id)
            started.set()
        elif event.kind == "ended" and ours and event.stall_id == ours[0]:
            ended.set()

    monitor = loopwatch.LoopMonitor(loop, resolution=0.005, stall_threshold=0.05,
                                    on_stall=on_stall)
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    running = threading.Event()
    loop.call_soon_threadsafe(running.set)
    assert running.wait(10)
    monitor.start()  # inside the running loop's life: it arms in the loop thread
    deadline = time.monotonic() + 10
    while monitor.snapshot(reset_interval=False).total.sample_count < 10:
        assert time.monotonic() < deadline, "the monitor does not sample"
        time.sleep(0.01)
    release = threading.Event()

    def block():
        blocked_at.append(time.monotonic())
        # A stall going on already (the loop had not beaten since it began)
        # goes on through the block: that one is ours.
        seen = list(stalls)
        ongoing = [s.stall_id for s in seen if s.kind == "started"
                   and not any(e.kind == "ended" and e.stall_id == s.stall_id for e in seen)]
        if ongoing and not ours:
            ours.append(ongoing[-1])
            started.set()
        release.wait(10)  # the stall, until released

    loop.call_soon_threadsafe(block)
    assert started.wait(10)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if monitor.stopped_by_fork else 3)
    _, status = os.waitpid(pid, 0)
    found["child_exit"] = os.waitstatus_to_exitcode(status)
    time.sleep(0.1)  # the stall goes on after the fork (the loop thread still waits)
    found["ended_before_release"] = ended.is_set()
    held = time.monotonic()
    release.set()
    found["ended"] = ended.wait(10)
    mine = [s for s in stalls if s.stall_id == ours[0]]
    found["kinds"] = [s.kind for s in mine]
    found["duration"] = [s.duration for s in mine if s.kind == "ended"]
    found["held_since_start"] = held - mine[0].started_at
    monitor.stop()
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    loop.close()


if __name__ == "__main__":
    if sys.argv[1] == "single":
        asyncio.run(single())
    else:
        stall_at_fork()
    print(json.dumps(found))
