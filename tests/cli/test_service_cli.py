"""``loopwatch run`` where real services run: signals, every process of the
service (fork, multiprocessing spawn and forkserver, subprocess, uvicorn
``--workers``, gunicorn with UvicornWorker), ``--summary-file``, the names
in every line.

Every process is started in its own session and its whole group is killed
when the test ends, whatever happened; tests wait on output lines, never
on sleeps; ports come from the OS (``--port 0``, ``-b 127.0.0.1:0``)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.integration

WAIT = 20.0  # seconds any one expected line may take on a loaded machine

# Signals a test sends get their default disposition in the child, whatever
# this process inherited: under nohup SIGHUP is ignored, and an ignored
# disposition survives exec, so a plain program would not end by it either.
_DEFAULT_SIGNALS = ("import os, signal, sys\n"
                    "for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):\n"
                    "    signal.signal(s, signal.SIG_DFL)\n"
                    "os.execvp(sys.argv[1], sys.argv[1:])\n")


class Proc:
    """A process whose stdout and stderr lines are collected by threads."""

    def __init__(self, args, cwd, env=None):
        self.popen = subprocess.Popen(
            [sys.executable, "-c", _DEFAULT_SIGNALS, *args], cwd=cwd, env=dict(os.environ, **(env or {})), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self.popen.pid
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.popen.stdout, self.out),
                                               (self.popen.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines):
        for line in stream:
            with self._cond:
                lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            lines.append(None)  # end of stream
            self._cond.notify_all()

    def wait_for(self, predicate, what, timeout=WAIT):
        """Wait until predicate(stdout_lines, stderr_lines) is true."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: predicate([x for x in self.out if x is not None],
                                  [x for x in self.err if x is not None]), timeout)
        assert ok, f"timed out waiting for {what}\n{self.text()}"

    def stderr_match(self, pattern, count=1, what=None):
        regex = re.compile(pattern)
        found: list[re.Match] = []

        def check(out, err):
            found[:] = [m for line in err if (m := regex.search(line))]
            return len(found) >= count

        self.wait_for(check, what or pattern)
        return found

    def finish(self, timeout=WAIT):
        """Wait for the end; returns the exit status (-N: killed by signal N)."""
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def text(self):
        out = "\n".join(x for x in self.out if x is not None)
        err = "\n".join(x for x in self.err if x is not None)
        return f"--- stdout\n{out}\n--- stderr\n{err}"

    @property
    def stderr(self):
        return "\n".join(x for x in self.err if x is not None)

    @property
    def stdout(self):
        return "\n".join(x for x in self.out if x is not None)

    def kill(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the whole session: workers too
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.popen.stdout, self.popen.stderr):
            stream.close()


@pytest.fixture
def start(tmp_path):
    """start(args, cwd=tmp_path, env=None): a Proc killed (with its group) at teardown."""
    procs: list[Proc] = []

    def _start(args, cwd=None, env=None):
        proc = Proc(args, cwd or tmp_path, dict(env or {}, XDG_RUNTIME_DIR=str(tmp_path)))
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.kill()


def loopwatch_run(*args):
    return [sys.executable, "-m", "loopwatch", "run", "--no-status", *args]


def summary_header(pid, loops=1, reason=None):
    text = f"loopwatch[pid {pid}]: summary of {loops} event loop" + ("" if loops == 1 else "s")
    return text + (f" ({reason})" if reason else "")


def stall_line(pid, function, loop=1, thread="MainThread"):
    return (rf"^loopwatch\[pid {pid} loop {loop} thread {thread}\]: event loop stall #\d+ "
            rf"in progress: .* in {function}\(\) at ")


