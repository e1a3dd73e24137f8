"""OpenTelemetry instruments, read with the SDK's InMemoryMetricReader;
both implementations."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from loopwatch import SessionRegistry  # noqa: E402
from loopwatch.export import otel  # noqa: E402
from loopwatch.export.sources import Sources  # noqa: E402


def _metrics(reader) -> dict:
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "loopwatch"
            for metric in sm.metrics:
                out[metric.name] = metric
    return out


def _points(metric) -> dict:
    return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_instruments_report_the_loop_and_feed_the_histogram_once(impl):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sources = Sources()
    handle = otel.instrument(provider, sources=sources)
    loop = asyncio.new_event_loop()
    monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.05)
    try:
        monitor.start()
        sources.add_monitor(monitor)

        async def work() -> None:
            await asyncio.sleep(0.05)
            _busy(0.2)                      # a stall
            await asyncio.sleep(0.05)

        loop.run_until_complete(work())
        first = _metrics(reader)
        key = (("loopwatch.loop", "loop1"),)
        for name in ("p50", "p90", "p99", "p999", "max"):
            metric = first[f"loopwatch.eventloop.delay.{name}"]
            assert metric.unit == "s"
        assert _points(first["loopwatch.eventloop.delay.max"])[key].value > 0.1
        assert _points(first["loopwatch.eventloop.stalls"])[key].value == 1
        assert first["loopwatch.eventloop.stalls"].data.is_monotonic
        assert _points(first["loopwatch.eventloop.stall.longest"])[key].value > 0.1
        assert _points(first["loopwatch.eventloop.stall.current"])[key].value == 0
        util = _points(first["loopwatch.eventloop.utilization"])[key].value
        assert 0.0 < util <= 1.0 and first["loopwatch.eventloop.utilization"].unit == "1"
        hist = first["loopwatch.eventloop.delay"]
        point = _points(hist)[key]
        total = monitor.snapshot(reset_interval=False).total
        assert point.count == total.sample_count          # every sample, once
        assert list(point.explicit_bounds)[:2] == [0.001, 0.005]
        assert point.max > 0.1

        loop.run_until_complete(asyncio.sleep(0.1))
        second = _metrics(reader)
        point2 = _points(second["loopwatch.eventloop.delay"])[key]
        total2 = monitor.snapshot(reset_interval=False).total
        assert point2.count == total2.sample_count > point.count  # cumulative, no double count
        stats = monitor.snapshot()
        assert stats.interval.sample_count == stats.total.sample_count  # never reset
        handle.close()
        assert handle._read(None) == []       # closed: reads nothing more
    finally:
        monitor.stop()
        loop.close()
        provider.shutdown()


def test_session_instruments():
    now = [0.0]
    registry = SessionRegistry(stuck_after=1.0, evict_after=2.0, clock=lambda: now[0])
    sources = Sources()
    sources.add_registry(registry, "gw")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(provider, sources=sources)
    registry.open("a", state="processing")
    registry.open("b", state="waiting")
    now[0] = 1.5
    registry.check()
    m = _metrics(reader)
    sessions = _points(m["loopwatch.sessions"])
    assert sessions[(("loopwatch.registry", "gw"), ("loopwatch.session.state", "processing"))].value == 1
    assert not m["loopwatch.sessions"].data.is_monotonic
    assert _points(m["loopwatch.sessions.stuck"])[(("loopwatch.registry", "gw"),)].value == 2
    now[0] = 4.0
    registry.check()
    m = _metrics(reader)
    evictions = _points(m["loopwatch.session.evictions"])
    assert evictions[(("loopwatch.registry", "gw"),
                      ("loopwatch.session.eviction.reason", "stuck_too_long"))].value == 2
    assert _points(m["loopwatch.sessions.stuck"])[(("loopwatch.registry", "gw"),)].value == 0
    provider.shutdown()
