"""Real interval logs (.hlog) written by another implementation (the
``hdrhistogram`` package: see corpus/make_corpus.py): every histogram line
decodes with loopwatch to the same answers as the package's own decoder, and
re-encodes to the same bytes."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

CORPUS = Path(__file__).resolve().parent / "corpus"
# The files make_corpus.py writes (their first line says so); the logs of the
# other encoders in the folder (HdrHistogram Java, HdrHistogram_c: see
# corpus/SOURCES.md) are checked by test_corpus_real.py.
MARK = "#[Logged with make_corpus.py (hdrhistogram package)]"
FILES = sorted(p for p in CORPUS.glob("*.hlog") if p.read_text().startswith(MARK + "\n"))
PERCENTILES = [0, 1, 10, 50, 90, 99, 99.9, 99.99, 100]


def histogram_lines(path: Path) -> list[tuple[str | None, float, str]]:
    """(tag, interval max, base64 histogram) of each interval line."""
    out = []
    for line in path.read_text().splitlines():
        if not line or line.startswith(("#", '"')):
            continue
        tag = None
        if line.startswith("Tag="):
            tag, line = line[4:].split(",", 1)
        _start, _length, interval_max, payload = line.split(",")
        out.append((tag, float(interval_max), payload))
    return out


@functools.lru_cache(maxsize=None)
def reference_answers(payload: str) -> dict:
    """What the hdrhistogram package decodes (computed once for both impls)."""
    ref = HdrHistogram.decode(payload)
    return {
        "config": (ref.lowest_trackable_value, ref.highest_trackable_value, ref.significant_figures),
        "total": ref.get_total_count(),
        "min": ref.get_min_value(),
        "max": ref.get_max_value(),
        "mean": ref.get_mean_value(),
        "stdev": ref.get_stddev(),
        "percentiles": {p: ref.get_value_at_percentile(p) for p in PERCENTILES},
        "recorded": [(i.value_iterated_to, i.count_at_value_iterated_to)
                     for i in ref.get_recorded_iterator()],
    }


def test_corpus_is_there_and_small():
    assert len(FILES) >= 5
    assert sum(f.stat().st_size for f in FILES) < 300_000
    assert sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file()) < 1_000_000
    lines = [line for f in FILES for line in histogram_lines(f)]
    assert len(lines) >= 25
    assert any(tag for tag, _, _ in lines)  # tagged lines are parsed too


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_reference_reader_sees_the_same_lines(path):
    reader = HistogramLogReader(str(path), HdrHistogram(1, 2**62, 3))
    count = 0
    while reader.get_next_interval_histogram() is not None:
        count += 1
    assert count == len(histogram_lines(path))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_decodes_like_the_reference(impl, path):
    for tag, interval_max, payload in histogram_lines(path):
        ref = reference_answers(payload)
        ours = impl.Histogram.decode(payload)
        where = (path.name, tag, ref["config"])
        assert (ours.lowest_trackable, ours.highest_trackable, ours.significant_figures) == ref["config"]
        assert ours.total_count == ref["total"] > 0, where
        assert ours.saturated_count == 0, where  # every value is a real one
        assert ours.min == ref["min"], where
        assert ours.max == ref["max"], where
        assert float(ours.max) == interval_max, where  # the log line's max column
        assert ours.mean == ref["mean"], where
        assert math.isclose(ours.stdev, ref["stdev"], rel_tol=1e-9, abs_tol=1e-9), where
        assert ours.percentiles(PERCENTILES) == ref["percentiles"], where
        assert list(ours.recorded()) == ref["recorded"], where
        # re-encoding gives back the very bytes of the log, and the reference
        # reads the result as it read the original
        assert ours.encode() == payload.encode(), where
        again = HdrHistogram.decode(ours.encode())
        assert again.get_total_count() == ref["total"], where
        assert again.get_max_value() == ref["max"], where
        assert impl.Histogram.decode(ours.encode()) == ours, where


def test_corpus_holds_values_past_highest_trackable(impl):
    past = 0
    for path in FILES:
        for _, _, payload in histogram_lines(path):
            h = impl.Histogram.decode(payload)
            past += h.max > h.highest_trackable
    assert past >= 3