# -- child processes ------------------------------------------------------------
CHILDREN = textwrap.dedent("""
    import asyncio, multiprocessing as mp, os, subprocess, sys, time

    def stuck_in_child():
        time.sleep(0.25)

    async def work():
        await asyncio.sleep(0.02)
        stuck_in_child()
        await asyncio.sleep(0.02)

    def child(tag):
        asyncio.run(work())
        print("child", tag, os.getpid(), flush=True)

    if __name__ == "__main__":
        asyncio.run(asyncio.sleep(0.02))
        for method in ("spawn", "forkserver", "fork"):
            p = mp.get_context(method).Process(target=child, args=(method,))
            p.start()
            p.join()
            assert p.exitcode == 0, (method, p.exitcode)
        code = ("import asyncio, os, time\\n"
                "def stuck_in_child():\\n    time.sleep(0.25)\\n"
                "async def work():\\n    await asyncio.sleep(0.02)\\n    stuck_in_child()\\n"
                "asyncio.run(work())\\nprint('child subprocess', os.getpid(), flush=True)\\n")
        subprocess.run([sys.executable, "-c", code], check=True)
        pid = os.fork()
        if pid == 0:
            asyncio.run(work())
            print("child os._exit", os.getpid(), flush=True)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        print("fork status", os.waitstatus_to_exitcode(status), flush=True)
    """)


def _children(proc):
    return {tag: int(pid) for tag, pid in
            re.findall(r"^child (\S+) (\d+)$", proc.stdout, re.M)}


@pytest.mark.timeout(60)
def test_every_child_process_is_watched_and_summarized(tmp_path, start):
    (tmp_path / "children.py").write_text(CHILDREN)
    proc = start(loopwatch_run("--stall-threshold", "0.05", "children.py"))
    assert proc.finish(45) == 0, proc.text()
    children = _children(proc)
    assert sorted(children) == ["fork", "forkserver", "os._exit", "spawn", "subprocess"], \
        proc.text()
    assert "fork status 3" in proc.stdout
    err = proc.stderr
    assert len(set(children.values()) | {proc.pid}) == 6
    for tag, pid in children.items():
        # its stall, live, named by its pid, and its own summary
        assert re.search(stall_line(pid, "stuck_in_child"), err, re.M), (tag, proc.text())
        reason = "left through os._exit" if tag in ("fork", "forkserver", "os._exit") else None
        assert summary_header(pid, 1, reason) + "\n" in err + "\n", (tag, proc.text())
        assert re.search(rf"^loopwatch\[pid {pid} loop 1 thread MainThread\]: "
                         r"asyncio\.unix_events\._UnixSelectorEventLoop: watched \d", err, re.M)
        assert err.count(f"loopwatch[pid {pid}]: summary") == 1, (tag, proc.text())
    assert summary_header(proc.pid) + "\n" in err + "\n"
    # the forkserver and multiprocessing's helpers ran no loop: nothing from them
    pids = set(map(int, re.findall(r"^loopwatch\[pid (\d+)\]: summary", err, re.M)))
    assert pids == set(children.values()) | {proc.pid}, proc.text()


@pytest.mark.timeout(60)
def test_summary_file_per_pid(tmp_path, start):
    (tmp_path / "children.py").write_text(CHILDREN)
    folder = tmp_path / "summaries"
    folder.mkdir()
    proc = start(loopwatch_run("--stall-threshold", "0.05",
                               "--summary-file", "summaries/lw-{pid}.txt", "children.py"))
    assert proc.finish(45) == 0, proc.text()
    children = _children(proc)
    assert len(children) == 5, proc.text()
    # live lines stay on stderr; summaries are only in the files
    assert "summary of" not in proc.stderr and "lag histogram" not in proc.stderr
    assert re.search(stall_line(children["spawn"], "stuck_in_child"), proc.stderr, re.M)
    files = {int(m.group(1)): path for path in folder.iterdir()
             if (m := re.fullmatch(r"lw-(\d+)\.txt", path.name))}
    assert set(files) == set(children.values()) | {proc.pid}, sorted(os.listdir(folder))
    for pid, path in files.items():
        text = path.read_text()
        assert text.startswith(f"loopwatch[pid {pid}]: summary of 1 event loop"), text
        assert "lag histogram:" in text
        if pid != proc.pid:  # each child's own stall (a loaded machine may add some)
            assert re.search(r"\b[1-9]\d* stalls? \(longest", text), text


