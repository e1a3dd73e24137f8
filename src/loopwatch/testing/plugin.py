"""The pytest plugin (entry point ``pytest11``: ``loopwatch``).

Inert unless asked for: without ``--loopwatch-max-lag``, the
``loopwatch_max_lag`` ini option or a ``@pytest.mark.loopwatch(max_lag=...)``
marker, it registers its options, its marker and a summary that waits for
data, and nothing else: no monitor, no thread, no hook on asyncio, and
loopwatch's monitor classes are not even imported.

When asked for, the hook on ``asyncio._set_running_loop`` goes in as early
as pytest allows (``pytest_load_initial_conftests``, before conftest files
and test modules import uvloop, which reads the function when imported);
with markers only, once collection shows one. Each phase of each test
(setup, call, teardown) is bracketed by a hook wrapper: at its end the
stalls that started during it are settled and, if one was longer than the
test's limit, the phase fails with the blocking stack.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any, Generator

import pytest

from .summary import ATTRIBUTE, Summary

_monotonic = time.monotonic

__all__ = ["DEFAULT_REPORT_THRESHOLD", "stall_options"]

MARKER = "loopwatch"
INI = "loopwatch_max_lag"
OPTION = "--loopwatch-max-lag"
# Stalls this long or longer are recorded for the summary even under a
# larger limit (never above the smallest limit in use).
DEFAULT_REPORT_THRESHOLD = 0.1
MIN_LIMIT = 0.001

_ACTIVE = pytest.StashKey["_Active"]()
_LIMIT = pytest.StashKey[tuple[Any, ...]]()


def _limit_value(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
    if math.isnan(seconds) or math.isinf(seconds) or seconds < MIN_LIMIT:
        raise ValueError(f"{what} must be a finite number of seconds >= {MIN_LIMIT}, "
                         f"got {value!r}")
    return seconds


def _option_type(value: str) -> float:
    try:
        return _limit_value(value, OPTION)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def stall_options(limit: float) -> tuple[float, float]:
    """(resolution, stall_threshold) of the monitors for the smallest limit
    in use: the threshold at most the limit (so every stall over it is
    seen), the resolution a tenth of it, from 1 ms to 10 ms."""
    threshold = min(limit, DEFAULT_REPORT_THRESHOLD)
    resolution = min(0.01, max(0.001, threshold / 10))
    return resolution, max(threshold, resolution)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopwatch", "loopwatch: fail tests that block the event loop")
    group.addoption(
        OPTION, dest="loopwatch_max_lag", type=_option_type, default=None, metavar="SECONDS",
        help="fail a test (error for a fixture) during which an event loop was blocked "
             "longer than SECONDS, showing the blocking stack; every loop that runs is "
             "watched (pytest-asyncio, anyio, asyncio.run). Default: the "
             f"{INI} ini option, else off.")
    group.addoption(
        "--loopwatch-report", dest="loopwatch_report", type=int, default=10, metavar="N",
        help="list the N tests with the longest event-loop stalls in the terminal "
             "summary (default 10) when loopwatch is active")
    parser.addini(INI, "like --loopwatch-max-lag: the default limit in seconds", default="")


def _default_limit(config: pytest.Config) -> tuple[float | None, str]:
    value = config.known_args_namespace.loopwatch_max_lag if hasattr(
        config, "known_args_namespace") else None
    if value is None:
        value = config.getoption("loopwatch_max_lag", None)
    if value is not None:
        return value, OPTION
    ini = config.getini(INI)
    if ini not in (None, ""):
        try:
            return _limit_value(ini.strip(), f"ini option {INI}"), f"ini {INI}"
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    return None, ""


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    limit, source = _default_limit(early_config)
    if limit is not None:
        _activate(early_config, limit, source, limit)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(max_lag=SECONDS): fail this test (class, module) if an event loop is "
        "blocked longer than SECONDS during it; max_lag=None exempts it")
    config.pluginmanager.register(Summary(config), "loopwatch-summary")
    if config.stash.get(_ACTIVE, None) is None:
        limit, source = _default_limit(config)  # a plugin loaded too late for the early hook
        if limit is not None:
            _activate(config, limit, source, limit)


def _marker_limit(item: pytest.Item) -> tuple[bool, float | None]:
    """(has a marker, its limit or None for exempt)."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return False, None
    if "max_lag" in marker.kwargs:
        value = marker.kwargs["max_lag"]
    elif marker.args:
        value = marker.args[0]
    else:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} needs max_lag=SECONDS "
                                "(or max_lag=None to exempt the test)")
    if value is None:
        return True, None
    try:
        return True, _limit_value(value, f"{item.nodeid}: @pytest.mark.{MARKER}(max_lag=...)")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    marked = [limit for has, limit in map(_marker_limit, items) if has and limit is not None]
    active = config.stash.get(_ACTIVE, None)
    if active is not None:
        if marked:
            active.lower_threshold(min(marked))
    elif marked:
        _activate(config, None, "", min(marked))


