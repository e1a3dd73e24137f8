"""Behaviour of loopwatch.Histogram, run against both implementations."""

from __future__ import annotations

import math

import pytest

INT64_MAX = (1 << 63) - 1


def test_defaults(impl):
    h = impl.Histogram()
    assert (h.lowest_trackable, h.highest_trackable, h.significant_figures) == (1, 3_600_000_000, 3)
    assert h.total_count == 0 and h.saturated_count == 0
    assert (h.min, h.max, h.mean, h.stdev) == (0, 0, 0.0, 0.0)
    assert h.value_at_percentile(99) == 0
    assert list(h.recorded()) == []


@pytest.mark.parametrize(
    "args, needle",
    [
        ((0, 100, 3), "lowest_trackable must be >= 1"),
        ((-5, 100, 3), "lowest_trackable must be >= 1"),
        ((10, 19, 3), "highest_trackable must be >= 2 x lowest_trackable"),
        ((1, 100, 0), "significant_figures must be between 1 and 5"),
        ((1, 100, 6), "significant_figures must be between 1 and 5"),
        ((1.0, 100, 3), "lowest_trackable must be an integer"),
        ((1, 100.5, 3), "highest_trackable must be an integer"),
        ((1, 100, "3"), "significant_figures must be an integer"),
        ((1, 100, True), "significant_figures must be an integer"),
        ((1, 1 << 63, 3), "highest_trackable must be <= 2**63 - 1"),
        ((1 << 60, INT64_MAX, 5), "too large for 5 significant figures"),
    ],
)
def test_bad_configuration_says_which_argument(impl, args, needle):
    with pytest.raises(ValueError, match=needle.replace("*", r"\*")):
        impl.Histogram(*args)


def test_record_and_query_small_values_exactly(impl):
    h = impl.Histogram(1, 10_000, 3)
    for v in range(1, 101):  # below 2048 every value has its own bucket
        h.record(v)
    assert h.total_count == 100
    assert h.min == 1 and h.max == 100
    assert h.mean == pytest.approx(50.5)
    assert h.stdev == pytest.approx(math.sqrt(sum((v - 50.5) ** 2 for v in range(1, 101)) / 100))
    assert h.value_at_percentile(50) == 50
    assert h.value_at_percentile(99) == 99
    assert h.value_at_percentile(100) == 100
    assert h.value_at_percentile(0) == 1
    assert h.percentiles([99, 50.0, 0]) == {99: 99, 50.0: 50, 0: 1}
    assert h.count_at(42) == 1
    assert list(h.recorded()) == [(v, 1) for v in range(1, 101)]


def test_precision_bound_holds_for_large_values(impl):
    h = impl.Histogram(1, 3_600_000_000, 3)
    for v in (1_234_567, 98_765_432, 3_599_999_999):
        h.reset()
        h.record(v)
        top = h.value_at_percentile(100)
        # the bucket's upper bound is within 0.1% above the value (3 figures)
        assert v <= top <= v * 1.001
        assert h.min <= v <= h.max


def test_record_with_count(impl):
    h = impl.Histogram()
    h.record(1000, 5)
    h.record(10, 0)
    assert h.total_count == 5
    assert h.count_at(1000) == 5
    assert h.count_at(10) == 0
    assert h.min == 1000


def test_saturation_is_counted_not_dropped(impl):
    h = impl.Histogram(1, 1000, 2)
    assert h.highest_recordable == 1023  # the top of the last bucket
    h.record(5000)
    h.record(10**30, 3)  # beyond int64: still saturates
    h.record(999)
    h.record(1010)  # past highest_trackable but inside the last bucket: a real value
    assert h.total_count == 6
    assert h.saturated_count == 4
    assert h.count_at(1023) == 4  # saturated values are recorded as highest_recordable
    assert h.count_at(1010) == 1
    assert h.count_at(999) == 1  # 999 has a bucket of its own at 2 figures
    assert h.value_at_percentile(100) == h.max == 1023


@pytest.mark.parametrize("bad", [-1, -(10**30)])
def test_negative_value_raises_and_records_nothing(impl, bad):
    h = impl.Histogram()
    with pytest.raises(ValueError, match="value must be >= 0"):
        h.record(bad)
    assert h.total_count == 0


@pytest.mark.parametrize("bad", [1.5, float("nan"), "7", None, b"1"])
def test_non_integer_value_raises_type_error(impl, bad):
    h = impl.Histogram()
    with pytest.raises(TypeError, match="value must be an integer"):
        h.record(bad)
    with pytest.raises(TypeError, match="count must be an integer"):
        h.record(1, bad)
    assert h.total_count == 0


def test_index_protocol_objects_are_accepted(impl):
    class Ticks:
        def __index__(self):
            return 77

    h = impl.Histogram()
    h.record(Ticks(), Ticks())
    assert h.total_count == 77 and h.count_at(77) == 77


def test_negative_count_raises(impl):
    h = impl.Histogram()
    with pytest.raises(ValueError, match="count must be >= 0"):
        h.record(5, -1)
    assert h.total_count == 0


def test_total_overflow_raises_and_changes_nothing(impl):
    h = impl.Histogram()
    h.record(5, INT64_MAX - 1)
    with pytest.raises(OverflowError):
        h.record(6, 2)
    with pytest.raises(OverflowError):
        h.record(6, 1 << 70)
    assert h.total_count == INT64_MAX - 1
    assert h.count_at(6) == 0
    h.record(6, 1)
    assert h.total_count == INT64_MAX


@pytest.mark.parametrize("bad", [-0.1, 100.01, float("nan"), float("inf")])
def test_bad_percentile(impl, bad):
    h = impl.Histogram()
    h.record(3)
    with pytest.raises(ValueError, match="percentile must be between 0 and 100"):
        h.value_at_percentile(bad)
    with pytest.raises(ValueError):
        h.percentiles([50, bad])
    with pytest.raises(TypeError):
        h.value_at_percentile("99")


