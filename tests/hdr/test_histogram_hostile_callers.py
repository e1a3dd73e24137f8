"""Issue 9, histogram part: values past highest_trackable as the reference
implementations record them, one argument rule for both twins across the
int64 edge, and pickling / copying (of histograms and of the loop monitor's
snapshots that hold them)."""

from __future__ import annotations

import copy
import pickle

import pytest

from hdrh.histogram import HdrHistogram

INT64_MAX = (1 << 63) - 1

# -- 1. values past highest_trackable, within the counts array ---------------


def test_reference_encoding_past_highest_round_trips(impl):
    ref = HdrHistogram(1, 1000, 3)
    assert ref.record_value(2047)  # the reference records up to the array's end
    wire = ref.encode()
    h = impl.Histogram.decode(wire)
    assert h.total_count == 1
    assert h.saturated_count == 0
    assert h.max == 2047 == ref.get_max_value()
    assert list(h.recorded()) == [(2047, 1)]
    assert h.encode() == wire  # lossless, and byte for byte the reference's
    back = HdrHistogram.decode(h.encode())
    assert back.get_max_value() == 2047 and back.get_total_count() == 1


@pytest.mark.parametrize(
    "lowest, highest, figures",
    [(1, 1000, 3), (1, 1000, 1), (1, 2, 1), (7, 10**6, 2), (1000, 3_600_000_000, 4), (1, 2**61, 2)],
)
def test_record_up_to_the_end_of_the_counts_array_like_the_reference(impl, lowest, highest, figures):
    h = impl.Histogram(lowest, highest, figures)
    ref = HdrHistogram(lowest, highest, figures)
    top = h.highest_recordable
    assert top >= highest
    for value in (highest, highest + 1, (highest + top) // 2, top):
        h.record(value)
        assert ref.record_value(value), value
    assert h.saturated_count == 0
    in_top_bucket = ref.get_count_at_value(top)
    assert not ref.record_value(top + 1)  # past the array: the reference refuses it
    h.record(top + 1)  # loopwatch never drops: it saturates
    assert h.saturated_count == 1
    assert h.count_at(top) == in_top_bucket + 1
    assert h.total_count == 5
    assert h.max == ref.get_max_value() == top
    ref.record_value(top)  # the saturated value, where loopwatch put it
    assert list(h.recorded()) == [
        (i.value_iterated_to, i.count_at_value_iterated_to) for i in ref.get_recorded_iterator()
    ]
    assert impl.Histogram.decode(ref.encode()).encode() == ref.encode()


@pytest.mark.parametrize("highest", [2**62, INT64_MAX])
def test_highest_recordable_at_the_int64_edge(impl, highest):
    h = impl.Histogram(1, highest, 2)
    ref = HdrHistogram(1, highest, 2)
    assert h.highest_recordable == INT64_MAX
    assert ref.record_value(INT64_MAX)
    h.record(INT64_MAX)
    assert h.saturated_count == 0 and h.max == INT64_MAX
    # a value past int64 is taken as 2**63 - 1, which this layout holds
    h.record(10**100)
    assert h.saturated_count == 0 and h.count_at(INT64_MAX) == 2
    assert h.encode() == impl.Histogram.decode(h.encode()).encode()


def test_record_corrected_terms_past_highest_are_real(impl):
    h = impl.Histogram(1, 1000, 3)  # highest_recordable 2047
    h.record_corrected(2040, 500)  # 2040, 1540, 1040, 540
    assert h.saturated_count == 0
    assert [v for v, _ in h.recorded()] == [540, 1040, 1540, 2040]


# -- 2. one argument rule for both twins ---------------------------------------

EDGE = [INT64_MAX, INT64_MAX + 1, 2**64, 10**100]


@pytest.mark.parametrize("value", EDGE)
def test_huge_values_saturate(impl, value):
    h = impl.Histogram(1, 1000, 3)
    h.record(value)
    assert h.total_count == 1 and h.saturated_count == 1
    assert h.count_at(h.highest_recordable) == 1


@pytest.mark.parametrize("value", EDGE)
def test_record_corrected_takes_huge_values_as_int64_max(impl, value):
    h = impl.Histogram(1, 1000, 3)
    h.record_corrected(value, 1000)
    expected = impl.Histogram(1, 1000, 3)
    expected.record_corrected(INT64_MAX, 1000)
    assert h == expected
    assert h.total_count == INT64_MAX // 1000 == 9223372036854775
    # the terms are INT64_MAX - k * 1000 down to 1807: only 1807 is <= 2047
    assert h.saturated_count == h.total_count - 1


@pytest.mark.parametrize("interval", EDGE)
def test_record_corrected_takes_huge_intervals_as_int64_max(impl, interval):
    h = impl.Histogram(1, 1000, 3)
    h.record_corrected(10**100, interval)  # value and interval both INT64_MAX: no correction
    assert h.total_count == 1 and h.saturated_count == 1


def test_count_edge(impl):
    h = impl.Histogram(1, 1000, 3)
    h.record(5, INT64_MAX)  # the largest total there is
    assert h.total_count == INT64_MAX
    for count in (1, INT64_MAX):
        with pytest.raises(OverflowError):
            h.record(5, count)
    assert h.total_count == INT64_MAX
    for count in EDGE[1:]:  # a count is never clamped
        fresh = impl.Histogram(1, 1000, 3)
        with pytest.raises(OverflowError):
            fresh.record(5, count)
        with pytest.raises(OverflowError):
            fresh.record_corrected(5, 1, count)
        with pytest.raises(OverflowError):
            fresh.record_corrected(10**100, 1000, count)
        assert fresh.total_count == 0 and fresh.saturated_count == 0


def test_record_corrected_count_edge(impl):
    h = impl.Histogram(1, 1000, 3)
    with pytest.raises(OverflowError):  # 2 terms x INT64_MAX
        h.record_corrected(2000, 1000, INT64_MAX)
    assert h.total_count == 0
    h.record_corrected(2000, 1000, INT64_MAX // 2)
    assert h.total_count == INT64_MAX - 1


def test_negative_huge_values_are_rejected(impl):
    h = impl.Histogram()
    for bad in (-1, -(2**64), -(10**100)):
        with pytest.raises(ValueError, match="must be >= 0"):
            h.record(bad)
        with pytest.raises(ValueError, match="must be >= 0"):
            h.record_corrected(10, bad)
    assert h.total_count == 0


# -- 3. pickling and copying ------------------------------------------------------


def _filled(impl):
    h = impl.Histogram(1, 3_600_000_000, 3)
    for v in (0, 1, 17, 1000, 123_456, 3_600_000_000, 5_000_000_000):
        h.record(v, 3)
    h.record(10**30)  # saturated: not part of the encoding, kept by pickles
    assert h.saturated_count == 4  # 5e9 is past highest_recordable (2**32 - 1) too
    return h


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_histogram_pickles(impl, protocol):
    h = _filled(impl)
    back = pickle.loads(pickle.dumps(h, protocol))
    assert type(back) is type(h)
    assert back == h
    assert back.saturated_count == h.saturated_count == 4
    assert (back.min, back.max, back.mean, back.total_count) == (h.min, h.max, h.mean, h.total_count)
    assert back.percentiles([0, 50, 99.9, 100]) == h.percentiles([0, 50, 99.9, 100])
    back.record(5)
    assert back != h  # independent


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_empty_histogram_pickles(impl, protocol):
    h = impl.Histogram(3, 10**6, 5)
    back = pickle.loads(pickle.dumps(h, protocol))
    assert back == h and back.total_count == 0 and back.highest_trackable == 10**6


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_histogram_copies(impl, copier):
    h = _filled(impl)
    c = copier(h)
    assert type(c) is type(h) and c == h and c is not h
    c.record(7)
    assert c != h and h.count_at(7) == 0


def test_pickles_carry_the_same_state_in_both_implementations(request):
    from loopwatch._selector import load_implementation
    from loopwatch.hdr import codec

    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    native, python = load_implementation("native"), load_implementation("python")
    a, b = _filled(native), _filled(python)
    ra, rb = a.__reduce__(), b.__reduce__()
    assert ra[0] is rb[0] is codec.unpickle
    assert ra[1][0] == "native" and rb[1][0] == "python"
    assert ra[1][1:] == rb[1][1:]  # same state
    # either state loads into either implementation
    assert python.Histogram._restore(*ra[1][2:]) == b
    assert native.Histogram._restore(*rb[1][2:]) == a


def test_native_pickle_falls_back_to_the_twin(monkeypatch):
    import sys

    from loopwatch.hdr import codec, twin

    h = twin.Histogram()
    h.record(42, 2)
    state = h.__reduce__()[1][1:]
    monkeypatch.setitem(sys.modules, "loopwatch.hdr.native", None)  # import fails
    back = codec.unpickle("native", *state)
    assert type(back) is twin.Histogram and back == h


def test_bad_pickle_state_is_refused(impl):
    from loopwatch.hdr import codec

    h = impl.Histogram()
    h.record(5)
    name, version, data, saturated = h.__reduce__()[1]
    with pytest.raises(ValueError, match="version"):
        codec.unpickle(name, 99, data, saturated)
    with pytest.raises(ValueError, match="implementation"):
        codec.unpickle("rust", version, data, saturated)
    with pytest.raises(ValueError, match="saturated_count"):
        codec.unpickle(name, version, data, 2)
    with pytest.raises(ValueError, match="saturated_count"):
        codec.unpickle(name, version, data, -1)
    with pytest.raises(ValueError):
        codec.unpickle(name, version, b"garbage", 0)


def _snapshot(impl):
    """A LoopStats from a real ``loopwatch.watch``ed loop of this
    implementation, taken once both histograms hold samples."""
    import asyncio

    async def main():
        async with impl.watch(resolution=0.001, stall_threshold=10.0) as monitor:
            # poll for the condition (bounded), not for a time
            for _ in range(5000):
                stats = monitor.snapshot(reset_interval=False)
                if stats.total.delay.count and stats.total.lag.count:
                    return stats
                await asyncio.sleep(0.001)
        raise AssertionError("the monitor recorded nothing")

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_loop_stats_pickle_and_copy(impl, protocol):
    from loopwatch import LatencyStats, LoopStats, LoopWindow

    stats = _snapshot(impl)
    assert isinstance(stats, LoopStats) and isinstance(stats.total, LoopWindow)
    assert isinstance(stats.total.lag, LatencyStats)
    assert type(stats.total.lag_histogram) is impl.Histogram
    assert stats.total.sample_count > 0  # real samples in the histograms
    for other in (pickle.loads(pickle.dumps(stats, protocol)), copy.copy(stats), copy.deepcopy(stats)):
        assert other == stats
        assert type(other.total.lag_histogram) is impl.Histogram
        assert other.total.lag_histogram == stats.total.lag_histogram
        assert other.interval.delay_histogram == stats.interval.delay_histogram
    deep = copy.deepcopy(stats)
    assert deep.total.lag_histogram is not stats.total.lag_histogram
    for value in (stats.total, stats.total.lag):
        assert pickle.loads(pickle.dumps(value, protocol)) == value