# -- signals --------------------------------------------------------------------
SERVE_FOREVER = textwrap.dedent("""
    import asyncio, os, signal, sys
    mode = sys.argv[1]
    if mode == "own-handler":
        def on_term(signum, frame):
            print("program's handler ran", flush=True)
            sys.exit(5)
        signal.signal(signal.SIGTERM, on_term)
    handler = signal.getsignal(signal.SIGTERM)
    print("disposition", getattr(handler, "__name__", handler), flush=True)

    async def main():
        if mode == "raise":           # as uvicorn does: handler, then default + re-raise
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            previous = signal.signal(signal.SIGTERM, lambda *a: loop.call_soon_threadsafe(stop.set))
            print("ready", flush=True)
            await stop.wait()
            signal.signal(signal.SIGTERM, previous)
            print("re-raising", flush=True)
            signal.raise_signal(signal.SIGTERM)
            print("not reached", flush=True)
        else:
            print("ready", flush=True)
            await asyncio.sleep(60)
    asyncio.run(main())
    """)


def _signal_run(start, tmp_path, args, mode, sig):
    proc = start([*args, "serve.py", mode])
    proc.wait_for(lambda out, err: "ready" in out, "ready")
    proc.popen.send_signal(sig)
    return proc, proc.finish()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode, sig", [("default", signal.SIGTERM), ("default", signal.SIGHUP),
                                       ("own-handler", signal.SIGTERM),
                                       ("raise", signal.SIGTERM)])
def test_signals_end_the_program_as_without_loopwatch(tmp_path, start, mode, sig):
    (tmp_path / "serve.py").write_text(SERVE_FOREVER)
    plain, plain_code = _signal_run(start, tmp_path, [sys.executable], mode, sig)
    watched, code = _signal_run(start, tmp_path, loopwatch_run(), mode, sig)
    assert code == plain_code, (plain.text(), watched.text())
    expected = {"default": -sig, "own-handler": 5, "raise": -sig}[mode]
    assert code == expected, watched.text()
    # the program sees the disposition it would see without loopwatch
    assert watched.out[0] == plain.out[0] == ("disposition on_term" if mode == "own-handler"
                                              else "disposition 0"), watched.text()
    assert [line for line in plain.out if line is not None] == \
        [line for line in watched.out if line is not None]
    header = summary_header(watched.pid, 1, None if mode == "own-handler"
                            else f"ended by {signal.Signals(sig).name}")
    assert header + "\n" in watched.stderr + "\n", watched.text()
    assert "lag histogram:" in watched.stderr


# -- real servers ---------------------------------------------------------------
APP = textwrap.dedent("""
    import os, time
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def legacy_lookup(seconds):
        time.sleep(seconds)

    async def block(request):
        legacy_lookup(float(request.query_params.get("s", "0.3")))
        return PlainTextResponse(str(os.getpid()))

    app = Starlette(routes=[Route("/block", block)])
    """)


