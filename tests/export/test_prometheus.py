"""The Prometheus collector and endpoint: a real scrape over HTTP on
127.0.0.1 (a port from the OS) while the loop is stalled in Python code,
parsed with prometheus_client's own parser; both implementations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from loopwatch import SessionRegistry  # noqa: E402
from loopwatch.export import _figures  # noqa: E402
from loopwatch.export.prometheus import LoopwatchCollector, serve  # noqa: E402
from loopwatch.export.sources import Sources  # noqa: E402


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families, family, name=None, **labels):
    for s in families[family].samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v
                                                     for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {name or family} {labels} in {families[family].samples}")


class _LoopThread:
    """A loop in a thread of its own that can be blocked in Python code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def block(self, release: threading.Event, bound: float = 30.0) -> None:
        def busy() -> None:
            end = time.monotonic() + bound
            while not release.is_set() and time.monotonic() < end:
                pass
        self.loop.call_soon_threadsafe(busy)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_scrape_answers_during_a_stall_and_shows_it(impl):
    started = threading.Event()
    release = threading.Event()
    lt = _LoopThread()
    monitor = impl.LoopMonitor(lt.loop, resolution=0.01, stall_threshold=0.05,
                               on_stall=lambda e: e.ongoing and started.set())
    monitor.start()
    sources = Sources()
    assert sources.add_monitor(monitor) == "loop1"
    server = serve(0, sources=sources)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        lt.block(release)
        assert started.wait(10), "the stall was never reported"
        t0 = time.monotonic()
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
        elapsed = time.monotonic() - t0
        assert not release.is_set()
        assert elapsed < 5.0, elapsed  # wide: the loop thread shares the GIL
        fams = _families(text)
        current = _sample(fams, "loopwatch_eventloop_current_stall_seconds", loop="loop1")
        assert current > 0.05
        assert _sample(fams, "loopwatch_eventloop_stalls", "loopwatch_eventloop_stalls_total",
                       loop="loop1") >= 1
        assert _sample(fams, "loopwatch_eventloop_longest_stall_seconds", loop="loop1") >= current * 0.5
        assert fams["loopwatch_eventloop_stalls"].type == "counter"
        hist = fams["loopwatch_eventloop_lag_seconds"]
        assert hist.type == "histogram"
        buckets = [(s.labels["le"], s.value) for s in hist.samples if s.name.endswith("_bucket")]
        assert [le for le, _ in buckets] == [*(str(float(b)) for b in _figures.LAG_BUCKETS), "+Inf"]
        values = [v for _, v in buckets]
        assert values == sorted(values) and values[-1] > 0
        count = _sample(fams, "loopwatch_eventloop_lag_seconds",
                        "loopwatch_eventloop_lag_seconds_count", loop="loop1")
        assert values[-1] == count
        quantiles = {s.labels["quantile"]: s.value
                     for s in fams["loopwatch_eventloop_lag_quantile_seconds"].samples}
        assert set(quantiles) == {"0.5", "0.9", "0.99", "0.999"}
        assert quantiles["0.999"] >= quantiles["0.5"]
        assert quantiles["0.99"] > 0.01  # the stall's samples are in
    finally:
        release.set()
        server.stop()
        lt.close()
        monitor.stop()


def test_scrapes_do_not_reset_the_interval(impl):
    loop = asyncio.new_event_loop()
    try:
        monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.05)
        monitor.start()
        sources = Sources()
        sources.add_monitor(monitor, loop="main")
        collector = LoopwatchCollector(sources)
        loop.run_until_complete(asyncio.sleep(0.1))
        list(collector.collect())
        loop.run_until_complete(asyncio.sleep(0.1))
        families = {m.name: m for m in collector.collect()}
        assert [s.labels["loop"] for s in families["loopwatch_eventloop_lag_max_seconds"].samples] == ["main"]
        stats = monitor.snapshot()
        assert stats.interval.sample_count == stats.total.sample_count > 0
        assert stats.interval.start == stats.total.start
        monitor.stop()
    finally:
        loop.close()


def test_registry_metrics_sessions_stuck_and_evictions():
    now = [0.0]
    store: set[str] = {"kept"}
    registry = SessionRegistry(stuck_after=1.0, evict_after=5.0, clock=lambda: now[0],
                               store=lambda sid: sid in store)
    sources = Sources()
    assert sources.add_registry(registry) == "default"
    assert sources.add_registry(SessionRegistry(), "other") == "other"
    registry.open("ghost", state="processing")
    registry.open("kept", state="processing")
    registry.open("idle")
    now[0] = 2.0
    registry.check()
    families = {m.name: m for m in LoopwatchCollector(sources).collect()}
    by_state = {(s.labels["registry"], s.labels["state"]): s.value
                for s in families["loopwatch_sessions"].samples}
    assert by_state[("default", "processing")] == 1 and by_state[("default", "idle")] == 1
    assert by_state[("other", "idle")] == 0
    stuck = {s.labels["registry"]: s.value for s in families["loopwatch_sessions_stuck"].samples}
    assert stuck == {"default": 1, "other": 0}
    evictions = {(s.labels["registry"], s.labels["reason"]): s.value
                 for s in families["loopwatch_session_evictions"].samples}
    assert evictions[("default", "ghost")] == 1
    assert evictions[("default", "stuck_too_long")] == 0 and evictions[("other", "idle")] == 0
    assert families["loopwatch_session_evictions"].type == "counter"
    reports = {s.labels["registry"]: s.value
               for s in families["loopwatch_session_stuck_reports"].samples}
    assert reports["default"] == 1
    # Removed: no longer exported nor counted.
    assert sources.remove_registry(registry)
    assert registry._event_listeners == ()


def test_cumulative_buckets_from_hdr_buckets(impl):
    h = impl.Histogram()
    for us, n in ((500, 3), (1000, 1), (1001, 2), (7_000, 1), (2_000_000, 4), (20_000_000, 5)):
        h.record(us, n)
    counts = _figures.cumulative_buckets(h)
    assert len(counts) == len(_figures.LAG_BUCKETS) + 1
    # <=1ms: 500, 1000; <=5ms: +1001; <=10ms: +7000; <=2.5s: +2s; +Inf: +20s
    assert counts[0] == 4 and counts[1] == 6 and counts[2] == 7
    assert counts[_figures.LAG_BUCKETS.index(1.0)] == 7
    assert counts[_figures.LAG_BUCKETS.index(2.5)] == 11
    assert counts[-2] == 11 and counts[-1] == 16


def test_bad_arguments():
    with pytest.raises(ValueError):
        serve(70000)
    with pytest.raises(TypeError):
        serve("9090")
    with pytest.raises(TypeError):
        LoopwatchCollector(sources=[])
    with pytest.raises(TypeError):
        Sources().add_monitor(object())


def test_missing_prometheus_client_says_what_to_install():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "try:\n    import loopwatch.export.prometheus\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert "loopwatch[prometheus]" in out.stdout, out.stderr
