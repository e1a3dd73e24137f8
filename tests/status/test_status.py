"""The status socket answers while the loop is blocked: in Python code (both
implementations, both loops) and in native code that holds the GIL (the
native core: the answer and the stall's stack come from a thread that
never needs the GIL). Clients are other processes, as an operator's CLI is.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from loop_support import REPO, impl_env

import loopwatch
from loopwatch.status.client import StatusUnavailable, query_status

TARGET = os.path.join(REPO, "tests", "status", "status_target.py")
# Wide enough for a 2-core machine running twice its cores of other work;
# the benchmark (benchmarks/status/bench_status.py) measures the real figure.
ANSWER_BOUND = 1.5


class Target:
    """status_target.py in a subprocess, read line by line."""

    def __init__(self, impl_name: str, loop_kind: str, block: str, seconds: float) -> None:
        env = dict(os.environ, **impl_env(impl_name))
        self.proc = subprocess.Popen(
            [sys.executable, TARGET, loop_kind, block, str(seconds)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        ready = self.expect("READY")
        self.path = ready.split()[1]
        self.pid = self.proc.pid

    def expect(self, word: str) -> str:
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"expected {word}, got {line!r}; stderr:\n{err}")
        return line

    def finish(self) -> str:
        _, err = self.proc.communicate(input="", timeout=60)
        assert self.proc.returncode == 0, err
        return err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def target(runtime_dir):
    started = []

    def start(*args):
        t = Target(*args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def _native_dumper() -> bool:
    from loopwatch._selector import load_implementation

    return load_implementation("native").StatusCore.stack_dumper_available()


def _query_during_block(t: Target, seconds: float) -> list[tuple[float, dict]]:
    """Ask repeatedly from now until the block has surely gone on for
    `seconds`; every answer with its latency."""
    answers = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        doc = query_status(t.pid, timeout=5.0)
        answers.append((time.monotonic() - start, doc))
    return answers


def _wait_stalled(t: Target, so_far: float) -> None:
    """Until status shows the loop stalled for more than `so_far` seconds
    (polled: a loaded machine may take longer than any fixed pause)."""
    deadline = time.monotonic() + 10.0
    while True:
        live = query_status(t.pid, timeout=5.0)["live"]["loops"]
        if live and live[0]["stalled"] and live[0]["stall_so_far_s"] > so_far:
            return
        assert time.monotonic() < deadline, f"no stall of {so_far} s shown: {live}"
        time.sleep(0.01)


def _python_frames(doc: dict) -> list[str]:
    loop = doc["loops"][0]
    stall = loop.get("current_stall") or {}
    return [f["function"] for f in stall.get("stack") or []]


def test_status_answers_during_a_python_stall(impl, loop_kind, target):
    t = target(impl.name, loop_kind, "python", 4.0)
    t.expect("BLOCKING")
    _wait_stalled(t, 0.2)  # past its threshold and reported
    answers = _query_during_block(t, 1.5)
    t.expect("UNBLOCKED")
    t.finish()
    assert len(answers) >= 3
    latencies = sorted(a for a, _ in answers)
    assert latencies[-1] < ANSWER_BOUND, latencies
    for _, doc in answers:
        assert doc["pid"] == t.pid
        assert doc["served_by"] == impl.name
        live = doc["live"]["loops"][0]
        assert live["stalled"] is True
        assert live["stall_so_far_s"] > 0.2
    # The Python side answered (it gets the GIL between bytecodes) and
    # names the blocking function.
    assert any("block_in_python" in _python_frames(doc) for _, doc in answers)
    assert any(doc["loops"][0]["stalled"] for _, doc in answers)


@pytest.mark.native_only
def test_status_answers_during_a_native_stall_holding_the_gil(request, loop_kind, target):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    t = target("native", loop_kind, "native", 4)
    t.expect("BLOCKING")
    _wait_stalled(t, 0.3)  # past its threshold and reported
    answers = _query_during_block(t, 1.5)
    t.expect("UNBLOCKED")
    err = t.finish()
    assert len(answers) >= 3
    latencies = sorted(a for a, _ in answers)
    assert latencies[-1] < ANSWER_BOUND, latencies
    for _, doc in answers:
        assert doc["served_by"] == "native"
        assert doc["live"]["python_answered"] is False  # no Python code could run
        live = doc["live"]["loops"][0]
        assert live["stalled"] is True and live["stall_so_far_s"] > 0.3
        if _native_dumper():
            assert "block_in_native" in (live["stack_text"] or ""), live
        else:
            assert live["stack_text"] is None and "unavailable" in live["stack_error"]
        # The registry, read from its C table by the status thread (the
        # published part may be older): its three sessions, none stuck.
        table = doc["live"]["sessions"][0]["table"]
        assert table["total"] == 3 and table["counts"]["processing"] == 3, table
        assert table["stuck_count"] == 0 and table["stuck"] == []
    # The native watchdog's line, written while the stall went on.
    assert "reported by the native watchdog" in err
    if _native_dumper():
        assert "block_in_native" in err.split("reported by the native watchdog", 1)[1]


def test_hundred_concurrent_clients_while_the_loop_is_blocked(impl, target):
    t = target(impl.name, "asyncio", "python", 5.0)
    t.expect("BLOCKING")
    _wait_stalled(t, 0.2)  # past its threshold and reported
    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        docs = list(pool.map(lambda _: query_status(t.pid, timeout=10.0), range(100)))
    t.expect("UNBLOCKED")
    t.finish()
    assert len(docs) == 100
    assert all(d["pid"] == t.pid and d["live"]["loops"][0]["stalled"] for d in docs)


def test_silent_and_garbage_clients_change_nothing(impl, target):
    t = target(impl.name, "asyncio", "none", 0)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(t.path)
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(t.path)
    garbage.sendall(os.urandom(4096) + b"\x00\xff{]\n" * 100)
    # Each gets the document (and nothing it sent is read) ...
    for s in (silent, garbage):
        s.settimeout(10)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert json.loads(data)["pid"] == t.pid
        s.close()
    # ... a client that hangs up at once neither ...
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(t.path)
        s.close()
    # ... and the process still answers and exits cleanly.
    assert query_status(t.pid, timeout=5.0)["pid"] == t.pid
    t.finish()


def test_socket_is_private_and_removed_at_exit(impl, target, runtime_dir):
    t = target(impl.name, "asyncio", "none", 0)
    folder = os.path.dirname(t.path)
    assert folder == str(runtime_dir / "loopwatch")
    assert t.path == loopwatch.status_socket_path(t.pid)
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert os.stat(t.path).st_mode & 0o777 == 0o600
    assert os.stat(t.path).st_uid == os.getuid()
    t.finish()
    assert not os.path.exists(t.path)


def test_unsafe_folders_are_refused(runtime_dir):
    from loopwatch.status.paths import ensure_status_folder

    folder = runtime_dir / "loopwatch"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with pytest.raises(loopwatch.StatusFolderError, match="0755"):
        ensure_status_folder()
    folder.rmdir()
    elsewhere = runtime_dir / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)
    with pytest.raises(loopwatch.StatusFolderError, match="symlink"):
        ensure_status_folder()
    folder.unlink()
    folder.write_text("not a folder")
    with pytest.raises(loopwatch.StatusFolderError, match="not a directory"):
        ensure_status_folder()


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder owned by another user needs root")
def test_a_folder_owned_by_another_user_is_refused(runtime_dir):
    from loopwatch.status.paths import ensure_status_folder

    folder = runtime_dir / "loopwatch"
    folder.mkdir(mode=0o700)
    os.chown(folder, 4242, 4242)
    with pytest.raises(loopwatch.StatusFolderError, match="owned by uid 4242"):
        ensure_status_folder()
    # And the server refuses to start there, with the same clear error.
    from loopwatch.status.server import StatusServer

    with pytest.raises(loopwatch.StatusFolderError):
        StatusServer().start()


def test_stale_sockets_are_removed(runtime_dir):
    from loopwatch.status.paths import ensure_status_folder, remove_stale_sockets

    ensure_status_folder()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    path = loopwatch.status_socket_path(pid)
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # bound, never listening, process gone: stale
    with pytest.raises(StatusUnavailable) as info:
        query_status(pid, timeout=2.0)
    assert info.value.reason == "refused" and info.value.stale
    assert not os.path.exists(path)
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    assert remove_stale_sockets() == [pid]
    assert not os.path.exists(path)


def test_a_process_that_does_not_answer_times_out(runtime_dir):
    from loopwatch.status.paths import ensure_status_folder

    ensure_status_folder()
    path = loopwatch.status_socket_path(os.getpid())
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)  # accepts (the kernel does), never answers
    try:
        start = time.monotonic()
        with pytest.raises(StatusUnavailable, match="did not answer within 0.3 s") as info:
            query_status(timeout=0.3)
        assert info.value.reason == "timeout"
        assert time.monotonic() - start < 5
    finally:
        listener.close()
        os.unlink(path)


FORK_SCRIPT = r"""
import asyncio, os, sys, loopwatch
from loopwatch.status import server as status_server

async def main():
    async with loopwatch.Diagnostics(liveness_interval=5.0) as diag:
        path = diag.status_path
        pid = os.fork()
        if pid == 0:
            # The child neither serves nor removes the parent's socket.
            ok = status_server.current_server() is None and os.path.exists(path)
            os._exit(0 if ok else 3)
        _, code = os.waitpid(pid, 0)
        doc = await asyncio.get_running_loop().run_in_executor(None, loopwatch.query_status)
        print(os.waitstatus_to_exitcode(code), doc["pid"] == os.getpid(), os.path.exists(path))
    print(os.path.exists(path))

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_leaves_the_parents_socket_alone(impl, runtime_dir):
    run = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, **impl_env(impl.name)), cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "True", "True", "False"], run.stdout + run.stderr
