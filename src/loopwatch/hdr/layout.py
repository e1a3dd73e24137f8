"""Configuration checks and bucket layout shared by both Histogram twins.

The layout formulas are HdrHistogram's own, floating-point logarithms
included, so that a histogram built here has the same buckets as one built
by HdrHistogram_c, HdrHistogram (Java) or the ``hdrhistogram`` package.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

INT64_MAX = (1 << 63) - 1


class Layout(NamedTuple):
    """Derived bucket geometry of one (lowest, highest, figures) triple."""

    unit_magnitude: int
    sub_bucket_half_count_magnitude: int
    sub_bucket_count: int
    sub_bucket_half_count: int
    sub_bucket_mask: int
    bucket_count: int
    counts_len: int


def _require_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def layout(lowest_trackable: object, highest_trackable: object, significant_figures: object) -> Layout:
    """Check a configuration and return its layout; ValueError says what is wrong."""
    lowest = _require_int("lowest_trackable", lowest_trackable)
    highest = _require_int("highest_trackable", highest_trackable)
    figures = _require_int("significant_figures", significant_figures)
    if lowest < 1:
        raise ValueError(f"lowest_trackable must be >= 1, got {lowest}")
    if not 1 <= figures <= 5:
        raise ValueError(f"significant_figures must be between 1 and 5, got {figures}")
    if highest < 2 * lowest:
        raise ValueError(
            f"highest_trackable must be >= 2 x lowest_trackable ({2 * lowest}), got {highest}"
        )
    if highest > INT64_MAX:
        raise ValueError(f"highest_trackable must be <= 2**63 - 1, got {highest}")
    unit_magnitude = int(math.floor(math.log(lowest) / math.log(2)))
    count_magnitude = int(math.ceil(math.log(2 * math.pow(10, figures)) / math.log(2)))
    half_magnitude = count_magnitude - 1 if count_magnitude > 1 else 0
    if unit_magnitude + half_magnitude > 61:
        raise ValueError(
            f"lowest_trackable {lowest} is too large for {figures} significant figures "
            "in 64-bit values"
        )
    sub_bucket_count = 1 << (half_magnitude + 1)
    smallest_untrackable = sub_bucket_count << unit_magnitude
    bucket_count = 1
    while smallest_untrackable <= highest:
        if smallest_untrackable > INT64_MAX // 2:
            bucket_count += 1
            break
        smallest_untrackable <<= 1
        bucket_count += 1
    return Layout(
        unit_magnitude=unit_magnitude,
        sub_bucket_half_count_magnitude=half_magnitude,
        sub_bucket_count=sub_bucket_count,
        sub_bucket_half_count=sub_bucket_count // 2,
        sub_bucket_mask=(sub_bucket_count - 1) << unit_magnitude,
        bucket_count=bucket_count,
        counts_len=(bucket_count + 1) * (sub_bucket_count // 2),
    )


def as_count_value(name: str, value: object) -> int:
    """An integer argument of record(): ints and objects with __index__."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (float, str, bytes, bool)) or value is None:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    try:
        return operator.index(value)  # type: ignore[arg-type]  # __index__ or TypeError: the check
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


def as_value(name: str, value: object) -> int:
    """A value or interval argument: an integer >= 0, taken as 2**63 - 1
    when larger (the native reader's int64 rule, so both twins agree: such
    a value is past every histogram's range and saturates)."""
    value = as_count_value(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value if value <= INT64_MAX else INT64_MAX


def check_percentile(p: object) -> float:
    """A percentile in [0, 100] as a float; ValueError or TypeError otherwise."""
    if isinstance(p, (str, bytes)) or p is None:
        raise TypeError(f"percentile must be a number, not {type(p).__name__}")
    value = float(p)  # type: ignore[arg-type]
    if not 0.0 <= value <= 100.0:  # also false for NaN
        raise ValueError(f"percentile must be between 0 and 100, got {p!r}")
    return value
