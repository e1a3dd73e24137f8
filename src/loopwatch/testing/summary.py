"""The terminal summary: the tests with the longest stalls, and the share of
test time the loops spent blocked.

Each watched phase's report carries ``report.loopwatch``, a dict of plain
values (pytest's report serialization keeps extra attributes, so xdist
brings it from the workers to the controller unchanged):
``{"limit": seconds or None, "stalls": [[duration, where, over_limit], ...]}``.
The summary adds up whatever reports reach ``pytest_runtest_logreport``:
the local ones, or every worker's under xdist.
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["ATTRIBUTE", "Summary"]

ATTRIBUTE = "loopwatch"


class Summary:
    """Registered as a plugin whenever loopwatch's plugin is loaded; it does
    nothing until a report carries loopwatch's data."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self.watched_seconds = 0.0
        self.blocked_seconds = 0.0
        self.stall_count = 0
        self.over_count = 0
        self.phases = 0
        # nodeid -> (longest, phase, where, over), the longest of each test
        self.worst: dict[str, tuple[float, str, str, bool]] = {}
        self.failed_tests: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, ATTRIBUTE, None)
        if not isinstance(data, dict):
            return
        self.phases += 1
        self.watched_seconds += report.duration
        for duration, where, over in data.get("stalls", ()):
            self.stall_count += 1
            self.blocked_seconds += duration
            if over:
                self.over_count += 1
                self.failed_tests.add(report.nodeid)
            known = self.worst.get(report.nodeid)
            if known is None or duration > known[0]:
                self.worst[report.nodeid] = (duration, report.when, where, over)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.phases:
            return
        limit = self._config.getoption("loopwatch_report")
        tr = terminalreporter
        tr.write_sep("=", "loopwatch: longest event-loop stalls")
        ranked = sorted(self.worst.items(), key=lambda kv: -kv[1][0])
        for nodeid, (duration, phase, where, over) in ranked[:max(0, limit)]:
            verdict = "  OVER LIMIT" if over else ""
            tr.write_line(f"{duration:8.3f} s  {nodeid} ({phase}): {where}{verdict}")
        if not ranked:
            tr.write_line("no stalls")
        elif len(ranked) > limit:
            tr.write_line(f"... {len(ranked) - max(0, limit)} more tests with stalls "
                          f"(--loopwatch-report=N lists N)")
        share = self.blocked_seconds / self.watched_seconds if self.watched_seconds > 0 else 0.0
        tr.write_line(
            f"event loops blocked {self.blocked_seconds:.3f} s of {self.watched_seconds:.3f} s "
            f"of test time ({share * 100:.1f} %): {_n(self.stall_count, 'stall')} in "
            f"{_n(len(self.worst), 'test')}, {self.over_count} over the limit in "
            f"{_n(len(self.failed_tests), 'test')}")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