def pytest_unconfigure(config: pytest.Config) -> None:
    active = config.stash.get(_ACTIVE, None)
    if active is not None:
        active.close()
        del config.stash[_ACTIVE]


def _activate(config: pytest.Config, default: float | None, source: str,
              smallest: float) -> None:
    from .loops import LoopTracker, default_monitor_class, uvloop_imported

    resolution, threshold = stall_options(smallest)
    late_for_uvloop = uvloop_imported()
    tracker = LoopTracker(default_monitor_class(), resolution, threshold)
    tracker.install()
    active = _Active(config, tracker, default, source, late_for_uvloop)
    config.stash[_ACTIVE] = active
    config.pluginmanager.register(active, "loopwatch-active")


class _Active:
    """The plugin's hooks once it is active."""

    def __init__(self, config: pytest.Config, tracker: Any, default: float | None,
                 source: str, late_for_uvloop: bool) -> None:
        self._config = config
        self.tracker = tracker
        self.default = default
        self.source = source
        self.late_for_uvloop = late_for_uvloop
        self._judge: Any = None
        # phase -> (item, its report's loopwatch data, failure message or
        # None): from the phase's end to its report (the next hook call)
        self._pending: dict[str, tuple[pytest.Item, dict[str, Any], str | None]] = {}

    @property
    def judge(self) -> Any:
        """The FrameJudge, made at the first stall (it reads sysconfig)."""
        if self._judge is None:
            from .blame import FrameJudge

            self._judge = FrameJudge(self._config.rootpath)
        return self._judge

    def lower_threshold(self, smallest: float) -> None:
        resolution, threshold = stall_options(smallest)
        if threshold < self.tracker.stall_threshold:
            self.tracker.resolution, self.tracker.stall_threshold = resolution, threshold

    def close(self) -> None:
        self.tracker.uninstall()

    def limit(self, item: pytest.Item) -> tuple[float | None, str]:
        known = item.stash.get(_LIMIT, None)
        if known is None:
            has, limit = _marker_limit(item)
            known = (limit, f"@pytest.mark.{MARKER}") if has else (self.default, self.source)
            item.stash[_LIMIT] = known
        return known

    # -- the phases ---------------------------------------------------------
    # Each phase's stalls are settled when it ends (failing it when one was
    # over the limit) and handed to its report by pytest_runtest_makereport.
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, Any]:
        start = _monotonic()
        try:
            result = yield
        except BaseException:
            self._settle(item, "setup", start, True)
            raise
        self._settle(item, "setup", start, False)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        start = _monotonic()
        try:
            result = yield
        except BaseException:
            self._settle(item, "call", start, True)
            raise
        self._settle(item, "call", start, False)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
        start = _monotonic()
        try:
            result = yield
        except BaseException:
            self._settle(item, "teardown", start, True)
            raise
        self._settle(item, "teardown", start, False)
        return result

    def _settle(self, item: pytest.Item, phase: str, start: float, failed: bool) -> None:
        stalls = self.tracker.settle(start)
        if not stalls:  # the usual case
            known = item.stash.get(_LIMIT, None) or self.limit(item)
            self._pending[phase] = (item, {"limit": known[0], "stalls": []}, None)
            return
        message = self._judge_phase(item, phase, start, stalls)
        if message is not None and not failed:
            pytest.fail(message, pytrace=False)

    def _judge_phase(self, item: pytest.Item, phase: str, start: float,
                     stalls: list[Any]) -> str | None:
        """Keep the phase's stalls for its report; the failure message when
        one was longer than the limit."""
        from .blame import format_failure, where

        limit, source = self.limit(item)
        over = [s for s in stalls if limit is not None and s.duration > limit]
        data = {
            "limit": limit,
            "stalls": [[s.duration, where(self.judge, s.stack) if s.stack
                        else "(stack not captured)", limit is not None and s.duration > limit]
                       for s in stalls],
        }
        message = (format_failure(self.judge, phase, limit, source, over, start)
                   if over and limit is not None else None)
        self._pending[phase] = (item, data, message)
        return message

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        pending = self._pending.pop(call.when, None)
        if pending is not None and pending[0] is item:
            _item, data, message = pending
            setattr(report, ATTRIBUTE, data)
            if message and call.excinfo is not None and not (
                    call.excinfo.errisinstance(pytest.fail.Exception)
                    and str(call.excinfo.value) == message):
                # the phase failed on its own: say what loopwatch saw as well
                report.sections.append((f"loopwatch: event loop blocked ({call.when})", message))
        return report

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.tracker.hook_error is not None:
            tr.write_line(f"loopwatch: could not watch a loop: {self.tracker.hook_error!r}",
                          yellow=True)
        if self.late_for_uvloop:
            tr.write_line("loopwatch: uvloop was imported before loopwatch's hook went in "
                          "(markers only); uvloop loops were not watched: use "
                          f"{OPTION} or the {INI} ini option to watch them", yellow=True)
