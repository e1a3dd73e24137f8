"""Pure-Python twin of the native Histogram: same API, same answers."""

from __future__ import annotations

import math
from typing import Iterable, Iterator

from . import codec as _hdr_codec
from .layout import INT64_MAX, as_count_value, as_value, check_percentile, layout

__all__ = ["Histogram"]


class Histogram:
    """An HDR histogram of non-negative integers (HdrHistogram's algorithm).

    Values are integers in a unit of your choosing (loopwatch records
    microseconds). Each value lands in a bucket no wider than
    ``10 ** -significant_figures`` of it; queries answer in bucket bounds,
    exactly as HdrHistogram does.

    Args:
        lowest_trackable: smallest value distinguishable from 0 (>= 1).
        highest_trackable: largest value the range must hold
            (>= 2 x lowest_trackable). The buckets it needs reach a little
            further, to :attr:`highest_recordable` (about twice as far at
            most): values up to there are recorded as themselves, as
            HdrHistogram (Java) and the ``hdrhistogram`` package do; larger
            values are recorded as :attr:`highest_recordable` and counted in
            :attr:`saturated_count`.
        significant_figures: value precision, 1 to 5.

    Arguments: ``value`` and ``expected_interval`` are integers >= 0;
    above 2**63 - 1 they are taken as 2**63 - 1 (so such a value saturates,
    and ``record_corrected`` corrects as for 2**63 - 1). ``count`` is never
    clamped: a count that would take the total past 2**63 - 1 raises
    OverflowError and records nothing. Both implementations follow the same
    rules.

    Histograms pickle (every protocol) and support ``copy.copy`` and
    ``copy.deepcopy``; a pickle holds the V2 encoding plus the saturated
    count, the same state for both implementations (see
    :func:`loopwatch.hdr.codec.unpickle`).
    """

    __slots__ = (
        "_lowest", "_highest", "_figures", "_unit", "_half_mag", "_sub_count",
        "_half_count", "_mask", "_top", "_counts", "_total", "_saturated", "_min", "_max",
    )

    def __init__(
        self,
        lowest_trackable: int = 1,
        highest_trackable: int = 3_600_000_000,
        significant_figures: int = 3,
    ) -> None:
        geometry = layout(lowest_trackable, highest_trackable, significant_figures)
        self._lowest = lowest_trackable
        self._highest = highest_trackable
        self._figures = significant_figures
        self._unit = geometry.unit_magnitude
        self._half_mag = geometry.sub_bucket_half_count_magnitude
        self._sub_count = geometry.sub_bucket_count
        self._half_count = geometry.sub_bucket_half_count
        self._mask = geometry.sub_bucket_mask
        self._counts = [0] * geometry.counts_len
        self._top = self._highest_equivalent(self._value_at_index(geometry.counts_len - 1))
        self._clear()

    def _clear(self) -> None:
        self._total = 0
        self._saturated = 0
        self._min = INT64_MAX
        self._max = 0

    # -- bucket math (HdrHistogram's) -------------------------------------
    def _index_for(self, value: int) -> int:
        bucket = (value | self._mask).bit_length() - self._unit - (self._half_mag + 1)
        sub_bucket = value >> (bucket + self._unit)
        return ((bucket + 1) << self._half_mag) + (sub_bucket - self._half_count)

    def _value_at_index(self, index: int) -> int:
        bucket = (index >> self._half_mag) - 1
        sub_bucket = (index & (self._half_count - 1)) + self._half_count
        if bucket < 0:
            sub_bucket -= self._half_count
            bucket = 0
        return sub_bucket << (bucket + self._unit)

    def _range_of(self, value: int) -> tuple[int, int]:
        """(lowest equivalent value, width) of value's bucket."""
        bucket = (value | self._mask).bit_length() - self._unit - (self._half_mag + 1)
        sub_bucket = value >> (bucket + self._unit)
        lowest = sub_bucket << (bucket + self._unit)
        if sub_bucket >= self._sub_count:
            bucket += 1
        return lowest, 1 << (self._unit + bucket)

    def _highest_equivalent(self, value: int) -> int:
        lowest, width = self._range_of(value)
        return lowest + width - 1

    def _median_equivalent(self, value: int) -> int:
        lowest, width = self._range_of(value)
        return lowest + (width >> 1)

    # -- configuration --------------------------------------------------------
    @property
    def lowest_trackable(self) -> int:
        """Smallest value distinguishable from 0."""
        return self._lowest

    @property
    def highest_trackable(self) -> int:
        """The configured upper bound of the range (see highest_recordable)."""
        return self._highest

    @property
    def highest_recordable(self) -> int:
        """Largest value recorded as itself: the top of the last bucket, >= highest_trackable.

        Values between highest_trackable and this one are real counts, as
        in HdrHistogram (Java) and the ``hdrhistogram`` package, so
        encodings of theirs that hold such values decode without loss.
        """
        return self._top

    @property
    def significant_figures(self) -> int:
        """Decimal digits of precision kept for every value."""
        return self._figures

    # -- recording ---------------------------------------------------------------
    def _add(self, value: int, count: int) -> None:
        if value > self._top:
            value = self._top
            self._saturated += count
        if count == 0:
            return
        self._counts[self._index_for(value)] += count
        self._total += count
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def record(self, value: int, count: int = 1) -> None:
        """Record ``count`` occurrences of ``value``.

        A value above :attr:`highest_recordable` (any value above 2**63 - 1
        included) is recorded as highest_recordable and counted in
        :attr:`saturated_count`.

        Raises:
            TypeError: value or count is not an integer.
            ValueError: value or count is negative.
            OverflowError: the total count would exceed 2**63 - 1.
        """
        value = as_value("value", value)
        count = as_count_value("count", count)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count > INT64_MAX - self._total:
            raise OverflowError("histogram total count would exceed 2**63 - 1")
        self._add(value, count)

    def record_corrected(self, value: int, expected_interval: int, count: int = 1) -> None:
        """Record ``value`` with HdrHistogram's coordinated-omission correction.

        When a sample that should come every ``expected_interval`` took
        ``value``, the samples that could not be taken meanwhile are recorded
        too: ``value - k * expected_interval`` for every k while that is still
        >= ``expected_interval``. An interval of 0 records ``value`` alone.
        The work is bounded by the number of buckets, not by
        ``value / expected_interval``. ``value`` and ``expected_interval``
        above 2**63 - 1 are taken as 2**63 - 1 before anything else.
        """
        value = as_value("value", value)
        interval = as_value("expected_interval", expected_interval)
        count = as_count_value("count", count)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        missing = value // interval - 1 if interval and value > interval else 0
        if count * (missing + 1) > INT64_MAX - self._total:
            raise OverflowError("histogram total count would exceed 2**63 - 1")
        self._add(value, count)
        k = 1
        while k <= missing:
            term = value - k * interval
            if term > self._top:
                # every term past the counts array saturates into the last bucket
                last = min(missing, (value - self._top - 1) // interval)
            else:
                floor, _ = self._range_of(term)
                last = min(missing, (value - floor) // interval)
            self._add(term, (last - k + 1) * count)
            k = last + 1

    # -- queries ---------------------------------------------------------------------
    @property
    def total_count(self) -> int:
        """Number of values recorded."""
        return self._total

    @property
    def saturated_count(self) -> int:
        """How many of them were above highest_recordable (recorded as it)."""
        return self._saturated

    @property
    def min(self) -> int:
        """Lowest equivalent value of the smallest value recorded; 0 when empty."""
        if self._total == 0 or self._counts[0] > 0:
            return 0
        return self._range_of(self._min)[0]

    @property
    def max(self) -> int:
        """Highest equivalent value of the largest value recorded; 0 when empty."""
        return 0 if self._max == 0 else self._highest_equivalent(self._max)

    def _last_index(self) -> int:
        return self._index_for(self._max)

    @property
    def mean(self) -> float:
        """Mean of the bucket midpoints, weighted by count; 0.0 when empty."""
        if not self._total:
            return 0.0
        counts = self._counts
        total = 0
        for i in range(self._last_index() + 1):
            if counts[i]:
                total += counts[i] * self._median_equivalent(self._value_at_index(i))
        return float(total) / float(self._total)

    @property
    def stdev(self) -> float:
        """Population standard deviation of the bucket midpoints; 0.0 when empty."""
        if not self._total:
            return 0.0
        mean = self.mean
        acc = 0.0
        counts = self._counts
        for i in range(self._last_index() + 1):
            if counts[i]:
                dev = float(self._median_equivalent(self._value_at_index(i))) - mean
                acc += (dev * dev) * float(counts[i])
        return math.sqrt(acc / float(self._total))

    def _percentile(self, p: float) -> int:
        total = self._total
        if total == 0:
            return 0
        target = max(int(p * float(total) / 100.0 + 0.5), 1)
        counts = self._counts
        last = self._last_index()
        if target > total // 2:
            cumulative = total
            i = last
            while i > 0:
                below = cumulative - counts[i]
                if below < target:
                    break
                cumulative = below
                i -= 1
        else:
            cumulative = 0
            i = 0
            while i <= last:
                cumulative += counts[i]
                if cumulative >= target:
                    break
                i += 1
        value = self._value_at_index(i)
        return self._highest_equivalent(value) if p != 0.0 else self._range_of(value)[0]

    def value_at_percentile(self, percentile: float) -> int:
        """The value below or at which ``percentile`` % of recorded values fall.

        As in HdrHistogram, the answer is the highest value equivalent to
        the bucket reached (the lowest, for percentile 0); 0 when empty.
        """
        return self._percentile(check_percentile(percentile))

    def percentiles(self, percentiles: Iterable[float]) -> dict[float, int]:
        """``{p: value_at_percentile(p)}`` for each p, in the order given."""
        checked = [(p, check_percentile(p)) for p in percentiles]
        return {p: self._percentile(value) for p, value in checked}

    def count_at(self, value: int) -> int:
        """Count recorded in the bucket that ``value`` falls in."""
        value = as_count_value("value", value)
        if not 0 <= value <= self._top:
            raise ValueError(f"value must be between 0 and highest_recordable ({self._top}), got {value}")
        return self._counts[self._index_for(value)]

    def recorded(self) -> Iterator[tuple[int, int]]:
        """Yield ``(value, count)`` for each non-empty bucket, in value order.

        ``value`` is the bucket's highest equivalent value (its inclusive
        upper bound), as HdrHistogram's recorded-values iterator reports.
        """
        counts = self._counts
        for i in range(self._last_index() + 1 if self._total else 0):
            if counts[i]:
                yield self._highest_equivalent(self._value_at_index(i)), counts[i]

    # -- whole-histogram operations --------------------------------------------------------
    def _same_layout(self, other: Histogram) -> bool:
        return (self._lowest, self._highest, self._figures) == (
            other._lowest, other._highest, other._figures,
        )

    def merge(self, other: Histogram) -> None:
        """Add every count of ``other`` into this histogram.

        Histograms of another configuration are merged bucket by bucket
        (values above this one's range saturate). Raises TypeError for
        anything but a Histogram of this implementation and OverflowError,
        changing nothing, if the total would exceed 2**63 - 1.
        """
        if not isinstance(other, Histogram):
            raise TypeError(f"can only merge a {type(self).__qualname__}, not {type(other).__name__}")
        if other._total > INT64_MAX - self._total:
            raise OverflowError("histogram total count would exceed 2**63 - 1")
        if self._same_layout(other):
            mine = self._counts
            for i, c in enumerate(other._counts):
                if c:
                    mine[i] += c
            if other._total:
                self._total += other._total
                self._min = min(self._min, other._min)
                self._max = max(self._max, other._max)
        else:
            counts = other._counts
            for i in range(len(counts)):
                if counts[i]:
                    self._add(other._value_at_index(i), counts[i])
        self._saturated += other._saturated

    def reset(self) -> None:
        """Forget every recorded value; the configuration stays."""
        self._counts = [0] * len(self._counts)
        self._clear()

    def copy(self) -> Histogram:
        """An independent histogram with the same configuration and counts."""
        new = Histogram(self._lowest, self._highest, self._figures)
        new._counts = list(self._counts)
        new._total, new._saturated = self._total, self._saturated
        new._min, new._max = self._min, self._max
        return new

    # -- encoding ----------------------------------------------------------------------------
    def encode(self) -> bytes:
        """HdrHistogram's V2 compressed encoding, base64 (``HISTF...``).

        Readable by the ``hdrhistogram`` package, HdrHistogram_c and Java's
        HdrHistogram. The saturated count is not part of the format.
        """
        limit = self._last_index() + 1 if self._total else 0
        counts = self._counts
        out = bytearray()
        i = 0
        while i < limit:
            c = counts[i]
            i += 1
            if c == 0:
                zeros = 1
                while i < limit and counts[i] == 0:
                    zeros += 1
                    i += 1
                c = -zeros
            _put_zigzag(out, c)
        return _hdr_codec.encode_frame(self._lowest, self._highest, self._figures, bytes(out))

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | str) -> Histogram:
        """Rebuild a histogram from :meth:`encode` output or any V2 encoding.

        Raises ValueError for corrupted, truncated or hostile input (and
        TypeError for something that is not bytes or str); never allocates
        more than the declared configuration needs.
        """
        frame = _hdr_codec.decode_frame(data)
        hist = cls(frame.lowest_trackable, frame.highest_trackable, frame.significant_figures)
        hist._load_payload(frame.payload)
        return hist

    def _load_payload(self, payload: bytes) -> None:
        counts = self._counts
        size = len(counts)
        index = total = pos = 0
        first = last = -1
        # every index of the array is a real bucket, those past
        # highest_trackable's too (Java and the hdrhistogram package record up
        # to the end of the array): counts stay where they are, so that
        # encode(decode(x)) gives back x's counts
        end = len(payload)
        while pos < end:
            value = shift = 0
            for nbyte in range(9):
                if pos >= end:
                    raise ValueError("encoded counts end inside a number")
                b = payload[pos]
                pos += 1
                if nbyte == 8:
                    value |= b << 56
                    break
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            value = (value >> 1) ^ -(value & 1)
            if value < 0:
                if -value > size - index:
                    raise ValueError("encoded counts run past the histogram's buckets")
                index -= value
                continue
            if index >= size:
                raise ValueError("encoded counts run past the histogram's buckets")
            if value:
                if value > INT64_MAX - total:
                    raise ValueError("encoded counts add up to more than 2**63 - 1")
                total += value
                counts[index] += value
                if first < 0:
                    first = index
                last = index
            index += 1
        if total:
            self._total = total
            self._min = self._value_at_index(first)
            # the bucket's top, as other HdrHistogram decoders do
            self._max = self._highest_equivalent(self._value_at_index(last))

    @classmethod
    def _restore(cls, data: bytes, saturated: int) -> Histogram:
        """The histogram of an encoding plus the saturated count it could not
        carry (unpickling); ValueError if they do not fit together."""
        hist = cls.decode(data)
        saturated = as_count_value("saturated_count", saturated)
        if not 0 <= saturated <= hist._total:
            raise ValueError(f"saturated_count {saturated} exceeds the total count {hist._total}")
        hist._saturated = saturated
        return hist

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_hdr_codec.unpickle, ("python", _hdr_codec.PICKLE_VERSION, self.encode(), self._saturated))

    def __copy__(self) -> Histogram:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, object]) -> Histogram:
        return self.copy()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self._same_layout(other)
            and self._total == other._total
            and self._saturated == other._saturated
            and self._counts == other._counts
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Histogram(lowest_trackable={self._lowest}, highest_trackable={self._highest}, "
            f"significant_figures={self._figures}, total_count={self._total})"
        )


def _put_zigzag(out: bytearray, value: int) -> None:
    v = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    for _ in range(8):
        if v < 0x80:
            out.append(v)
            return
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
