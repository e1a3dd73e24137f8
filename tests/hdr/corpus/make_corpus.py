"""Write the .hlog corpus of this folder with another implementation.

The files are HdrHistogram interval logs as written by the ``hdrhistogram``
package (HdrHistogram_py: its HistogramLogWriter and its encoder), so the
tests read data that loopwatch did not produce. Run from anywhere:

    python tests/hdr/corpus/make_corpus.py

It is deterministic (fixed seeds): running it again rewrites the same files.
The configurations cover 1 to 5 significant figures, ranges up to 2**62 and
2**63 - 1, sparse and dense data, and values past highest_trackable that
still fall inside the counts array (the reference records those; loopwatch
must read them back as they are).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

HERE = Path(__file__).resolve().parent
START_MSEC = 1_700_000_000_000  # a fixed epoch time, so the files never change


def _top(hist: HdrHistogram) -> int:
    """The largest value the reference records: the end of its counts array."""
    return hist.get_highest_equivalent_value(hist.get_value_from_index(hist.counts_len - 1))


def _fill(rng: random.Random, hist: HdrHistogram, kind: str, n: int) -> None:
    lowest, highest = hist.lowest_trackable_value, hist.highest_trackable_value
    top = _top(hist)
    for _ in range(n):
        if kind == "dense":  # many values in a narrow band: every bucket there used
            value = int(rng.lognormvariate(0, 0.6) * lowest * 800)
        elif kind == "sparse":  # few values spread over the whole range
            value = int(2 ** rng.uniform(0, highest.bit_length() - 1))
        elif kind == "past-highest":  # between highest_trackable and the array's end
            value = rng.randint(highest, top)
        else:  # "latency": a long-tailed mix
            value = int(rng.paretovariate(1.2) * lowest * 100)
        value = min(value, top)
        assert hist.record_value(value, rng.choice([1, 1, 1, 2, 7, 1000])), (value, top)


# (file name, [(tag or None, lowest, highest, figures, kind, values)])
FILES = [
    ("figures1_wide.hlog", [
        (None, 1, 2**62, 1, "sparse", 200),
        (None, 1, 2**62, 1, "latency", 500),
        ("wide", 1000, 10**12, 1, "sparse", 100),
    ]),
    ("figures2_int64.hlog", [
        (None, 1, 2**63 - 1, 2, "sparse", 300),
        ("edge", 1, 2**62, 2, "past-highest", 50),
        ("edge", 3, 2**61, 2, "latency", 400),
    ]),
    ("figures3_latency.hlog", [
        (None, 1, 3_600_000_000, 3, "latency", 2000),
        (None, 1, 3_600_000_000, 3, "dense", 3000),
        ("api", 1, 3_600_000_000, 3, "latency", 500),
        ("api", 1, 3_600_000_000, 3, "sparse", 40),
        (None, 1, 1000, 3, "past-highest", 30),
    ]),
    ("figures4_ns.hlog", [
        (None, 1000, 60 * 10**9, 4, "latency", 1500),
        ("db", 1, 10**7, 4, "dense", 1500),
    ]),
    ("service_us.hlog", [  # a typical log: one-second intervals of a service
        ("svc" if i % 3 == 0 else None, 1, 3_600_000_000, 3, ["latency", "dense", "sparse"][i % 3], 300 * (i + 1))
        for i in range(12)
    ]),
    ("figures5_small.hlog", [
        (None, 1, 100_000, 5, "dense", 1500),
        ("tight", 1, 1000, 5, "past-highest", 200),
    ]),
]


def write_file(name: str, intervals: list) -> str:
    rng = random.Random(name)
    out = io.StringIO()
    writer = HistogramLogWriter(out)
    writer.output_comment("[Logged with make_corpus.py (hdrhistogram package)]")
    writer.output_log_format_version()
    # Java's line; the package's own output_start_time() is broken
    out.write(f"#[StartTime: {START_MSEC / 1000:.3f} (seconds since epoch), 2023-11-14 22:13:20]\n")
    writer.output_base_time(START_MSEC)
    writer.output_legend()
    for i, (tag, lowest, highest, figures, kind, n) in enumerate(intervals):
        hist = HdrHistogram(lowest, highest, figures)
        _fill(rng, hist, kind, n)
        if tag:
            out.write(f"Tag={tag},")
        writer.output_interval_histogram(
            hist, start_time_stamp_sec=1.0 + i, end_time_stamp_sec=2.0 + i, max_value_unit_ratio=1.0)
    return out.getvalue()


def main() -> None:
    for name, intervals in FILES:
        (HERE / name).write_text(write_file(name, intervals))
        print(name, (HERE / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
