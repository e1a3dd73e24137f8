"""HdrHistogram interval logs (.hlog): loopwatch's writer read by the
``hdrhistogram`` package's reader, that package's writer (and the corpus it
wrote, and HdrHistogram_c's variant) read by loopwatch's reader; both
implementations."""

from __future__ import annotations

import io
import os
import random

import pytest

hdrh_log = pytest.importorskip("hdrh.log")
from hdrh.histogram import HdrHistogram  # noqa: E402

import loopwatch  # noqa: E402
from loopwatch.hdr.log import LEGEND, HistogramLogReader, HistogramLogWriter  # noqa: E402

CORPUS = os.path.join(os.path.dirname(__file__), "corpus")
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)


def _random_histogram(impl, seed: int, n: int = 2000):
    rng = random.Random(seed)
    h = impl.Histogram(1, 3_600_000_000, 3)
    for _ in range(n):
        h.record(int(rng.lognormvariate(8, 2)) + 1)
    return h


def test_loopwatch_log_read_by_the_hdrhistogram_package(impl, tmp_path):
    path = tmp_path / "lag.hlog"
    written = [_random_histogram(impl, seed) for seed in range(4)]
    with HistogramLogWriter(str(path), max_value_unit_ratio=1000.0) as log:
        log.write_header(start_time=1_700_000_000.25, base_time=1_700_000_000.25,
                         comment="[test]")
        for i, h in enumerate(written):
            log.output_interval_histogram(h, i * 1.0, i + 1.0, tag=f"loop{i % 2 + 1}")
    lines = path.read_text().splitlines()
    assert lines[0] == "#[test]"
    assert lines[1] == "#[Histogram log format version 1.3]"
    assert lines[2].startswith("#[StartTime: 1700000000.250 (seconds since epoch), ")
    assert lines[3] == "#[BaseTime: 1700000000.250 (seconds since epoch)]"
    assert lines[4] == LEGEND
    first = lines[5].split(",")
    assert first[:3] == ["Tag=loop1", "0.000", "1.000"]
    assert first[3] == f"{written[0].max / 1000.0:.3f}"
    assert first[4] == written[0].encode().decode()

    reader = hdrh_log.HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
    try:
        for i, h in enumerate(written):
            theirs = reader.get_next_interval_histogram()
            assert theirs is not None
            assert theirs.get_tag() == f"loop{i % 2 + 1}"
            assert theirs.get_start_time_stamp() == pytest.approx((1_700_000_000.25 + i) * 1000)
            assert theirs.get_total_count() == h.total_count
            for p in PERCENTILES:
                assert theirs.get_value_at_percentile(p) == h.value_at_percentile(p), p
        assert reader.get_next_interval_histogram() is None
    finally:
        reader.close()

    intervals = list(HistogramLogReader(str(path), histogram_class=impl.Histogram))
    assert [iv.tag for iv in intervals] == ["loop1", "loop2", "loop1", "loop2"]
    assert [iv.start for iv in intervals] == pytest.approx([1_700_000_000.25 + i for i in range(4)])
    assert all(iv.length == 1.0 for iv in intervals)
    assert [iv.histogram for iv in intervals] == written


def test_hdrhistogram_package_log_read_by_loopwatch(impl):
    buf = io.StringIO()
    writer = hdrh_log.HistogramLogWriter(buf)
    writer.output_comment("[written by the hdrhistogram package]")
    writer.output_log_format_version()
    writer.output_base_time(1_600_000_000_000)
    writer.output_legend()
    theirs = []
    rng = random.Random(7)
    for i in range(3):
        h = HdrHistogram(1, 3_600_000_000, 3)
        for _ in range(500):
            h.record_value(rng.randint(1, 5_000_000))
        if i == 1:
            h.set_tag("B")
        theirs.append(h)
        writer.output_interval_histogram(h, start_time_stamp_sec=10.0 * (i + 1),
                                         end_time_stamp_sec=10.0 * (i + 1) + 2.5)
    text = buf.getvalue()
    assert ",HISTF" in text and "Tag=" not in text  # its writer drops tags

    reader = HistogramLogReader(io.StringIO(text), histogram_class=impl.Histogram)
    intervals = list(reader)
    assert reader.format_version == "1.2"
    assert reader.base_time == 1_600_000_000.0
    assert len(intervals) == 3
    for i, (iv, h) in enumerate(zip(intervals, theirs)):
        assert iv.tag is None
        assert iv.start == pytest.approx(1_600_000_000.0 + 10.0 * (i + 1))
        assert iv.length == pytest.approx(2.5)
        assert iv.histogram.total_count == h.get_total_count()
        for p in PERCENTILES:
            assert iv.histogram.value_at_percentile(p) == h.get_value_at_percentile(p)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CORPUS) if f.endswith(".hlog")))
