"""The pytest plugin, end to end: real pytest runs (pytest-asyncio, anyio,
asyncio.run) in a subprocess, on both implementations where it matters.

Timing: a blocking test blocks 0.3-0.5 s against a limit of 0.1-0.15 s (a
loaded machine only makes a stall longer). A loaded 2-core machine also
stalls a loop on its own, 0.05-0.3 s at times, so a test that must pass
either runs no loop for more than microseconds under a small limit, or has
a limit of 3 s or more; the checks of a failure look at the blocking
function's own stall, not at every stall the test had. Each scenario is
one subprocess run of many cases, to keep the module's wall time down.
"""

from __future__ import annotations

import json
import re

import pytest

from loopwatch.testing.blame import MAX_LISTED

pytest_plugins = ["pytester"]

# Every inner run: no cache, and no hypothesis plugin (it imports
# hypothesis for its terminal summary, about 1-2 s a run; nothing here
# uses it).
RUN = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

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


@pytest.mark.loopwatch(max_lag=3.0)
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


# (a limit no machine load reaches: the check is that the stall of the
# test before, on the same loop, is not this test's: see the summary)
@pytest.mark.loopwatch(max_lag=3.0)
@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_after_block_passes():
    await asyncio.sleep(0.01)


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_blocks():
    spin(0.3)


@pytest.mark.loopwatch(max_lag=3.0)
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
# The tests that run after a blocking test on the same loop.
AFTER_A_BLOCK = ["test_module_loop_after_block_passes", "test_session_loop_after_block_passes"]
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


# More stalls over the limit in one test than a failure lists: MAX_LISTED
# of 0.3 s, then two more, the last one the longest of all.
MANY_BLOCKS = [0.3] * (MAX_LISTED + 1) + [0.45]
MANY_STALLS = f'''
import asyncio
import time

import pytest

BLOCKS = {MANY_BLOCKS!r}


def block(seconds):
    time.sleep(seconds)


async def heartbeat_tick():
    """Returns once the loop has run its due timers: the plugin's heartbeat
    tick, overdue after a block, among them. The stall ends there, and the
    next block is a stall of its own. (No sleep: a timer due now runs after
    the overdue one, and the loop does not wait for either.)"""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_at(loop.time(), done.set_result, None)
    await done


@pytest.mark.asyncio
async def test_stalls_more_than_listed():
    for seconds in BLOCKS:
        block(seconds)
        await heartbeat_tick()
'''


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


HEADLINE = re.compile(r"^event loop blocked for (\d+\.\d{3}) s (.*) during (.+), over the limit "
                      r"of (\d+\.\d{3}) s \((.+?)\)(?:; (\d+) stalls over the limit)?$", re.M)


def _listed_stalls(body: str) -> list[dict]:
    """The stalls a failure lists: number, duration, start into the phase,
    the frames shown (file, function), the blamed one and the E line."""
    stalls = []
    for part in re.split(r"^(?=stall \d+: )", body, flags=re.M)[1:]:
        head = re.match(r"stall (\d+): blocked (\d+\.\d{3}) s.*?, from (\d+\.\d{3}) s into",
                        part)
        assert head, part
        stalls.append({
            "number": int(head[1]),
            "duration": float(head[2]),
            "from": float(head[3]),
            "frames": re.findall(r"^[> ]   (\S+):\d+: in (\w+)$", part, re.M),
            "blamed": re.findall(r"^>   (\S+):\d+: in (\w+)$", part, re.M),
            "error": re.search(r"^E   (.*)$", part, re.M)[1],
        })
    return stalls


