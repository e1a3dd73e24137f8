"""The pytest plugin, end to end: real pytest runs (pytest-asyncio, anyio,
asyncio.run) in a subprocess, on both implementations where it matters.

Blocking tests block 0.3 s against a 0.1 s limit, and passing ones 0.05 s:
margins a loaded 2-core machine keeps. Each scenario is one subprocess run
of many cases, to keep the module's wall time down.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""

# One file, every way a loop runs in a test and every way to block it.
CASES = '''
import asyncio
import ctypes
import time

import pytest
import pytest_asyncio


def blocking_helper(seconds):
    time.sleep(seconds)


async def fetch_and_parse():
    await asyncio.sleep(0)
    blocking_helper(0.3)


def spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@pytest.mark.asyncio
async def test_blocks():
    await fetch_and_parse()


@pytest.mark.asyncio
async def test_short_block_passes():
    time.sleep(0.05)


@pytest_asyncio.fixture
async def slow_setup():
    blocking_helper(0.3)
    yield


@pytest.mark.asyncio
async def test_fixture_blocks(slow_setup):
    pass


@pytest_asyncio.fixture
async def slow_teardown():
    yield
    spin(0.3)


@pytest.mark.asyncio
async def test_teardown_blocks(slow_teardown):
    pass


@pytest.mark.asyncio
async def test_cpu_bound():
    await asyncio.sleep(0)
    spin(0.3)


@pytest.mark.asyncio
async def test_gil_holding_native_call():
    ctypes.PyDLL(None).usleep(300000)


def test_asyncio_run_in_sync_test():
    async def main():
        blocking_helper(0.3)
    asyncio.run(main())


@pytest.mark.loopwatch(max_lag=1.0)
@pytest.mark.asyncio
async def test_marker_raises_limit():
    blocking_helper(0.3)


@pytest.mark.loopwatch(max_lag=None)
@pytest.mark.asyncio
async def test_exempt():
    blocking_helper(0.3)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", ("asyncio", {"use_uvloop": True})],
                         ids=["asyncio", "uvloop"])
async def test_anyio_blocks(anyio_backend):
    blocking_helper(0.3)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_blocks():
    blocking_helper(0.3)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_after_block_passes():
    await asyncio.sleep(0.01)


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_blocks():
    spin(0.3)


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_after_block_passes():
    await asyncio.sleep(0.01)


@pytest.mark.loopwatch(max_lag=0.1)
class TestMarkedClass:
    @pytest.mark.asyncio
    async def test_in_marked_class(self):
        blocking_helper(0.3)
'''

OUTCOMES = {
    "test_blocks": "failed",
    "test_short_block_passes": "passed",
    "test_fixture_blocks": "error at setup",
    "test_teardown_blocks": "error at teardown",
    "test_cpu_bound": "failed",
    "test_gil_holding_native_call": "failed",
    "test_asyncio_run_in_sync_test": "failed",
    "test_marker_raises_limit": "passed",
    "test_exempt": "passed",
    "test_anyio_blocks[asyncio]": "failed",
    "test_anyio_blocks[uvloop]": "failed",
    "test_module_loop_blocks": "failed",
    "test_module_loop_after_block_passes": "passed",
    "test_session_loop_blocks": "failed",
    "test_session_loop_after_block_passes": "passed",
    "TestMarkedClass.test_in_marked_class": "failed",
}
# The function each failure must blame (the innermost frame of the test file).
BLAMED = {
    "test_blocks": "blocking_helper",
    "test_fixture_blocks": "blocking_helper",
    "test_teardown_blocks": "spin",
    "test_cpu_bound": "spin",
    "test_asyncio_run_in_sync_test": "blocking_helper",
    "test_anyio_blocks[asyncio]": "blocking_helper",
    "test_anyio_blocks[uvloop]": "blocking_helper",
    "test_module_loop_blocks": "blocking_helper",
    "test_session_loop_blocks": "spin",
    "TestMarkedClass.test_in_marked_class": "blocking_helper",
}


@pytest.fixture(params=["native", "python"])
def implementation(request, monkeypatch):
    if request.param == "native" and request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    if request.param == "python":
        monkeypatch.setenv("LOOPWATCH_NO_EXTENSIONS", "1")
    else:
        monkeypatch.delenv("LOOPWATCH_NO_EXTENSIONS", raising=False)
    return request.param


def _sections(output: str) -> dict[str, str]:
    """The failure/error sections of pytest's output, by their title."""
    parts = re.split(r"^_{3,} (.+?) _{3,}$", output, flags=re.M)
    sections = {}
    for title, body in zip(parts[1::2], parts[2::2]):
        sections[title] = body.split("\n=====")[0]
    return sections


