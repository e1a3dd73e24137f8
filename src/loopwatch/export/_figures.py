"""What every exporter reads from a monitor or a registry, read once per
collection and in base units (seconds). Reading never resets a monitor's
interval: snapshots are taken with ``reset_interval=False``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["LAG_BUCKETS", "QUANTILES", "LoopFigures", "RegistryFigures", "cumulative_buckets",
           "histogram_difference", "read_loop", "read_registry"]

#: Fixed lag histogram bucket bounds, seconds (the +Inf bucket is implied):
#: the same for every process, so a fleet's histograms add up.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The quantiles reported as gauges (over the monitor's whole run).
QUANTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass(frozen=True)
class LoopFigures:
    """One monitor's figures at a collection (seconds; ratios as 0..1)."""

    name: str
    lag_quantiles: dict[float, float]     # quantile -> seconds, total window
    lag_max: float
    lag_count: int
    lag_sum: float                        # mean x count (bucket midpoints)
    lag_histogram: Any                    # the total window's, microseconds
    delay_quantiles: dict[float, float]
    delay_max: float
    utilization: float | None
    cpu_core_ratio: float | None
    stall_count: int
    longest_stall: float
    current_stall: float                  # the ongoing stall's length so far, 0 when none
    stalled_seconds: float                # all stalls so far, the ongoing one included
    duration: float                       # seconds watched (the total window)
    running: bool


@dataclass(frozen=True)
class RegistryFigures:
    """One registry's figures at a collection."""

    name: str
    counts: dict[str, int]
    stuck: int
    evictions: dict[str, int]
    stuck_reports: int


def _quantiles(hist: Any) -> dict[float, float]:
    values = hist.percentiles([q * 100.0 for q in QUANTILES])
    return {q: values[q * 100.0] / 1e6 for q in QUANTILES}


def read_loop(name: str, monitor: Any) -> LoopFigures | None:
    """The figures of one monitor, or None if it was never started."""
    try:
        stats = monitor.snapshot(reset_interval=False)
    except RuntimeError:
        return None
    total = stats.total
    current = 0.0
    report = monitor.current_stall()
    if report is not None:
        current = max(0.0, time.monotonic() - report.started_at)
    lag = total.lag_histogram
    return LoopFigures(
        name=name,
        lag_quantiles=_quantiles(lag),
        lag_max=lag.max / 1e6,
        lag_count=lag.total_count,
        lag_sum=lag.mean * lag.total_count / 1e6,
        lag_histogram=lag,
        delay_quantiles=_quantiles(total.delay_histogram),
        delay_max=total.delay_histogram.max / 1e6,
        utilization=total.utilization,
        cpu_core_ratio=total.cpu_core_ratio,
        stall_count=total.stall_count,
        longest_stall=max(total.longest_stall, current),
        current_stall=current,
        stalled_seconds=monitor.stalled_seconds(),
        duration=total.duration,
        running=stats.running,
    )


def read_registry(source: Any) -> RegistryFigures:
    """The figures of one :class:`~loopwatch.export.sources.RegistrySource`."""
    registry = source.registry
    counts = registry.counts()
    stuck = len(registry.stuck())  # O(stuck sessions), never a walk of every session
    return RegistryFigures(source.name, counts, stuck, source.evictions(), source.stuck_reports)


def cumulative_buckets(hist: Any, bounds: tuple[float, ...] = LAG_BUCKETS) -> list[int]:
    """Cumulative counts of a histogram of microseconds at each bound
    (seconds), then the total (+Inf). Each HDR bucket counts at the first
    bound at or above its upper end (the value ``recorded()`` gives, the one
    percentiles report), so a value within the histogram's precision
    (0.1 % at 3 figures) above a bound may count in the next bucket."""
    limits = [round(b * 1e6) for b in bounds]
    counts = [0] * (len(limits) + 1)
    for value, count in hist.recorded():
        i = 0
        while i < len(limits) and value > limits[i]:
            i += 1
        counts[i] += count
    out, running = [], 0
    for c in counts:
        running += c
        out.append(running)
    return out


def histogram_difference(now: Any, before: Any | None, histogram_class: Any) -> Any:
    """``now - before`` for two histograms of one layout where ``before``'s
    counts are all in ``now`` (a cumulative histogram read twice): a new
    histogram of ``histogram_class`` holding what was recorded in between.
    Each bucket is recorded at its upper end (so min, max and percentiles are
    the bucket-precise values the originals give)."""
    out = histogram_class(now.lowest_trackable, now.highest_trackable, now.significant_figures)
    for value, count in now.recorded():
        if before is not None:
            count -= before.count_at(value)
        if count > 0:
            out.record(value, count)
    return out
