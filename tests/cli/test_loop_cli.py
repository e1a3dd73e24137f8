"""``loopwatch run``: a program's loops watched without changing its code,
live stall lines on stderr, a summary at exit. Subprocesses, with timeouts;
every combination of implementation and loop."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap

import pytest

from loop_support import REPO, impl_env


APP = os.path.join(REPO, "examples", "blocking_app.py")


class _Result(subprocess.CompletedProcess):
    pid: int


def _loopwatch(args, cwd=REPO, impl_name="native", timeout=60):
    env = dict(os.environ, **impl_env(impl_name))
    with subprocess.Popen([sys.executable, "-m", "loopwatch", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=cwd, env=env) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
    result = _Result(proc.args, proc.returncode, out, err)
    result.pid = proc.pid
    return result


def _run_apps(combos):
    procs = {}
    for impl_name, kind in combos:
        args = [sys.executable, "-m", "loopwatch", "run", APP, "--duration", "2.4",
                "--block", "0.25"]
        if kind == "uvloop":
            args.append("--uvloop")
        procs[impl_name, kind] = subprocess.Popen(
            args, cwd=REPO, env=dict(os.environ, **impl_env(impl_name)), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs = {}
    try:
        for key, proc in procs.items():
            outputs[key] = (*proc.communicate(timeout=60), proc.returncode)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def test_blocking_app_shows_live_stalls_and_an_exit_summary():
    """The README's main command, on both implementations and both loops."""
    combos = [(impl, kind) for impl in ("native", "python") for kind in ("asyncio", "uvloop")]
    outputs = {}
    # two at a time: one CPU-bound app per core of a 2-core machine
    for pair in (combos[:2], combos[2:]):
        outputs.update(_run_apps(pair))
    for (impl_name, kind), (out, err, code) in outputs.items():
        where = f"[{impl_name}/{kind}]\n{err}"
        assert code == 0, where
        assert "blocking_app: served" in out, where
        lines = err.splitlines()
        live = [line for line in lines
                if re.match(r"loopwatch\[pid \d+ loop 1 thread MainThread\]: event loop stall", line)]
        # The app's two blocking calls, in order, each reported while it
        # went on and again when it ended. A machine loaded enough to keep
        # the loop off a core for the threshold adds real stalls of its
        # own: they are reported too, and counted in the summary.
        started = {int(m.group(1)): line for line in live
                   if (m := re.search(r"stall #(\d+) in progress", line))}
        ended = {int(m.group(1)) for line in live
                 if (m := re.search(r"stall #(\d+) ended after", line))}
        assert sorted(ended) == sorted(started) == list(range(1, len(started) + 1)), where
        blamed = [n for n, line in sorted(started.items())
                  if "in render_report() at" in line or "in legacy_db_lookup() at" in line]
        assert len(blamed) == 2, where
        assert "in render_report() at" in started[blamed[0]], where
        assert "in legacy_db_lookup() at" in started[blamed[1]], where
        summary = err[err.index("]: summary of 1 event loop\n"):]
        assert "p50" in summary and "p99.9" in summary and "lag histogram:" in summary, where
        assert f"{len(started)} stalls (longest" in summary, where
        assert "(thread_cpu)" in summary, where
        assert ("uvloop.Loop" in summary) == (kind == "uvloop"), where
        assert summary.count("|") >= 12, where  # six histogram bars


def test_run_module_with_arguments_and_exit_status(tmp_path, impl, loop_kind):
    (tmp_path / "stallmod.py").write_text(textwrap.dedent(f"""
        import asyncio, sys, time
        def stuck_in_sync_code():
            time.sleep(0.2)
        async def main():
            await asyncio.sleep(0.05)
            stuck_in_sync_code()
            await asyncio.sleep(0.05)
        print("argv", sys.argv[1:])
        if "{loop_kind}" == "uvloop":
            import uvloop
            uvloop.run(main())
        else:
            asyncio.run(main())
        sys.exit(7)
        """))
    result = _loopwatch(["run", "--resolution", "0.005", "--stall-threshold=0.05", "-m",
                         "stallmod", "a", "--b"], cwd=tmp_path, impl_name=impl.name)
    assert result.returncode == 7, result.stderr
    assert "argv ['a', '--b']" in result.stdout
    assert "in stuck_in_sync_code() at" in result.stderr
    assert "resolution 5 ms, stall threshold 50 ms" in result.stderr
    # one stall from the program; a loaded machine may add its own
    assert re.search(r"\b\d+ stalls? \(longest", result.stderr), result.stderr


