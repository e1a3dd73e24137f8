"""``loopwatch run --prometheus-port/--prometheus-host/--hlog/--hlog-interval``:
subprocesses with a blocking program, bounded in time; both implementations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from loop_support import REPO, impl_env

pytest.importorskip("prometheus_client")
hdrh_log = pytest.importorskip("hdrh.log")
from hdrh.histogram import HdrHistogram  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

BLOCKING = textwrap.dedent("""
    import asyncio, os, sys, time

    async def main():
        await asyncio.sleep(0.3)
        release = sys.argv[1]
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:        # blocks the loop in Python code
            if release != "-" and os.path.exists(release):
                break
        await asyncio.sleep(0.3)

    asyncio.run(main())
""")


def _popen(args, impl_name, tmp_path):
    env = dict(os.environ, **impl_env(impl_name), XDG_RUNTIME_DIR=str(tmp_path))
    return subprocess.Popen([sys.executable, "-m", "loopwatch", "run", *args], cwd=REPO,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _line_with(proc, needle: str, seen: list[str]) -> str:
    # Blocking reads of stderr, each a line the program writes; the test's
    # timeout (pytest-timeout) bounds them if the line never comes.
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no {needle!r} in stderr:\n{''.join(seen)}")


@pytest.mark.parametrize("impl_name", ["native", "python"])
@pytest.mark.timeout(90)
def test_prometheus_endpoint_during_a_block(impl_name, tmp_path, request):
    if impl_name == "native" and request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    app = tmp_path / "app.py"
    app.write_text(BLOCKING)
    release = tmp_path / "release"
    proc = _popen(["--prometheus-port", "0", "--no-status", str(app), str(release), "30"],
                  impl_name, tmp_path)
    seen: list[str] = []
    try:
        url = _line_with(proc, "Prometheus metrics on", seen).split(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        _line_with(proc, "event loop stall #1 in progress", seen)
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert time.monotonic() - t0 < 5.0
        assert proc.poll() is None and not release.exists()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        current = [s for s in fams["loopwatch_eventloop_current_stall_seconds"].samples
                   if s.labels == {"loop": "loop1"}]
        assert current and current[0].value > 0.05
        release.touch()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(seen) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("impl_name", ["native", "python"])
@pytest.mark.timeout(90)
def test_hlog_of_a_blocking_program(impl_name, tmp_path, request):
    if impl_name == "native" and request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    app = tmp_path / "app.py"
    app.write_text(BLOCKING)
    log = tmp_path / "lag.hlog"
    proc = _popen(["--hlog", str(log), "--hlog-interval", "0.2", "--no-status", str(app), "-",
                   "0.5"], impl_name, tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"lag interval log in {log}" in err
    lines = log.read_text().splitlines()
    assert lines[1] == "#[Histogram log format version 1.3]"
    assert lines[2].startswith("#[StartTime: ") and lines[3].startswith("#[BaseTime: ")
    reader = hdrh_log.HistogramLogReader(str(log), HdrHistogram(1, 3_600_000_000, 3))
    intervals = []
    try:
        while (h := reader.get_next_interval_histogram()) is not None:
            intervals.append(h)
    finally:
        reader.close()
    assert len(intervals) >= 4        # ~1.1 s at 0.2 s
    assert {h.get_tag() for h in intervals} == {"loop1"}
    # the block (0.5 s, 10 ms resolution): lag samples of 0.3 s and more
    assert max(h.get_max_value() for h in intervals) >= 300_000
    assert sum(h.get_total_count() for h in intervals) >= 50


@pytest.mark.parametrize("args, message", [
    (["--prometheus-port", "x"], "expects a port number"),
    (["--prometheus-port", "-1"], "0..65535"),
    (["--prometheus-port=65536"], "0..65535"),
    (["--prometheus-host", ""], "non-empty"),
    (["--hlog-interval", "0"], "--hlog-interval must be"),
    (["--hlog-interval", "nan"], "--hlog-interval must be"),
    (["--hlog-interval", "soon"], "expects a number of seconds"),
    (["--hlog", "/nonexistent-dir/x.hlog"], "cannot write the interval log"),
    (["--prometheus-port", "0", "--prometheus-host", "999.0.0.1"], "cannot serve Prometheus"),
])
def test_bad_values_exit_2(args, message, tmp_path):
    app = tmp_path / "app.py"
    app.write_text("print('ran')\n")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "loopwatch", "run", *args, str(app)],
                         capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "ran" not in run.stdout


def test_usage_lists_the_options():
    run = subprocess.run([sys.executable, "-m", "loopwatch", "--help"], capture_output=True,
                         text=True, timeout=60)
    for option in ("--prometheus-port N", "--prometheus-host H", "--hlog PATH",
                   "--hlog-interval S"):
        assert option in run.stdout