def test_blocking_tests_fail_with_the_blocking_function(pytester, implementation):
    pytester.makeini(INI.format(extra=""))
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_subprocess(
        "--loopwatch-max-lag=0.1", "--strict-markers", "-p", "no:cacheprovider",
        "--loopwatch-report=20", "-rA")
    out = result.stdout.str()
    counts = {k: sum(1 for v in OUTCOMES.values() if v.startswith(k))
              for k in ("passed", "failed", "error")}
    result.assert_outcomes(passed=counts["passed"] + 1,  # the teardown error's test passed
                           failed=counts["failed"], errors=counts["error"])

    sections = _sections(out)
    for name, outcome in OUTCOMES.items():
        short = name.split(".")[-1]
        line = re.search(rf"^(PASSED|FAILED|ERROR) test_cases.py::{re.escape(name.replace('.', '::'))}"
                         rf"( - .*)?$", out, re.M)
        assert line, f"{name}: no short summary line"
        if outcome == "passed":
            assert f"PASSED test_cases.py::{name.replace('.', '::')}" in out, name
            continue
        title = (f"ERROR at {outcome.split()[-1]} of {short}" if outcome.startswith("error")
                 else name)
        assert title in sections, (title, list(sections))
        body = sections[title]
        phase = {"failed": "the test", "error at setup": "setup (fixtures)",
                 "error at teardown": "teardown (fixtures)"}[outcome]
        assert re.search(rf"^event loop blocked for 0\.[2-9]\d\d s .*during {re.escape(phase)}, "
                         r"over the limit of 0\.100 s", body, re.M), (name, body)
        if name in BLAMED:
            blamed = BLAMED[name]
            assert f"E   blocked in {blamed}() at test_cases.py:" in body, (name, body)
            assert re.search(rf"^>   test_cases\.py:\d+: in {blamed}$", body, re.M), body
            # pytest's, pluggy's and asyncio's frames are not blamed nor listed
            frames = re.findall(r"^[> ]   (\S+):\d+: in ", body, re.M)
            assert frames and all(f == "test_cases.py" for f in frames), body
    # the GIL-holding call: caught alike (its stack cannot be taken while
    # the loop thread holds the GIL)
    assert "0.100 s" in sections["test_gil_holding_native_call"]

    # the marker's class-level limit applies; the option's named as source
    assert "(@pytest.mark.loopwatch)" in sections["TestMarkedClass.test_in_marked_class"]
    assert "(--loopwatch-max-lag)" in sections["test_blocks"]

    # the terminal summary lists the stalls, worst first, and the share
    summary = out.split("loopwatch: longest event-loop stalls")[1].split("short test summary")[0]
    rows = re.findall(r"^\s+(\d+\.\d{3}) s  test_cases\.py::(\S+) \((\w+)\): (.*)$", summary, re.M)
    durations = [float(d) for d, *_ in rows]
    assert durations == sorted(durations, reverse=True)
    listed = {name: (phase, where) for _, name, phase, where in rows}
    assert listed["test_fixture_blocks"][0] == "setup"
    assert listed["test_teardown_blocks"][0] == "teardown"
    assert listed["test_exempt"][1].startswith("blocking_helper() at test_cases.py:")
    assert "OVER LIMIT" not in listed["test_exempt"][1]
    assert "OVER LIMIT" in listed["test_blocks"][1]
    assert "test_short_block_passes" not in listed  # under the report threshold
    assert re.search(r"event loops blocked \d+\.\d{3} s of \d+\.\d{3} s of test time "
                     r"\(\d+\.\d %\)", summary)


def test_inert_without_option_or_marker(pytester):
    pytester.makeini(INI.format(extra=""))
    pytester.makepyfile(test_inert='''
        import asyncio, os, sys, threading, time
        import pytest

        def thread_names():
            names = {t.name for t in threading.enumerate()}
            if os.path.isdir("/proc/self/task"):  # native threads too (Linux)
                for task in os.listdir("/proc/self/task"):
                    with open(f"/proc/self/task/{task}/comm") as f:
                        names.add(f.read().strip())
            return names

        def check_nothing_runs():
            names = thread_names()
            assert not names & {"lw-loop-sampler", "loopwatch-reporter"}, names
            import asyncio.events as events
            assert events._set_running_loop is events._c__set_running_loop
            assert asyncio._set_running_loop is events._c__set_running_loop
            assert "loopwatch.testing.loops" not in sys.modules

        @pytest.mark.asyncio
        async def test_blocking_is_not_watched():
            time.sleep(0.3)
            check_nothing_runs()

        def test_asyncio_run():
            asyncio.run(asyncio.sleep(0))
            check_nothing_runs()
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)
    assert "longest event-loop stalls" not in result.stdout.str()


def test_marker_alone_activates_and_ini_sets_the_default(pytester):
    pytester.makeini(INI.format(extra=""))
    pytester.makepyfile(test_marked='''
        import threading, time
        import pytest

        @pytest.mark.loopwatch(max_lag=0.1)
        @pytest.mark.asyncio
        async def test_marked_blocks():
            time.sleep(0.3)

        @pytest.mark.asyncio
        async def test_unmarked_blocks_but_has_no_limit():
            assert "loopwatch-reporter" in {t.name for t in threading.enumerate()}
            time.sleep(0.3)
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=1, failed=1)
    assert "FAILED test_marked.py::test_marked_blocks - Failed: event loop blocked" in \
        result.stdout.str()

    pytester.makeini(INI.format(extra="loopwatch_max_lag = 0.1"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    assert "(ini loopwatch_max_lag)" in result.stdout.str()


def test_bad_limits_are_usage_errors(pytester):
    pytester.makepyfile(test_bad='''
        import pytest

        @pytest.mark.loopwatch(max_lag="soon")
        def test_x():
            pass
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "must be a number of seconds, not 'soon'" in result.stderr.str()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--loopwatch-max-lag=-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--loopwatch-max-lag must be a finite number of seconds" in result.stderr.str()


def test_xdist_workers_report_to_one_summary(pytester):
    pytest.importorskip("xdist")
    pytester.makeini(INI.format(extra=""))
    pytester.makepyfile(test_spread='''
        import time
        import pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.asyncio
        async def test_blocks(n):
            time.sleep(0.15 + 0.05 * n)
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           "--loopwatch-max-lag=0.1")
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    assert re.search(r"^\[gw0\]|^gw0|created: 2/2 workers", out, re.M)
    summary = out.split("loopwatch: longest event-loop stalls")[1]
    listed = re.findall(r"test_spread\.py::test_blocks\[(\d)\] \(call\)", summary)
    assert sorted(listed) == ["0", "1", "2", "3"]
    assert "4 stalls in 4 tests, 4 over the limit in 4 tests" in summary