def _get(port, path, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def _hit_every_worker(proc, port, workers):
    """A long blocking request, and once its worker is reported stalled
    (blocked: it accepts nothing), a short one, which another worker must
    take; again until each worker has answered. Returns their pids."""
    seen: set[int] = set()
    stalls = 0
    for _ in range(2 * workers):
        if len(seen) == workers:
            break
        answers: list[str] = []
        first = threading.Thread(target=lambda: answers.append(_get(port, "/block?s=1.0")))
        first.start()
        stalls = len(proc.stderr_match(r"\]: event loop stall #\d+ in progress", stalls + 1))
        answers.append(_get(port, "/block?s=0.3"))
        first.join(WAIT)
        seen.update(int(a) for a in answers)
        # the short request's stall too (both blocks are far over the threshold)
        stalls = len(proc.stderr_match(r"\]: event loop stall #\d+ in progress", stalls + 1))
    assert len(seen) == workers, (seen, proc.text())
    return seen


def _port(proc, pattern):
    (m,) = proc.stderr_match(pattern, what="the listening port")[:1]
    return int(m.group(1))


UVICORN_PORT = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"


@pytest.mark.timeout(60)
def test_uvicorn_sigterm_summary_and_exit_status(tmp_path, start):
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    (tmp_path / "app.py").write_text(APP)
    args = ["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0"]
    plain = start([sys.executable, *args])
    _port(plain, UVICORN_PORT)
    plain.popen.send_signal(signal.SIGTERM)
    plain_code = plain.finish()
    watched = start(loopwatch_run("--stall-threshold", "0.05", *args))
    port = _port(watched, UVICORN_PORT)
    assert _get(port, "/block?s=0.3") == str(watched.pid)
    watched.stderr_match(stall_line(watched.pid, "legacy_lookup"))
    watched.popen.send_signal(signal.SIGTERM)
    code = watched.finish()
    assert code == plain_code == -signal.SIGTERM, watched.text()
    assert summary_header(watched.pid, 1, "ended by SIGTERM") in watched.stderr, watched.text()
    assert re.search(rf"^loopwatch\[pid {watched.pid} loop 1 thread MainThread\]: \S+: watched ",
                     watched.stderr, re.M)


UVICORN_WORKERS = ["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0",
                   "--workers", "2"]


def _uvicorn_workers(tmp_path, start, run_args):
    """`uvicorn --workers 2` on APP under `loopwatch run <run_args>`, once
    both workers started: (the process, its port)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    (tmp_path / "app.py").write_text(APP)
    watched = start([sys.executable, "-m", "loopwatch", "run", *run_args, *UVICORN_WORKERS])
    port = _port(watched, UVICORN_PORT)
    watched.stderr_match(r"Application startup complete", count=2)
    _wait_listening(watched, port)
    return watched, port


def _wait_listening(proc, port):
    """With --workers, uvicorn's parent only binds the socket: the workers
    call listen() after logging "Application startup complete", and log
    nothing when they have. Until one has, a connection is refused (seen on
    a loaded machine), so connect until one is accepted."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
            return
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, proc.text()
            time.sleep(0.02)


@pytest.mark.timeout(60)
def test_uvicorn_workers_each_report_and_summarize(tmp_path, start):
    watched, port = _uvicorn_workers(tmp_path, start, ["--no-status", "--stall-threshold", "0.05"])
    workers = _hit_every_worker(watched, port, 2)
    assert watched.pid not in workers
    for pid in workers:
        watched.stderr_match(stall_line(pid, "legacy_lookup"), what=f"worker {pid}'s stall")
    watched.popen.send_signal(signal.SIGTERM)
    code = watched.finish()
    for pid in workers:
        assert summary_header(pid, 1, "ended by SIGTERM") in watched.stderr, watched.text()
        assert re.search(r"\b[1-9]\d* stalls? \(longest", watched.stderr)
    assert f"loopwatch[pid {watched.pid}]: no event loop ran" in watched.stderr

    plain = start([sys.executable, *UVICORN_WORKERS])
    _port(plain, UVICORN_PORT)
    plain.stderr_match(r"Application startup complete", count=2)
    plain.popen.send_signal(signal.SIGTERM)
    assert code == plain.finish(), watched.text()


def _sockets(tmp_path):
    folder = tmp_path / "loopwatch"
    return sorted(int(p.name[:-5]) for p in folder.glob("*.sock")) if folder.is_dir() else []


@pytest.mark.timeout(90)
def test_uvicorn_workers_each_answer_status_while_one_is_blocked(tmp_path, start):
    """Under `loopwatch run`, every worker serves its own status socket: an
    operator asks the blocked worker and gets its stall and frame."""
    watched, port = _uvicorn_workers(tmp_path, start, ["--stall-threshold", "0.05"])
    deadline = time.monotonic() + WAIT
    while len(_sockets(tmp_path)) < 3:  # the top process and both workers
        assert time.monotonic() < deadline, (_sockets(tmp_path), watched.text())
        time.sleep(0.02)
    workers = set(_sockets(tmp_path)) - {watched.pid}
    assert len(workers) == 2

    answers: list[str] = []
    blocker = threading.Thread(target=lambda: answers.append(_get(port, "/block?s=4", 30)))
    blocker.start()
    (m,) = watched.stderr_match(stall_line(r"(\d+)", "legacy_lookup"))[:1]
    blocked = int(m.group(1))
    assert blocked in workers
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    one = subprocess.run([sys.executable, "-m", "loopwatch", "status", str(blocked)],
                         capture_output=True, text=True, timeout=30, env=env)
    listing = subprocess.run([sys.executable, "-m", "loopwatch", "status"],
                             capture_output=True, text=True, timeout=30, env=env)
    blocker.join(WAIT)
    assert answers == [str(blocked)]
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"process {blocked}: ")
    assert "STALLED NOW: stall #" in one.stdout
    assert "legacy_lookup() at" in one.stdout, one.stdout
    rows = {int(r.split()[0]): r for r in listing.stdout.splitlines()[1:]}
    assert set(rows) == workers | {watched.pid}, listing.stdout
    assert " yes," in rows[blocked]

    watched.popen.send_signal(signal.SIGTERM)
    watched.finish()
    assert _sockets(tmp_path) == []  # every process removed its own socket