def test_blocking_tests_fail_with_the_blocking_function(pytester, implementation):
    pytester.makeini(INI.format(extra=""))
    pytester.makepyfile(test_cases=CASES, test_many_stalls=MANY_STALLS)
    result = pytester.runpytest_subprocess(
        "--loopwatch-max-lag=0.1", "--strict-markers", *RUN, "--loopwatch-report=20", "-rA")
    out = result.stdout.str()
    counts = {k: sum(1 for v in OUTCOMES.values() if v.startswith(k))
              for k in ("passed", "failed", "error")}
    result.assert_outcomes(passed=counts["passed"] + 1,  # the teardown error's test passed
                           failed=counts["failed"] + 1,  # test_stalls_more_than_listed
                           errors=counts["error"])

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
        headline = HEADLINE.search(body)
        assert headline, (name, body)
        # the longest stall: the 0.3 s block's, or one the load made longer
        assert float(headline[1]) >= 0.25, (name, body)
        assert (headline[3], headline[4]) == (phase, "0.100"), (name, body)
        if name in BLAMED:
            blamed = BLAMED[name]
            # The block's stall; the load may have added one of its own
            # (blamed elsewhere, listed too): only the block's is checked.
            mine = [s for s in _listed_stalls(body)
                    if s["error"].startswith(f"blocked in {blamed}() at test_cases.py:")]
            assert len(mine) == 1, (name, body)
            stall = mine[0]
            assert stall["duration"] >= 0.25, (name, body)
            assert stall["blamed"] == [("test_cases.py", blamed)], (name, body)
            # pytest's, pluggy's and asyncio's frames are not blamed nor listed
            assert stall["frames"] and all(f == "test_cases.py" for f, _ in stall["frames"]), \
                (name, body)
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
    # seen, under the test's limit
    assert listed["test_marker_raises_limit"][1].startswith("blocking_helper() at test_cases.py:")
    assert "OVER LIMIT" not in listed["test_marker_raises_limit"][1]
    # the stall of the test before, on the same loop, is not the next test's
    for name in AFTER_A_BLOCK:
        if name in listed:  # (a stall of the load's own: not the block's)
            assert not listed[name][1].startswith(("blocking_helper()", "spin()")), listed[name]
    assert re.search(r"event loops blocked \d+\.\d{3} s of \d+\.\d{3} s of test time "
                     r"\(\d+\.\d %\)", summary)

    # More stalls over the limit than a failure lists: MAX_LISTED listed,
    # in the order they happened, each in full; the others counted exactly.
    body = sections["test_stalls_more_than_listed"]
    headline = HEADLINE.search(body)
    assert headline, body
    assert headline[2].startswith("in block() at test_many_stalls.py:"), body
    assert float(headline[1]) >= MANY_BLOCKS[-1] - 0.01, body  # the longest: the last
    assert int(headline[6]) == len(MANY_BLOCKS), body
    stalls = _listed_stalls(body)
    assert [s["number"] for s in stalls] == list(range(1, MAX_LISTED + 1)), body
    for stall in stalls:
        assert stall["duration"] >= MANY_BLOCKS[0] - 0.05, body
        assert stall["error"].startswith("blocked in block() at test_many_stalls.py:"), body
        assert stall["blamed"] == [("test_many_stalls.py", "block")], body
    starts = [s["from"] for s in stalls]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), body
    more = re.findall(r"^\.\.\. and (\d+) more stalls over the limit \(longest (\d+\.\d{3}) s\)$",
                      body, re.M)
    assert len(more) == 1, body
    assert int(more[0][0]) == len(MANY_BLOCKS) - MAX_LISTED, body
    assert float(more[0][1]) >= MANY_BLOCKS[-1] - 0.01, body  # of the ones not listed


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
    result = pytester.runpytest_subprocess(*RUN, "--strict-markers")
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
    result = pytester.runpytest_subprocess(*RUN, "--strict-markers")
    result.assert_outcomes(passed=1, failed=1)
    assert "FAILED test_marked.py::test_marked_blocks - Failed: event loop blocked" in \
        result.stdout.str()

    pytester.makeini(INI.format(extra="loopwatch_max_lag = 0.1"))
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=2)
    assert "(ini loopwatch_max_lag)" in result.stdout.str()


MODULE_MARKED = '''
import asyncio
import time

import pytest

pytestmark = pytest.mark.loopwatch(max_lag=0.1)


def blocking_helper(seconds):
    time.sleep(seconds)


def test_sync_without_a_loop():
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_parametrized(n):
    pass


@pytest.mark.asyncio
async def test_module_limit_fails_a_block():
    blocking_helper(0.3)


class TestUnmarkedClass:
    @pytest.mark.asyncio
    async def test_module_limit_reaches_a_method(self):
        blocking_helper(0.3)


@pytest.mark.loopwatch(max_lag=3.0)
class TestLenientClass:
    @pytest.mark.asyncio
    async def test_class_marker_wins_over_the_module(self):
        blocking_helper(0.3)

    @pytest.mark.loopwatch(max_lag=0.15)
    @pytest.mark.asyncio
    async def test_test_marker_wins_over_the_class(self):
        blocking_helper(0.5)


@pytest.mark.loopwatch(max_lag=4.0)
@pytest.mark.asyncio
async def test_test_marker_wins_over_the_module():
    blocking_helper(0.3)


@pytest.mark.loopwatch(max_lag=None)
@pytest.mark.asyncio
async def test_exempt_from_the_module_limit():
    blocking_helper(0.3)
'''

# Writes the limit each phase's report carries (report.loopwatch, see
# loopwatch.testing.summary) to limits.json: the limit every test got.
LIMITS_CONFTEST = '''
import json

LIMITS = {}


def pytest_runtest_logreport(report):
    data = getattr(report, "loopwatch", None)
    if isinstance(data, dict):
        LIMITS.setdefault(report.nodeid, {})[report.when] = data["limit"]


def pytest_sessionfinish(session):
    (session.config.rootpath / "limits.json").write_text(json.dumps(LIMITS))
'''


