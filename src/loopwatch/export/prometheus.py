"""Prometheus: a ``prometheus_client`` collector for loopwatch's loop
monitors and session registries, and an HTTP endpoint serving it.

Needs ``prometheus_client`` (``pip install "loopwatch[prometheus]"``)::

    from prometheus_client import REGISTRY
    from loopwatch.export.prometheus import LoopwatchCollector, add_monitor

    add_monitor(monitor)                     # or Diagnostics / loopwatch run do it
    REGISTRY.register(LoopwatchCollector())  # scraped with the app's own metrics

or :func:`serve` (what ``loopwatch run --prometheus-port`` does): a
``prometheus_client`` HTTP server on its own thread, with a registry that
holds only this collector; it answers while the event loop is blocked in
Python code (the loop thread lets the GIL go every few milliseconds).

Metrics (labels ``loop``: ``loop1``, ``loop2``... per process, or the
name given to :func:`add_monitor`; ``registry``: ``default``... or the
name given to :func:`add_registry`). Latencies are in seconds over each
monitor's whole run (its ``total`` window); a scrape never resets a
monitor's interval.

======================================================  =========  ===============================
name                                                    type       meaning
======================================================  =========  ===============================
``loopwatch_eventloop_lag_seconds``                     histogram  lag samples, fixed buckets 1 ms .. 10 s, +Inf
``loopwatch_eventloop_lag_quantile_seconds``            gauge      lag at ``quantile`` 0.5, 0.9, 0.99, 0.999
``loopwatch_eventloop_lag_max_seconds``                 gauge      largest lag sample
``loopwatch_eventloop_delay_quantile_seconds``          gauge      the loop's own timer delay at ``quantile``
``loopwatch_eventloop_utilization_ratio``               gauge      share of running time not waiting for I/O
``loopwatch_eventloop_cpu_core_ratio``                  gauge      process CPU time / wall time
``loopwatch_eventloop_stalls_total``                    counter    stalls (lag past the threshold)
``loopwatch_eventloop_stalled_seconds_total``           counter    time spent stalled, the ongoing stall included
``loopwatch_eventloop_longest_stall_seconds``           gauge      the longest stall (the ongoing one so far)
``loopwatch_eventloop_current_stall_seconds``           gauge      the ongoing stall's length so far; 0 when none
``loopwatch_eventloop_watched_seconds_total``           counter    time the monitor has watched the loop
``loopwatch_sessions``                                  gauge      sessions by ``state``
``loopwatch_sessions_stuck``                            gauge      sessions stuck now
``loopwatch_session_evictions_total``                   counter    evictions by ``reason`` (ghost, stuck_too_long, idle)
``loopwatch_session_stuck_reports_total``               counter    stuck reports
======================================================  =========  ===============================
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "loopwatch.export.prometheus needs prometheus_client: "
        "pip install 'loopwatch[prometheus]' (or: pip install prometheus_client)"
    ) from exc

from . import _figures
from .sources import Sources, default_sources

__all__ = ["LoopwatchCollector", "PrometheusServer", "add_monitor", "add_registry", "serve"]

_PREFIX = "loopwatch_"


def add_monitor(monitor: Any, loop: str | None = None) -> str:
    """Export a :class:`loopwatch.LoopMonitor` (the process's default
    sources); returns its ``loop`` label."""
    return default_sources().add_monitor(monitor, loop=loop)


def add_registry(registry: Any, name: str | None = None) -> str:
    """Export a :class:`loopwatch.SessionRegistry` (the process's default
    sources); returns its ``registry`` label."""
    return default_sources().add_registry(registry, name=name)


def _le(bound: float) -> str:
    return repr(float(bound))


class LoopwatchCollector(Collector):
    """A ``prometheus_client`` custom collector of loopwatch's figures.

    Args:
        sources: a :class:`loopwatch.export.sources.Sources`; None reads the
            process's default sources (what :func:`add_monitor`,
            ``Diagnostics`` and ``loopwatch run`` add to) at each scrape.

    Register it with a ``CollectorRegistry`` (the global ``REGISTRY`` or
    one of your own). Each scrape takes one snapshot per monitor (without
    resetting its interval) and reads each registry's counts and sessions
    (O(sessions), as ``loopwatch status`` does).
    """

    def __init__(self, sources: Sources | None = None) -> None:
        if sources is not None and not isinstance(sources, Sources):
            raise TypeError("sources must be a loopwatch.export.sources.Sources or None")
        self._sources = sources

    @property
    def sources(self) -> Sources:
        """The sources read at each scrape."""
        return self._sources if self._sources is not None else default_sources()

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: registering must not take snapshots, and the
        # families depend on what is watched at scrape time.
        return []

    def collect(self) -> Iterator[Metric]:
        sources = self.sources
        loops = [f for f in (_figures.read_loop(s.name, s.monitor) for s in sources.monitors())
                 if f is not None]
        registries = [_figures.read_registry(s) for s in sources.registries()]
        yield from _loop_families(loops)
        yield from _registry_families(registries)


def _loop_families(loops: list[_figures.LoopFigures]) -> Iterator[Metric]:
    p = _PREFIX + "eventloop_"
    hist = HistogramMetricFamily(
        p + "lag_seconds",
        "Event loop lag sampled from outside the loop at uniform times, over the monitor's run",
        labels=["loop"])
    lag_q = GaugeMetricFamily(
        p + "lag_quantile_seconds",
        "Event loop lag at a quantile, over the monitor's run", labels=["loop", "quantile"])
    lag_max = GaugeMetricFamily(p + "lag_max_seconds", "Largest event loop lag sample",
                                labels=["loop"])
    delay_q = GaugeMetricFamily(
        p + "delay_quantile_seconds",
        "Firing delay of the monitor's own loop callback at a quantile, over the monitor's run",
        labels=["loop", "quantile"])
    util = GaugeMetricFamily(
        p + "utilization_ratio",
        "Share of the loop's running time not spent waiting for I/O, over the monitor's run",
        labels=["loop"])
    cpu = GaugeMetricFamily(p + "cpu_core_ratio",
                            "Process CPU time over wall time, over the monitor's run",
                            labels=["loop"])
    stalls = CounterMetricFamily(p + "stalls", "Event loop stalls (lag past the threshold)",
                                 labels=["loop"])
    stalled = CounterMetricFamily(p + "stalled_seconds",
                                  "Time the loop spent stalled, the ongoing stall included",
                                  labels=["loop"])
    longest = GaugeMetricFamily(p + "longest_stall_seconds",
                                "The longest stall so far (an ongoing one counts so far)",
                                labels=["loop"])
    current = GaugeMetricFamily(p + "current_stall_seconds",
                                "Length so far of the stall going on now; 0 when none",
                                labels=["loop"])
    watched = CounterMetricFamily(p + "watched_seconds", "Time the monitor has watched the loop",
                                  labels=["loop"])
    for f in loops:
        labels = [f.name]
        cumulative = _figures.cumulative_buckets(f.lag_histogram)
        buckets = [(_le(b), c) for b, c in zip(_figures.LAG_BUCKETS, cumulative)]
        buckets.append(("+Inf", cumulative[-1]))
        hist.add_metric(labels, buckets, f.lag_sum)
        for q in _figures.QUANTILES:
            lag_q.add_metric([f.name, repr(q)], f.lag_quantiles[q])
            delay_q.add_metric([f.name, repr(q)], f.delay_quantiles[q])
        lag_max.add_metric(labels, f.lag_max)
        if f.utilization is not None:
            util.add_metric(labels, f.utilization)
        if f.cpu_core_ratio is not None:
            cpu.add_metric(labels, f.cpu_core_ratio)
        stalls.add_metric(labels, f.stall_count)
        stalled.add_metric(labels, f.stalled_seconds)
        longest.add_metric(labels, f.longest_stall)
        current.add_metric(labels, f.current_stall)
        watched.add_metric(labels, f.duration)
    yield from (hist, lag_q, lag_max, delay_q, util, cpu, stalls, stalled, longest, current,
                watched)


def _registry_families(registries: list[_figures.RegistryFigures]) -> Iterator[Metric]:
    sessions = GaugeMetricFamily(_PREFIX + "sessions", "Sessions by state",
                                 labels=["registry", "state"])
    stuck = GaugeMetricFamily(_PREFIX + "sessions_stuck", "Sessions stuck now",
                              labels=["registry"])
    evictions = CounterMetricFamily(_PREFIX + "session_evictions",
                                    "Sessions evicted, by reason", labels=["registry", "reason"])
    reports = CounterMetricFamily(_PREFIX + "session_stuck_reports", "Stuck session reports",
                                  labels=["registry"])
    for r in registries:
        for state, n in sorted(r.counts.items()):
            sessions.add_metric([r.name, state], n)
        stuck.add_metric([r.name], r.stuck)
        for reason, n in sorted(r.evictions.items()):
            evictions.add_metric([r.name, reason], n)
        reports.add_metric([r.name], r.stuck_reports)
    yield from (sessions, stuck, evictions, reports)


class PrometheusServer:
    """A running metrics endpoint (see :func:`serve`).

    Attributes:
        host, port: where it listens (``port`` is the real one when 0 was
            asked for).
        registry: its ``CollectorRegistry``, holding only the collector.
        collector: the :class:`LoopwatchCollector`.
    """

    def __init__(self, server: Any, thread: Any, registry: CollectorRegistry,
                 collector: LoopwatchCollector, host: str) -> None:
        self._server = server
        self._thread = thread
        self.registry = registry
        self.collector = collector
        self.host = host
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and join the server's thread (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(port: int = 0, host: str = "127.0.0.1", sources: Sources | None = None) -> PrometheusServer:
    """Serve the collector over HTTP (``prometheus_client.start_http_server``)
    on its own daemon thread, with a registry that holds only it.

    Args:
        port: TCP port; 0 asks the OS for a free one (see ``.port``).
        host: the address to bind; loopback by default. Bind another one
            only on purpose: the metrics name the process's loops.
        sources: as for :class:`LoopwatchCollector`.

    Raises:
        OSError: the address cannot be bound.
        ValueError, TypeError: a port outside 0..65535 or not an int.
    """
    from prometheus_client import start_http_server

    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    if not isinstance(host, str) or not host:
        raise TypeError("host must be a non-empty str")
    collector = LoopwatchCollector(sources)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    started = start_http_server(port, addr=host, registry=registry)
    if not isinstance(started, tuple):  # pragma: no cover - prometheus_client < 0.17
        raise RuntimeError("loopwatch needs prometheus_client >= 0.17")
    server, thread = started
    return PrometheusServer(server, thread, registry, collector, host)
