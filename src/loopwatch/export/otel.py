"""OpenTelemetry: loopwatch's figures as observable instruments of an
OpenTelemetry meter. Needs ``opentelemetry-api``
(``pip install "loopwatch[otel]"``) and, to export anything, an SDK
``MeterProvider`` with a reader/exporter (the application's)::

    from loopwatch.export import otel
    handle = otel.instrument()          # the global MeterProvider, the default sources
    ...
    handle.close()                      # stop reporting (callbacks detached)

Names follow OpenTelemetry's semantic conventions for Node.js's event loop
(``nodejs.eventloop.delay.p50`` ..., ``nodejs.eventloop.utilization``:
the only runtime that has event loop conventions; there are none for
Python's asyncio), under ``loopwatch.``, units in UCUM (``s``, ``1``).
``delay`` here is loopwatch's *lag* (sampled from outside the loop at
uniform times: the delay a request arriving at a random moment meets; the
liveness line's ``eventLoopDelay*`` fields are the same figure).
Attributes: ``loopwatch.loop`` (``loop1``...) and ``loopwatch.registry``.

==========================================  ========================  =====  ===========================
instrument                                  kind                      unit   meaning
==========================================  ========================  =====  ===========================
``loopwatch.eventloop.delay.p50/p90/p99``   observable gauge          s      lag percentiles, monitor's run
``loopwatch.eventloop.delay.p999``          observable gauge          s      lag p99.9
``loopwatch.eventloop.delay.max``           observable gauge          s      largest lag sample
``loopwatch.eventloop.delay``               histogram                 s      the lag samples themselves (below)
``loopwatch.eventloop.utilization``         observable gauge          1      share of running time not waiting
``loopwatch.eventloop.cpu_core_ratio``      observable gauge          1      process CPU time / wall time
``loopwatch.eventloop.stalls``              observable counter        {stall}  stalls so far
``loopwatch.eventloop.stall.time``          observable counter        s      time stalled, the ongoing stall included
``loopwatch.eventloop.stall.longest``       observable gauge          s      the longest stall
``loopwatch.eventloop.stall.current``       observable gauge          s      the ongoing stall so far; 0 when none
``loopwatch.sessions``                      observable up-down counter  {session}  sessions by ``loopwatch.session.state``
``loopwatch.sessions.stuck``                observable up-down counter  {session}  sessions stuck now
``loopwatch.session.evictions``             observable counter        {session}  evictions by ``loopwatch.session.eviction.reason``
``loopwatch.session.stuck_reports``         observable counter        {report}  stuck reports
==========================================  ========================  =====  ===========================

The lag histogram: OpenTelemetry has no observable histogram, so
``loopwatch.eventloop.delay`` is a synchronous Histogram fed at each
collection: the first callback of a collection reads every monitor, and
records the samples taken since the previous collection (the difference of
the monitor's cumulative lag histogram between the two readings; each
HDR bucket's count recorded at the bucket's value, in seconds). The SDK
runs observable callbacks before it aggregates, so those samples are in
the same collection. Bucket boundaries are advised as the Prometheus
exporter's (1 ms .. 10 s) where the API supports the advice (>= 1.23).
Collections never reset a monitor's interval.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

try:
    from opentelemetry import metrics as _otel_metrics
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "loopwatch.export.otel needs the OpenTelemetry API: "
        "pip install 'loopwatch[otel]' (or: pip install opentelemetry-api)"
    ) from exc

from .. import __version__
from . import _figures
from .sources import Sources, default_sources

__all__ = ["Instrumentation", "instrument"]

_P = "loopwatch.eventloop."
_LOOP = "loopwatch.loop"
_REGISTRY = "loopwatch.registry"
_STATE = "loopwatch.session.state"
_REASON = "loopwatch.session.eviction.reason"


class Instrumentation:
    """The instruments :func:`instrument` created. :meth:`close` makes their
    callbacks report nothing from then on (the OpenTelemetry API cannot
    unregister an observable instrument)."""

    def __init__(self, meter: Any, sources: Sources | None) -> None:
        self.meter = meter
        self._sources = sources
        self._lock = threading.Lock()
        self._closed = False
        # One reading per collection, shared by every callback of it.
        self._loops: list[_figures.LoopFigures] = []
        self._registries: list[_figures.RegistryFigures] = []
        self._previous: dict[int, tuple[Any, Any]] = {}  # id(monitor) -> (monitor, lag hist)
        self.instruments: dict[str, Any] = {}

    @property
    def sources(self) -> Sources:
        return self._sources if self._sources is not None else default_sources()

    def close(self) -> None:
        """Stop reporting."""
        with self._lock:
            self._closed = True
            self._loops, self._registries = [], []

    # -- collection ------------------------------------------------------------
    def _read(self, options: CallbackOptions) -> Iterable[Observation]:
        """The first callback of a collection: read every source once, feed
        the lag histogram, then report nothing itself."""
        with self._lock:
            if self._closed:
                return []
            sources = self.sources
            loops = []
            for source in sources.monitors():
                figures = _figures.read_loop(source.name, source.monitor)
                if figures is None:
                    continue
                loops.append(figures)
                self._feed(source.monitor, figures)
            self._loops = loops
            self._registries = [_figures.read_registry(s) for s in sources.registries()]
        return []

    def _feed(self, monitor: Any, figures: _figures.LoopFigures) -> None:
        histogram = self.instruments.get(_P + "delay")
        if histogram is None:
            return
        key = id(monitor)
        entry = self._previous.get(key)
        before = entry[1] if entry is not None and entry[0] is monitor else None
        now = figures.lag_histogram
        attributes = {_LOOP: figures.name}
        for value, count in now.recorded():
            if before is not None:
                count -= before.count_at(value)
            seconds = value / 1e6
            for _ in range(count):
                histogram.record(seconds, attributes)
        self._previous[key] = (monitor, now)

    def _loop_gauge(self, pick: Any) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for f in self._loops:
                value = pick(f)
                if value is not None:
                    out.append(Observation(value, {_LOOP: f.name}))
            return out
        return callback

    def _sessions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {_REGISTRY: r.name, _STATE: state})
                for r in self._registries for state, n in sorted(r.counts.items())]

    def _stuck(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(r.stuck, {_REGISTRY: r.name}) for r in self._registries]

    def _evictions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {_REGISTRY: r.name, _REASON: reason})
                for r in self._registries for reason, n in sorted(r.evictions.items())]

    def _reports(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(r.stuck_reports, {_REGISTRY: r.name}) for r in self._registries]


def instrument(meter_provider: Any = None, sources: Sources | None = None) -> Instrumentation:
    """Create loopwatch's instruments on a meter named ``loopwatch``.

    Args:
        meter_provider: an OpenTelemetry ``MeterProvider`` (None: the global
            one, ``opentelemetry.metrics.get_meter_provider()``).
        sources: a :class:`loopwatch.export.sources.Sources` (None: the
            process's default sources, read at each collection).

    Returns the :class:`Instrumentation` (``.instruments`` by name,
    ``.close()``). Call it once per provider: each call adds another set of
    instruments.
    """
    if sources is not None and not isinstance(sources, Sources):
        raise TypeError("sources must be a loopwatch.export.sources.Sources or None")
    if meter_provider is None:
        meter_provider = _otel_metrics.get_meter_provider()
    meter = meter_provider.get_meter("loopwatch", __version__)
    inst = Instrumentation(meter, sources)
    made = inst.instruments

    # The reader comes first: the SDK runs callbacks in creation order.
    made["_read"] = meter.create_observable_gauge(
        "loopwatch.collection", callbacks=[inst._read], unit="1",
        description="(reports nothing: reads loopwatch's sources once per collection)")
    try:
        made[_P + "delay"] = meter.create_histogram(
            _P + "delay", unit="s",
            description="Event loop lag samples (sampled from outside the loop at uniform times)",
            explicit_bucket_boundaries_advisory=list(_figures.LAG_BUCKETS))
    except TypeError:  # opentelemetry-api < 1.23: no advice
        made[_P + "delay"] = meter.create_histogram(
            _P + "delay", unit="s",
            description="Event loop lag samples (sampled from outside the loop at uniform times)")

    def gauge(name: str, pick: Any, unit: str, description: str) -> None:
        made[name] = meter.create_observable_gauge(
            name, callbacks=[inst._loop_gauge(pick)], unit=unit, description=description)

    def counter(name: str, pick: Any, unit: str, description: str) -> None:
        made[name] = meter.create_observable_counter(
            name, callbacks=[inst._loop_gauge(pick)], unit=unit, description=description)

    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
        gauge(_P + "delay." + label, lambda f, q=q: f.lag_quantiles[q], "s",
              f"Event loop lag, {label} over the monitor's run")
    gauge(_P + "delay.max", lambda f: f.lag_max, "s", "Largest event loop lag sample")
    gauge(_P + "utilization", lambda f: f.utilization, "1",
          "Share of the loop's running time not spent waiting for I/O")
    gauge(_P + "cpu_core_ratio", lambda f: f.cpu_core_ratio, "1",
          "Process CPU time over wall time")
    counter(_P + "stalls", lambda f: f.stall_count, "{stall}",
            "Event loop stalls (lag past the threshold)")
    counter(_P + "stall.time", lambda f: f.stalled_seconds, "s",
            "Time the loop spent stalled, the ongoing stall included")
    gauge(_P + "stall.longest", lambda f: f.longest_stall, "s", "The longest stall so far")
    gauge(_P + "stall.current", lambda f: f.current_stall, "s",
          "Length so far of the stall going on now; 0 when none")
    made["loopwatch.sessions"] = meter.create_observable_up_down_counter(
        "loopwatch.sessions", callbacks=[inst._sessions], unit="{session}",
        description="Sessions by state")
    made["loopwatch.sessions.stuck"] = meter.create_observable_up_down_counter(
        "loopwatch.sessions.stuck", callbacks=[inst._stuck], unit="{session}",
        description="Sessions stuck now")
    made["loopwatch.session.evictions"] = meter.create_observable_counter(
        "loopwatch.session.evictions", callbacks=[inst._evictions], unit="{session}",
        description="Sessions evicted, by reason")
    made["loopwatch.session.stuck_reports"] = meter.create_observable_counter(
        "loopwatch.session.stuck_reports", callbacks=[inst._reports], unit="{report}",
        description="Stuck session reports")
    return inst
