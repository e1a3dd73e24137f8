"""``loopwatch status``: the list, one process, --json, --timeout, and
``loopwatch run`` serving status for the program it runs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from loop_support import REPO, impl_env

TARGET = os.path.join(REPO, "tests", "status", "status_target.py")


def _loopwatch(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "loopwatch", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def blocked_target(runtime_dir):
    proc = subprocess.Popen([sys.executable, TARGET, "asyncio", "python", "6"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().startswith("READY")
    assert proc.stdout.readline().startswith("BLOCKING")
    # Wait for the stall to be shown with its frame (an event, not a sleep:
    # on a loaded machine the reporter may take longer than any fixed pause).
    from loopwatch import query_status

    deadline = time.monotonic() + 4.0  # the block lasts 6 s
    while "block_in_python" not in json.dumps(query_status(proc.pid, timeout=2.0)):
        assert time.monotonic() < deadline, "the stall's frame was never published"
        time.sleep(0.02)
    yield proc
    proc.kill()
    proc.communicate(timeout=30)


def test_status_of_one_process_while_its_loop_is_blocked(blocked_target):
    pid = blocked_target.pid
    run = _loopwatch("status", str(pid))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.startswith(f"process {pid}: ")
    assert "STALLED NOW: stall #1 for" in out
    assert "block_in_python() at" in out  # the blocking frame, named
    assert "sessions: 3 (processing 3); stuck: 0" in out
    assert "last liveness line" in out
    as_json = _loopwatch("status", str(pid), "--json")
    doc = json.loads(as_json.stdout)
    assert doc["pid"] == pid and doc["live"]["loops"][0]["stalled"] is True


@pytest.mark.native_only
def test_a_native_stall_names_its_frame_as_a_python_stall_does(runtime_dir):
    """A C call holding the GIL: only the native thread answers, and the
    stack it reads is shown in the same ``f() at file:line`` form."""
    proc = subprocess.Popen([sys.executable, TARGET, "asyncio", "native", "4"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **impl_env("native")})
    try:
        assert proc.stdout.readline().startswith("READY")
        assert proc.stdout.readline().startswith("BLOCKING")
        from loopwatch import query_status

        deadline = time.monotonic() + 3.0  # the block lasts 4 s
        while query_status(proc.pid, timeout=2.0)["live"]["python_answered"]:
            assert time.monotonic() < deadline, "no native-served document during the block"
            time.sleep(0.02)
        # The registry is read from its C table by the status thread.
        out = _loopwatch("status", str(proc.pid)).stdout
        assert "sessions: 3 (processing 3); stuck: 0; read live from the native table" in out, out
        while not query_status(proc.pid, timeout=2.0)["live"]["loops"][0].get("stack_text"):
            if time.monotonic() > deadline:
                pytest.skip("no native stack dumper on this build")
            time.sleep(0.02)
        out = _loopwatch("status", str(proc.pid)).stdout
        assert "read without the GIL" in out
        assert re.search(r"block_in_native\(\) at \S*status_target\.py:\d+", out), out
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_dumped_frame_line_reads_like_a_published_one():
    from loopwatch.cli.status import _faulthandler_frame

    assert _faulthandler_frame('  File "/srv/app.py", line 12 in handler') == "handler() at /srv/app.py:12"
    escaped = _faulthandler_frame('  File "x\x1b[2J.py", line ??? in f')
    assert escaped.startswith("f() at ") and "\x1b" not in escaped and "\\x1b" in escaped
    assert _faulthandler_frame("  <truncated rest of calls>") == "<truncated rest of calls>"


def test_status_lists_every_watched_process(blocked_target, runtime_dir):
    run = _loopwatch("status")
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["PID", "COMMAND", "LAG", "P99", "STALLED", "NOW", "STUCK"]
    (row,) = [r for r in rows if r.split()[0] == str(blocked_target.pid)]
    assert "status_target.py" in row and "yes," in row
    docs = json.loads(_loopwatch("status", "--json").stdout)
    assert [d["pid"] for d in docs] == [blocked_target.pid]


def test_no_answer_is_a_clear_message_and_status_1(runtime_dir):
    from loopwatch.status.paths import ensure_status_folder

    ensure_status_folder()
    mute = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys, loopwatch; s = socket.socket(socket.AF_UNIX); "
        "s.bind(loopwatch.status_socket_path()); s.listen(1); print('up', flush=True); "
        "sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert mute.stdout.readline() == "up\n"
        start = time.monotonic()
        run = _loopwatch("status", str(mute.pid), "--timeout", "0.5")
        assert run.returncode == 1
        assert run.stderr.strip() == (f"loopwatch status: process {mute.pid} did not answer "
                                      "within 0.5 s")
        assert time.monotonic() - start < 30
        listing = _loopwatch("status", "--timeout=0.5")
        assert listing.returncode == 1 and "(no answer: timeout)" in listing.stdout
    finally:
        mute.kill()
        mute.communicate(timeout=30)
        os.unlink(os.path.join(str(runtime_dir), "loopwatch", f"{mute.pid}.sock"))


def test_unknown_pid_and_bad_options(runtime_dir):
    run = _loopwatch("status", "999999999")
    assert run.returncode == 1 and "serves no status" in run.stderr
    for args, message in ((["--timeout", "0"], "positive"), (["--timeout", "x"], "number"),
                          (["abc"], "PID must be a positive integer"), (["--nope"], "unknown")):
        run = _loopwatch("status", *args)
        assert run.returncode == 2 and message in run.stderr, run.stderr
    none = _loopwatch("status")
    assert none.returncode == 0 and "no process of this user serves" in none.stdout


@pytest.mark.parametrize("no_status", [False, True])
def test_loopwatch_run_serves_status_unless_told_not_to(impl, runtime_dir, tmp_path, no_status):
    app = tmp_path / "app.py"
    app.write_text(
        "import asyncio, os, sys, loopwatch\n"
        "async def main():\n"
        "    await asyncio.sleep(0.3)\n"
        "    try:\n"
        "        doc = await asyncio.get_running_loop().run_in_executor(\n"
        "            None, loopwatch.query_status)\n"
        "        print('ANSWER', doc['pid'] == os.getpid(), len(doc['loops']))\n"
        "    except loopwatch.StatusUnavailable as exc:\n"
        "        print('NONE', exc.reason)\n"
        "asyncio.run(main())\n")
    args = ["run", *(["--no-status"] if no_status else []), str(app)]
    run = subprocess.run([sys.executable, "-m", "loopwatch", *args], capture_output=True,
                         text=True, timeout=60, cwd=REPO, env=dict(os.environ, **impl_env(impl.name)))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("NONE no_socket" if no_status else "ANSWER True 1")
    assert os.listdir(runtime_dir / "loopwatch") == [] if (runtime_dir / "loopwatch").exists() else True


def test_a_loop_only_the_sampler_knows_is_shown_with_its_stall():
    """The Python part was published before the loop was added and no Python
    code ran since: the report still shows the loop from the live figures."""
    from loopwatch.cli.status import format_process

    doc = {"pid": 7, "argv": ["app.py"], "served_by": "native", "published_age_s": 3.0,
           "loops": [], "live": {"python_answered": False, "loops": [{
               "id": 1, "name": "MainThread", "heartbeat_age_s": 2.5, "stalled": True,
               "stall_id": 4, "stall_so_far_s": 2.4,
               "stack_text": 'Stack (most recent call first):\n  File "/srv/app.py", line 9 in spin\n'}]}}
    out = format_process(doc)
    assert "no loop watched" not in out
    assert "loop 1: MainThread (heartbeat 2.50 s ago)" in out
    assert "STALLED NOW: stall #4 for 2.40 s so far" in out
    assert "spin() at /srv/app.py:9" in out