def test_corpus_logs_read_like_the_reference(impl, name):
    path = os.path.join(CORPUS, name)
    ours = list(HistogramLogReader(path, histogram_class=impl.Histogram))
    reader = hdrh_log.HistogramLogReader(path, HdrHistogram(1, 2, 1))
    try:
        for iv in ours:
            ref = reader.get_next_interval_histogram()
            assert ref is not None
            assert iv.tag == ref.get_tag()
            assert iv.start * 1000 == pytest.approx(ref.get_start_time_stamp())
            assert iv.histogram.total_count == ref.get_total_count()
            assert iv.histogram.encode() == ref.encode()
        assert reader.get_next_interval_histogram() is None
    finally:
        reader.close()
    assert ours


def test_hdrhistogram_c_variant_end_timestamps_and_integer_max(impl):
    """HdrHistogram_c writes the end time in the second field (its legend
    says so) and the max unscaled as ``%d.0``."""
    h = _random_histogram(impl, 3)
    payload = h.encode().decode()
    text = (
        "#[Histogram log format version 1.3]\n"
        "#[StartTime: 1403476110.183 (seconds since epoch), Mon Jun 23 10:28:30 NZST 2014]\n"
        '"StartTimestamp","EndTimestamp","Interval_Max","Interval_Compressed_Histogram"\n'
        f"1403476110.183,1403476111.683,{h.max}.0,{payload}\n"
        "\n"
        f"Tag=x,1403476111.683,1403476112.683,{h.max}.0,{payload}\n"
    )
    intervals = list(HistogramLogReader(io.StringIO(text), histogram_class=impl.Histogram))
    assert [iv.tag for iv in intervals] == [None, "x"]
    assert intervals[0].start == pytest.approx(1403476110.183)  # absolute: base time 0
    assert [iv.length for iv in intervals] == pytest.approx([1.5, 1.0])
    assert intervals[0].histogram == h


def test_reader_names_the_bad_line(impl):
    text = "#[Histogram log format version 1.3]\n" + LEGEND + "\n0.000,1.000,HISTFAAA\n"
    with pytest.raises(ValueError, match="line 3"):
        list(HistogramLogReader(io.StringIO(text), histogram_class=impl.Histogram))
    text = LEGEND + "\n0.000,1.000,0.000,HISTFgarbage\n"
    with pytest.raises(ValueError, match="line 2"):
        list(HistogramLogReader(io.StringIO(text), histogram_class=impl.Histogram))


def test_writer_refuses_bad_tags_and_values(impl):
    log = HistogramLogWriter(io.StringIO())
    h = impl.Histogram()
    for tag in ("a,b", "a b", "", "a\nb"):
        with pytest.raises(ValueError):
            log.output_interval_histogram(h, 0.0, 1.0, tag=tag)
    with pytest.raises(ValueError):
        log.output_interval_histogram(h, float("nan"), 1.0)
    with pytest.raises(TypeError):
        log.output_interval_histogram(h, "0", 1.0)
    with pytest.raises(ValueError):
        HistogramLogWriter(io.StringIO(), max_value_unit_ratio=0)
    with pytest.raises(ValueError):
        log.output_comment("two\nlines")
    assert log.file.getvalue() == ""


def test_java_default_ratio_and_public_names():
    assert loopwatch.HistogramLogWriter is HistogramLogWriter
    assert loopwatch.HistogramLogReader is HistogramLogReader
    buf = io.StringIO()
    h = loopwatch.Histogram()
    h.record(2_500_000)
    HistogramLogWriter(buf).output_interval_histogram(h, 1.5, 2.0)
    start, length, max_, _ = buf.getvalue().split(",")
    assert (start, length, max_) == ("1.500", "0.500", f"{h.max / 1e6:.3f}")
