"""The lag interval log thread (what ``loopwatch run --hlog`` runs), read
back with the hdrhistogram package; both implementations."""

from __future__ import annotations

import asyncio
import time

import pytest

hdrh_log = pytest.importorskip("hdrh.log")
from hdrh.histogram import HdrHistogram  # noqa: E402

from loopwatch.export.hlog import LagLogger  # noqa: E402
from loopwatch.export.sources import Sources  # noqa: E402
from loopwatch.hdr.log import HistogramLogReader  # noqa: E402


def test_intervals_add_up_to_the_monitor_total(impl, tmp_path):
    path = tmp_path / "lag.hlog"
    loop = asyncio.new_event_loop()
    monitor = impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.05)
    sources = Sources()
    logger = LagLogger(str(path), 0.1, sources=sources)
    try:
        monitor.start()
        sources.add_monitor(monitor)
        logger.start()

        async def work() -> None:
            await asyncio.sleep(0.15)
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                pass
            await asyncio.sleep(0.15)

        loop.run_until_complete(work())
        monitor.stop()
        logger.stop()        # writes the last lines
        total = monitor.snapshot(reset_interval=False).total
    finally:
        monitor.stop()
        loop.close()
    intervals = list(HistogramLogReader(str(path), histogram_class=impl.Histogram))
    assert len(intervals) >= 3
    assert {iv.tag for iv in intervals} == {"loop1"}
    assert sum(iv.histogram.total_count for iv in intervals) == total.sample_count
    assert max(iv.histogram.max for iv in intervals) == total.lag_histogram.max
    starts = [iv.start for iv in intervals]
    assert starts == sorted(starts)
    # Each interval starts where the previous one ended (3 decimals).
    for a, b in zip(intervals, intervals[1:]):
        assert b.start == pytest.approx(a.start + a.length, abs=0.002)
    # The hdrhistogram package reads the same log.
    reader = hdrh_log.HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
    try:
        counts = []
        while (h := reader.get_next_interval_histogram()) is not None:
            assert h.get_tag() == "loop1"
            counts.append(h.get_total_count())
    finally:
        reader.close()
    assert counts == [iv.histogram.total_count for iv in intervals]


def test_bad_interval():
    with pytest.raises(ValueError):
        LagLogger("/dev/null", 0)
    with pytest.raises(TypeError):
        LagLogger("/dev/null", "1")