def test_module_marker_applies_to_every_test_and_the_closest_marker_wins(pytester):
    """``pytestmark = pytest.mark.loopwatch(max_lag=...)``: every test of
    the module gets its limit (over the option's), a class marker or a test
    marker overrides it (a test's over its class's), ``max_lag=None``
    exempts a test; another module keeps the option's limit. The blocks
    that must fail are 0.3-0.5 s against 0.1-0.15 s; the ones that must
    pass have 3 s or more (or no limit); the tests under 0.1 s that must
    pass run no loop."""
    pytester.makeini(INI.format(extra=""))
    pytester.makeconftest(LIMITS_CONFTEST)
    pytester.makepyfile(test_module_marked=MODULE_MARKED,
                        test_other_module="def test_keeps_the_default():\n    pass\n")
    result = pytester.runpytest_subprocess(*RUN, "--strict-markers", "--loopwatch-max-lag=5",
                                           "-rA")
    out = result.stdout.str()
    module = "test_module_marked.py::"
    expected = {  # test: (limit, outcome)
        "test_sync_without_a_loop": (0.1, "PASSED"),
        "test_parametrized[1]": (0.1, "PASSED"),
        "test_parametrized[2]": (0.1, "PASSED"),
        "test_module_limit_fails_a_block": (0.1, "FAILED"),
        "TestUnmarkedClass::test_module_limit_reaches_a_method": (0.1, "FAILED"),
        "TestLenientClass::test_class_marker_wins_over_the_module": (3.0, "PASSED"),
        "TestLenientClass::test_test_marker_wins_over_the_class": (0.15, "FAILED"),
        "test_test_marker_wins_over_the_module": (4.0, "PASSED"),
        "test_exempt_from_the_module_limit": (None, "PASSED"),
    }
    limits = json.loads((pytester.path / "limits.json").read_text())
    want = {module + name: {phase: limit for phase in ("setup", "call", "teardown")}
            for name, (limit, _) in expected.items()}
    want["test_other_module.py::test_keeps_the_default"] = dict.fromkeys(
        ("setup", "call", "teardown"), 5.0)
    assert limits == want

    result.assert_outcomes(passed=7, failed=3)
    for name, (limit, outcome) in expected.items():
        assert re.search(rf"^{outcome} {re.escape(module + name)}( - .*)?$", out, re.M), name
    sections = _sections(out)
    for name in ("test_module_limit_fails_a_block",
                 "TestUnmarkedClass.test_module_limit_reaches_a_method",
                 "TestLenientClass.test_test_marker_wins_over_the_class"):
        body = sections[name]
        headline = HEADLINE.search(body)
        assert headline, body
        assert headline[2].startswith("in blocking_helper() at test_module_marked.py:"), body
        assert (headline[4], headline[5]) == (
            "0.150" if "wins_over_the_class" in name else "0.100", "@pytest.mark.loopwatch"), body
    summary = out.split("loopwatch: longest event-loop stalls")[1].split("short test summary")[0]
    rows = dict(re.findall(r"^\s+\d+\.\d{3} s  test_module_marked\.py::(\S+) \(call\): (.*)$",
                           summary, re.M))
    # seen under the limits that let them pass, not over them
    for name in ("TestLenientClass::test_class_marker_wins_over_the_module",
                 "test_test_marker_wins_over_the_module", "test_exempt_from_the_module_limit"):
        assert rows[name].startswith("blocking_helper() at test_module_marked.py:"), rows
        assert "OVER LIMIT" not in rows[name], rows
    assert "OVER LIMIT" in rows["test_module_limit_fails_a_block"], rows


def test_bad_limits_are_usage_errors(pytester):
    pytester.makepyfile(test_bad='''
        import pytest

        @pytest.mark.loopwatch(max_lag="soon")
        def test_x():
            pass
    ''')
    result = pytester.runpytest_subprocess(*RUN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "must be a number of seconds, not 'soon'" in result.stderr.str()
    result = pytester.runpytest_subprocess(*RUN, "--loopwatch-max-lag=-1")
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
    result = pytester.runpytest_subprocess(*RUN, "-n", "2",
                                           "--loopwatch-max-lag=0.1")
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    assert re.search(r"^\[gw0\]|^gw0|created: 2/2 workers", out, re.M)
    summary = out.split("loopwatch: longest event-loop stalls")[1]
    listed = re.findall(r"test_spread\.py::test_blocks\[(\d)\] \(call\)", summary)
    assert sorted(listed) == ["0", "1", "2", "3"]
    assert "4 stalls in 4 tests, 4 over the limit in 4 tests" in summary
