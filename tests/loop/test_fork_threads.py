"""Issue 12, item 3: loopwatch's threads are paused across os.fork().

Each case runs tests/loop/fork_scenario.py in a fresh interpreter (this
one's: run the file under 3.12+ to check the warning; under 3.11 there is
no warning, the behaviour is checked the same) with
``-W error::DeprecationWarning``: on CPython 3.12+ a fork in a process with
another thread, native ones included, warns, and here that warning would
end the process before it prints its findings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loop_support import REPO, impl_env

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

SCENARIO = os.path.join(REPO, "tests", "loop", "fork_scenario.py")
PAUSE = 1.5  # fork_scenario.PAUSE: how long its fork is kept paused
LOOPWATCH_THREADS = {"loopwatch-reporter", "loopwatch-sampler", "loopwatch-status",
                     "loopwatch-status-publisher", "loopwatch-liveness", "loopwatch-hlog",
                     "task:lw-loop-sampler", "task:lw-status"}


def _run(impl_name: str, case: str, runtime_dir) -> dict:
    env = dict(os.environ)
    env.update(impl_env(impl_name))
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", SCENARIO, case],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DeprecationWarning" not in done.stderr
    assert "multi-threaded" not in done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["implementation"] == impl_name
    return found


def test_fork_with_monitor_and_diagnostics_is_single_threaded(impl, runtime_dir):
    found = _run(impl.name, "single", runtime_dir)
    before = set(found["threads_before"]) & LOOPWATCH_THREADS
    # loopwatch's threads were there (so without the pause CPython 3.12+
    # would have warned)...
    expected = {"loopwatch-reporter", "loopwatch-status-publisher", "loopwatch-liveness",
                "loopwatch-hlog"}
    expected |= ({"task:lw-loop-sampler", "task:lw-status"} if impl.name == "native"
                 else {"loopwatch-sampler", "loopwatch-status"})
    if not os.path.isdir("/proc/self/task"):
        expected = {n for n in expected if not n.startswith("task:")}
    assert expected <= before
    # ...and all are back after it.
    assert set(found["threads_after"]) & LOOPWATCH_THREADS == before
    assert found["pause"] >= PAUSE
    assert found["child_exit"] == 0  # monitor stopped_by_fork, nothing served there
    assert found["socket_kept"]  # the child did not remove the parent's socket
    assert found["samples_grow"]
    # The pause is unsampled time: no lag sample of its size, no stall.
    # (A loaded machine adds lag and short stalls of its own: the bound is
    # what the pause would leave if it were counted.)
    assert found["max_lag_after_fork"] < 0.8 * PAUSE
    assert found["stalls_from_fork"] == 0
    # A stall after the fork is reported; status and the threads go on.
    assert found["stall_reported"]
    kinds = found["stall_kinds"]
    assert kinds.count("ended") == 1 and "started" in kinds[:kinds.index("ended")]
    assert found["status_after"]
    assert found["liveness_thread"]
    assert found["hlog_lines"] > 0


def test_stall_going_on_at_the_fork_continues(impl, runtime_dir):
    found = _run(impl.name, "stall", runtime_dir)
    assert found["child_exit"] == 0
    # The stall went on through the fork: not ended by it, started once,
    # ended once, when the loop ran again.
    assert not found["ended_before_release"]
    assert found["ended"]
    assert found["kinds"] == ["started", "ended"]
    # Its length is the wall time the loop was blocked, fork included.
    assert found["duration"][0] >= found["held_since_start"] - 0.05