def test_count_at_out_of_range(impl):
    h = impl.Histogram(1, 1000, 3)
    assert h.count_at(2047) == 0  # up to highest_recordable
    with pytest.raises(ValueError, match="highest_recordable"):
        h.count_at(2048)
    with pytest.raises(ValueError):
        h.count_at(-1)


def _reference_corrected(value, interval):
    values = [value]
    if interval > 0 and value > interval:
        missing = value - interval
        while missing >= interval:
            values.append(missing)
            missing -= interval
    return values


@pytest.mark.parametrize("value, interval", [(10, 0), (10, 10), (1000, 100), (12345, 7), (5, 2)])
def test_record_corrected_matches_hdrhistogram_c(impl, value, interval):
    corrected = impl.Histogram(1, 100_000, 3)
    plain = impl.Histogram(1, 100_000, 3)
    corrected.record_corrected(value, interval, 3)
    for v in _reference_corrected(value, interval):
        plain.record(v, 3)
    assert corrected == plain
    assert list(corrected.recorded()) == list(plain.recorded())


def test_record_corrected_is_bounded_by_buckets_not_by_ratio(impl):
    # 10**15 missing samples would never finish one by one
    h = impl.Histogram(1, 10**16, 2)
    h.record_corrected(10**15, 1)
    assert h.total_count == 10**15 - 1 + 1
    assert h.value_at_percentile(50) == pytest.approx(5 * 10**14, rel=0.01)


def test_record_corrected_saturates_high_terms(impl):
    h = impl.Histogram(1, 1000, 3)
    h.record_corrected(5000, 1000)  # 5000, 4000, 3000 saturate; 2000 and 1000 fit
    assert h.highest_recordable == 2047
    assert h.total_count == 5
    assert h.saturated_count == 3
    assert h.count_at(2047) == 3
    assert h.count_at(2000) == 1
    assert h.count_at(1000) == 1


def test_record_corrected_bad_input(impl):
    h = impl.Histogram()
    with pytest.raises(ValueError, match="expected_interval must be >= 0"):
        h.record_corrected(10, -1)
    with pytest.raises(TypeError):
        h.record_corrected(10, 0.5)
    with pytest.raises(OverflowError):
        h.record_corrected(10**12, 1, 1 << 40)
    assert h.total_count == 0


def test_merge_same_layout(impl):
    a, b = impl.Histogram(), impl.Histogram()
    for v in range(0, 5000, 7):
        a.record(v)
    for v in range(3, 9000, 11):
        b.record(v, 2)
    b.record(10**12)  # saturated
    expected = impl.Histogram()
    for v in range(0, 5000, 7):
        expected.record(v)
    for v in range(3, 9000, 11):
        expected.record(v, 2)
    expected.record(10**12)
    a.merge(b)
    assert a == expected
    assert a.saturated_count == 1
    assert a.min == expected.min and a.max == expected.max


def test_merge_other_layout_rerecords_buckets(impl):
    small = impl.Histogram(1, 10_000, 2)
    big = impl.Histogram(1, 10**9, 3)
    big.record(50)
    big.record(5_000_000, 4)
    small.merge(big)
    assert small.total_count == 5
    assert small.saturated_count == 4
    assert small.count_at(50) == 1


def test_merge_rejects_other_types(impl):
    with pytest.raises(TypeError, match="can only merge"):
        impl.Histogram().merge([1, 2, 3])


def test_merge_overflow_changes_nothing(impl):
    a, b = impl.Histogram(), impl.Histogram()
    a.record(1, INT64_MAX)
    b.record(2)
    with pytest.raises(OverflowError):
        a.merge(b)
    assert a.total_count == INT64_MAX and a.count_at(2) == 0


def test_reset_and_copy_are_independent(impl):
    h = impl.Histogram()
    h.record(10)
    h.record(10**11)
    c = h.copy()
    assert c == h and c is not h
    h.reset()
    assert h.total_count == 0 and h.saturated_count == 0 and h.max == 0 and h.min == 0
    assert c.total_count == 2 and c.saturated_count == 1
    c.record(20)
    assert h.total_count == 0


def test_equality(impl):
    a, b = impl.Histogram(), impl.Histogram()
    assert a == b
    a.record(5)
    assert a != b
    b.record(5)
    assert a == b
    assert impl.Histogram(1, 1000, 3) != impl.Histogram(1, 2000, 3)
    assert a != "histogram"


def test_encode_decode_round_trip(impl):
    h = impl.Histogram(1, 3_600_000_000, 3)
    for v in (0, 1, 2, 999, 1000, 123_456, 3_600_000_000):
        h.record(v, v % 7 + 1)
    data = h.encode()
    assert isinstance(data, bytes) and data.startswith(b"HISTF")
    back = impl.Histogram.decode(data)
    assert back == h
    assert impl.Histogram.decode(data.decode("ascii")) == h
    assert impl.Histogram.decode(bytearray(data)) == h


def test_empty_round_trip(impl):
    h = impl.Histogram(3, 7000, 2)
    back = impl.Histogram.decode(h.encode())
    assert back == h
    assert (back.lowest_trackable, back.highest_trackable, back.significant_figures) == (3, 7000, 2)


def test_repr_names_configuration(impl):
    h = impl.Histogram(1, 1000, 2)
    h.record(3)
    assert repr(h) == "Histogram(lowest_trackable=1, highest_trackable=1000, significant_figures=2, total_count=1)"


def test_unhashable(impl):
    with pytest.raises(TypeError):
        hash(impl.Histogram())