def test_every_loop_is_watched(tmp_path, impl, loop_kind):
    """Two loops one after the other, and one in a thread: three summaries."""
    script = tmp_path / "loops.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, threading
        def new_loop():
            if "{loop_kind}" == "uvloop":
                import uvloop
                return uvloop.new_event_loop()
            return asyncio.new_event_loop()
        def run(coro):
            loop = new_loop()
            try:
                return loop.run_until_complete(coro)
            finally:
                loop.close()
        run(asyncio.sleep(0.05))
        run(asyncio.sleep(0.05))
        worker = threading.Thread(target=run, args=(asyncio.sleep(0.05),), name="worker")
        worker.start()
        worker.join()
        """))
    result = _loopwatch(["run", str(script)], impl_name=impl.name)
    assert result.returncode == 0, result.stderr
    for n, thread in ((1, "MainThread"), (2, "MainThread"), (3, "worker")):
        assert re.search(rf"^loopwatch\[pid {result.pid} loop {n} thread {thread}\]: \S+: watched ",
                         result.stderr, re.M), result.stderr
    assert f"loopwatch[pid {result.pid}]: summary of 3 event loops" in result.stderr
    assert " loop 4 " not in result.stderr
    assert "0 stalls" in result.stderr


def test_program_that_raises_still_gets_its_summary(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import asyncio\nasyncio.run(asyncio.sleep(0.02))\nraise ValueError('boom')\n")
    result = _loopwatch(["run", str(script)])
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr
    assert "]: summary of 1 event loop" in result.stderr


def test_program_without_a_loop(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text("print('hello')\n")
    result = _loopwatch(["run", str(script)])
    assert result.returncode == 0
    assert result.stdout == "hello\n"
    assert "no event loop ran" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--resolution", "0", "x.py"], "resolution must be > 0"),
        (["run", "--resolution", "abc", "x.py"], "expects a number of seconds"),
        (["run", "--stall-threshold", "nan", "x.py"], "finite"),
        (["run", "--resolution", "0.1", "--stall-threshold", "0.05", "x.py"],
         "must not be below the resolution"),
        (["run", "--bogus", "x.py"], "unknown option --bogus"),
        (["run"], "no script or -m module given"),
        (["run", "-m"], "-m expects a module name"),
        (["run", "does-not-exist.py"], "no such file"),
        (["frobnicate"], "unknown command"),
    ],
)
def test_usage_errors_exit_with_status_2(args, message):
    result = _loopwatch(args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_help():
    result = _loopwatch(["run", "--help"])
    assert result.returncode == 0
    assert result.stdout.startswith("usage: loopwatch run")
    assert _loopwatch([]).returncode == 2


def test_console_script_is_declared():
    from loopwatch.cli.main import main

    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="loopwatch")
    assert entry.load() is main


def test_no_stack_option(tmp_path, impl, loop_kind):
    script = tmp_path / "stall.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, time
        def stuck():
            time.sleep(0.15)
        async def main():
            await asyncio.sleep(0.02)
            stuck()
            await asyncio.sleep(0.02)
        if "{loop_kind}" == "uvloop":
            import uvloop
            uvloop.run(main())
        else:
            asyncio.run(main())
        """))
    result = _loopwatch(["run", "--no-stack", "--stall-threshold", "0.05", str(script)],
                        impl_name=impl.name)
    assert result.returncode == 0, result.stderr
    (started,) = [line for line in result.stderr.splitlines() if "in progress" in line]
    assert "stuck()" not in started and "stack not captured" not in started
    assert "ended after" in result.stderr


def test_forked_child_summarizes_only_its_own_loops(tmp_path, impl, loop_kind):
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os, sys
        def run(coro):
            if "{loop_kind}" == "uvloop":
                import uvloop
                return uvloop.run(coro)
            return asyncio.run(coro)
        run(asyncio.sleep(0.02))
        pid = os.fork()
        if pid == 0:
            run(asyncio.sleep(0.02))
            print("child done", flush=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent done", os.waitstatus_to_exitcode(status), flush=True)
        """))
    result = _loopwatch(["run", str(script)], impl_name=impl.name)
    assert result.returncode == 0, result.stderr
    assert "child done" in result.stdout and "parent done 0" in result.stdout
    # one summary per process, each of its own single loop, headed by its pid
    pids = re.findall(r"^loopwatch\[pid (\d+)\]: summary of 1 event loop$", result.stderr, re.M)
    assert len(set(pids)) == 2, result.stderr
    for pid in pids:
        assert f"loopwatch[pid {pid} loop 1 thread MainThread]: " in result.stderr
    assert " loop 2 " not in result.stderr


GIL_HOLDING_APP = textwrap.dedent("""
    import asyncio, ctypes, sys

    def call_into_c():
        ctypes.PyDLL(None).sleep(2)  # a C call that keeps the GIL: no Python runs

    async def main():
        await asyncio.sleep(0.1)
        call_into_c()
        print("UNBLOCKED", file=sys.stderr, flush=True)

    asyncio.run(main())
    """)


@pytest.mark.native_only
@pytest.mark.parametrize("status", [True, False], ids=["status", "no-status"])
def test_a_stall_holding_the_gil_gets_its_line_while_it_goes_on(tmp_path, runtime_dir, status):
    """The Python reporter cannot run while C code holds the GIL: the native
    watchdog writes the stall's line during the stall, under the same
    process/loop/thread prefix, with status served or not."""
    (tmp_path / "app.py").write_text(GIL_HOLDING_APP)
    args = ["run", *([] if status else ["--no-status"]), str(tmp_path / "app.py")]
    result = _loopwatch(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    prefix = f"loopwatch[pid {result.pid} loop 1 thread MainThread]"
    watchdog = [i for i, line in enumerate(lines) if line.startswith(
        f"{prefix}: event loop stall #1 in progress: blocked for ")
        and line.endswith("reported by the native watchdog")]
    assert len(watchdog) == 1, result.stderr
    assert watchdog[0] < lines.index("UNBLOCKED"), result.stderr  # while it went on
    assert re.search(r"blocked for \d+\.\d{3} s \(threshold 0\.100 s\)", lines[watchdog[0]])
    assert any(line.startswith(f"{prefix}: event loop stall #1 ended after ")
               for line in lines[lines.index("UNBLOCKED"):]), result.stderr
    assert list(runtime_dir.iterdir()) in ([], [runtime_dir / "loopwatch"])
    if (runtime_dir / "loopwatch").exists():
        assert not list((runtime_dir / "loopwatch").glob("*.sock"))  # removed at exit
