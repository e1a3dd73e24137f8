"""The liveness line: its fields, thresholds and cooldown, on a fake clock."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from loopwatch import LatencyStats, LivenessThresholds
from loopwatch.gateway.liveness import LivenessReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Window:
    """The fields of a LoopWindow the reporter reads."""

    def __init__(self, p99_ms=1.0, max_ms=2.0, utilization=0.2, cpu=0.1, duration=30.0):
        self.lag = LatencyStats(p50_ms=0.5, p90_ms=0.8, p99_ms=p99_ms, p999_ms=max_ms,
                                max_ms=max_ms, mean_ms=0.6, count=3000)
        self.utilization = utilization
        self.cpu_core_ratio = cpu
        self.duration = duration


@pytest.fixture
def records():
    caught: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            caught.append(record)

    log = logging.getLogger("loopwatch.liveness")
    handler = Keep(level=logging.DEBUG)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield caught
    log.removeHandler(handler)
    log.setLevel(old_level)


def test_healthy_interval_is_a_debug_line_with_every_field(records):
    reporter = LivenessReporter(clock=FakeClock())
    report = reporter.evaluate(Window(), {"processing": 2, "waiting": 1, "idle": 7}, queued=4)
    assert not report.warning and report.crossed == ()
    assert report.line == ("liveness: eventLoopDelayP99Ms=1.0 eventLoopDelayMaxMs=2.0 "
                           "eventLoopUtilization=0.2 cpuCoreRatio=0.1 active=2 waiting=1 "
                           "queued=4 intervalS=30.0")
    (record,) = records
    assert record.levelno == logging.DEBUG
    # The fields as attributes of the record, for JSON formatters.
    assert record.eventLoopDelayP99Ms == 1.0 and record.active == 2 and record.queued == 4
    assert record.loopwatch_crossed == []


def test_the_reports_line_is_a_warning(records):
    reporter = LivenessReporter(clock=FakeClock())
    report = reporter.evaluate(Window(p99_ms=12876.5, max_ms=13020.2, utilization=0.998,
                                      cpu=1.289), {"processing": 1}, queued=5)
    assert report.warning
    assert report.line == ("liveness warning: eventLoopDelayP99Ms=12876.5 "
                           "eventLoopDelayMaxMs=13020.2 eventLoopUtilization=0.998 "
                           "cpuCoreRatio=1.289 active=1 waiting=0 queued=5 intervalS=30.0")
    assert set(report.crossed) == {"eventLoopDelayP99Ms", "eventLoopDelayMaxMs",
                                   "eventLoopUtilization", "cpuCoreRatio"}
    assert records[-1].levelno == logging.WARNING


@pytest.mark.parametrize("window, crossed", [
    (Window(p99_ms=1000.0, max_ms=999.0), "eventLoopDelayP99Ms"),
    (Window(p99_ms=10.0, max_ms=1000.0), "eventLoopDelayMaxMs"),
    (Window(utilization=0.95), "eventLoopUtilization"),
    (Window(cpu=0.9), "cpuCoreRatio"),
])
def test_each_threshold_alone_warns_at_its_value(window, crossed):
    report = LivenessReporter(clock=FakeClock()).evaluate(window)
    assert report.warning and report.crossed == (crossed,)


def test_just_below_every_threshold_is_healthy():
    report = LivenessReporter(clock=FakeClock()).evaluate(
        Window(p99_ms=999.9, max_ms=999.9, utilization=0.949, cpu=0.899))
    assert not report.warning


def test_cooldown_keeps_warnings_apart(records):
    clock = FakeClock()
    reporter = LivenessReporter(LivenessThresholds(cooldown=120.0), clock=clock)
    bad = Window(p99_ms=5000.0)
    levels = []
    for step in range(10):  # every 30 s for 4.5 minutes
        levels.append(reporter.evaluate(bad).level)
        clock.now += 30.0
    warn, debug = logging.WARNING, logging.DEBUG
    # 0 s, 120 s, 240 s warn; the crossings between are logged at DEBUG.
    assert levels == [warn, debug, debug, debug, warn, debug, debug, debug, warn, debug]
    assert reporter.warnings == 3
    assert records[1].getMessage().startswith("liveness: ")
    assert records[1].loopwatch_crossed == ["eventLoopDelayP99Ms"]


def test_unmeasurable_fields_are_na_and_do_not_warn():
    report = LivenessReporter(clock=FakeClock()).evaluate(Window(utilization=None, cpu=None))
    assert "eventLoopUtilization=n/a cpuCoreRatio=n/a" in report.line
    assert not report.warning


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="delay_p99_ms"):
        LivenessThresholds(delay_p99_ms=-1)
    with pytest.raises(ValueError, match="cooldown"):
        LivenessThresholds(cooldown=float("nan"))
    with pytest.raises(TypeError, match="utilization"):
        LivenessThresholds(utilization="high")
    with pytest.raises(TypeError):
        LivenessReporter(thresholds={"delay_p99_ms": 5})
    assert replace(LivenessThresholds(), cooldown=0).cooldown == 0