@pytest.mark.timeout(60)
def test_no_status_reaches_the_workers(tmp_path, start):
    """--no-status: no process of the service serves status."""
    watched, port = _uvicorn_workers(tmp_path, start, ["--no-status", "--stall-threshold", "0.05"])
    _hit_every_worker(watched, port, 2)  # both workers' loops are watched
    assert _sockets(tmp_path) == []
    watched.popen.send_signal(signal.SIGTERM)
    watched.finish()


@pytest.mark.timeout(60)
def test_gunicorn_uvicorn_workers(tmp_path, start):
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn.workers")
    pytest.importorskip("starlette")
    (tmp_path / "app.py").write_text(APP)
    args = ["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
            "-b", "127.0.0.1:0", "--control-socket", str(tmp_path / "gunicorn.ctl"), "app:app"]
    watched = start(loopwatch_run("--stall-threshold", "0.05", *args))
    port = _port(watched, r"Listening at: http://127\.0\.0\.1:(\d+)")
    watched.stderr_match(r"Application startup complete", count=2)
    workers = _hit_every_worker(watched, port, 2)
    for pid in workers:
        watched.stderr_match(stall_line(pid, "legacy_lookup"), what=f"worker {pid}'s stall")
    watched.popen.send_signal(signal.SIGTERM)
    code = watched.finish()
    for pid in workers:
        assert summary_header(pid, 1, "ended by SIGTERM") in watched.stderr, watched.text()

    plain = start([sys.executable, *args])
    _port(plain, r"Listening at: http://127\.0\.0\.1:(\d+)")
    plain.stderr_match(r"Application startup complete", count=2)
    plain.popen.send_signal(signal.SIGTERM)
    assert code == plain.finish(), watched.text()


def test_bootstrap_chains_an_existing_sitecustomize(tmp_path, start):
    """A sitecustomize the program's environment had still runs in its
    children, after loopwatch's."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['THEIRS_RAN'] = 'yes'\n")
    (tmp_path / "parent.py").write_text(textwrap.dedent("""
        import subprocess, sys
        code = ("import os, sys; print('theirs', os.environ.get('THEIRS_RAN'), "
                "'loopwatch', 'loopwatch.cli.process' in sys.modules, flush=True)")
        subprocess.run([sys.executable, "-c", code], check=True)
        """))
    proc = start(loopwatch_run("parent.py"), env={"PYTHONPATH": str(site)})
    assert proc.finish() == 0, proc.text()
    assert "theirs yes loopwatch True" in proc.stdout, proc.text()


def test_child_environment_is_documented_json():
    import json

    from loopwatch.cli import process

    env = process.child_environment({"resolution": 0.005, "stall_threshold": 0.05,
                                     "capture_stack": False, "summary_file": "s-{pid}.txt",
                                     "status": False},
                                    {"PYTHONPATH": "/x"})
    assert env["LOOPWATCH_RUN"] == "1"
    assert json.loads(env["LOOPWATCH_RUN_OPTIONS"]) == {
        "resolution": 0.005, "stall_threshold": 0.05, "capture_stack": False,
        "summary_file": os.path.abspath("s-{pid}.txt"), "status": False}
    assert env["PYTHONPATH"] == os.pathsep.join([process.BOOTSTRAP_DIR, "/x"])
    assert os.path.isfile(os.path.join(process.BOOTSTRAP_DIR, "sitecustomize.py"))
