"""Histogram speed: native, the pure-Python twin, and the ``hdrhistogram``
package (HdrHistogram_py), measured in one run, with the ratios printed at
the end of the module.

    python -m pytest benchmarks/hdr/bench_histogram.py -s
"""

from __future__ import annotations

import random

import pytest
from hdrh.histogram import HdrHistogram

from loopwatch._selector import load_implementation

BATCH = 1000  # calls per timed round, so the timer's own cost disappears
FILL = 100_000
MEDIANS: dict[tuple[str, str], float] = {}


def _values(n, seed=3):
    rnd = random.Random(seed)
    # microsecond latencies: mostly sub-millisecond, a long tail to seconds
    return [int(rnd.lognormvariate(6, 1.5)) for _ in range(n)]


class Ref:
    """The hdrhistogram package behind the names the benchmarks call."""

    def __init__(self):
        self.h = HdrHistogram(1, 3_600_000_000, 3)
        self.record = self.h.record_value
        self.value_at_percentile = self.h.get_value_at_percentile
        self.encode = self.h.encode

    @staticmethod
    def decode(data):
        return HdrHistogram.decode(data)


def _make(kind):
    if kind == "hdrhistogram":
        return Ref()
    return load_implementation(kind).Histogram(1, 3_600_000_000, 3)


KINDS = ["native", "python", "hdrhistogram"]


def _filled(kind):
    h = _make(kind)
    for v in _values(FILL):
        h.record(v)
    return h


def _keep(benchmark, op, kind):
    MEDIANS[(op, kind)] = benchmark.stats.stats.median


@pytest.mark.parametrize("kind", KINDS)
def test_record(benchmark, kind):
    h = _make(kind)
    record = h.record
    values = _values(BATCH)

    def run():
        for v in values:
            record(v)

    benchmark.group = f"record() x{BATCH}"
    benchmark(run)
    _keep(benchmark, "record", kind)


@pytest.mark.parametrize("kind", KINDS)
def test_p99(benchmark, kind):
    h = _filled(kind)
    benchmark.group = "value_at_percentile(99), 10^5 values"
    benchmark(h.value_at_percentile, 99.0)
    _keep(benchmark, "p99", kind)


@pytest.mark.parametrize("kind", KINDS)
def test_encode(benchmark, kind):
    h = _filled(kind)
    benchmark.group = "encode(), 10^5 values"
    benchmark(h.encode)
    _keep(benchmark, "encode", kind)


@pytest.mark.parametrize("kind", KINDS)
def test_decode(benchmark, kind):
    data = _filled("native").encode()
    decode = (Ref.decode if kind == "hdrhistogram" else load_implementation(kind).Histogram.decode)
    benchmark.group = "decode(), 10^5 values"
    benchmark(decode, data)
    _keep(benchmark, "decode", kind)


@pytest.fixture(scope="module", autouse=True)
def ratio_report():
    yield
    print("\n\nHistogram: how many times faster than the hdrhistogram package (median of rounds)")
    print(f"{'operation':<10} {'native':>10} {'python twin':>12}")
    for op in ("record", "p99", "encode", "decode"):
        base = MEDIANS.get((op, "hdrhistogram"))
        if not base:
            continue
        cells = [f"{base / MEDIANS[(op, k)]:.1f}x" if (op, k) in MEDIANS else "-" for k in ("native", "python")]
        print(f"{op:<10} {cells[0]:>10} {cells[1]:>12}")
