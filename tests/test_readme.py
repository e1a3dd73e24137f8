"""The README's histogram example runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import os
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(heading):
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_histogram_example(impl, monkeypatch):
    import loopwatch

    monkeypatch.setattr(loopwatch, "Histogram", impl.Histogram)
    code = _section_code("## Histograms")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    # each commented print() promises its output: the comment, up to a
    # ": explanation" when there is one
    promised = [
        comment if comment.startswith("{") else comment.split(": ", 1)[0]
        for comment in re.findall(r"^print\(.*\)\s*#\s*(.*?)\s*$", code, re.M)
    ]
    assert len(promised) == 3
    assert printed == promised


def test_other_examples_run(capsys):
    # The sessions example defines a server without starting it; the loop
    # monitor example runs its (empty) service once; the wheel example is
    # self-contained. Each must at least run as printed.
    for heading in ("## Sessions", "### Timer wheel", "### In your code"):
        namespace: dict = {}
        exec(compile(_section_code(heading), f"README.md ({heading})", "exec"), namespace)
    assert namespace["asyncio"] is not None
    printed = capsys.readouterr().out.split()
    # the monitor example prints p99 lag (ms), utilization and stall count
    assert len(printed) == 3 and printed[2] == "0"


def test_gateway_example(impl, monkeypatch, runtime_dir, capsys):
    import loopwatch

    monkeypatch.setattr(loopwatch, "LoopMonitor", impl.LoopMonitor)
    monkeypatch.setattr("loopwatch.gateway.diagnostics.LoopMonitor", impl.LoopMonitor)
    code = _section_code("## In a gateway")
    exec(compile(code, "README.md (gateway)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    promised = re.findall(r"^\s*print\(.*\)\s*#\s*(.*?)\s*$", code, re.M)
    assert printed == promised == ["True", "True 1"]
    assert not os.listdir(runtime_dir / "loopwatch")  # the socket is gone


def test_interval_log_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _section_code("### Interval logs (.hlog)")
    exec(compile(code, "README.md (interval logs)", "exec"), {})
    promised = re.findall(r"^\s*print\(.*\)\s*#\s*(.*?)\s*$", code, re.M)
    assert capsys.readouterr().out.splitlines() == promised
