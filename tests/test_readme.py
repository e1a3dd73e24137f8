"""The README's histogram example runs and prints what its comments say."""

from __future__ import annotations

import contextlib
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
