"""Decoding corrupted, truncated and hostile input: ValueError, never a crash,
a hang, another exception, or an allocation beyond the declared layout."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

OUTER = struct.Struct(">II")
HEADER = struct.Struct(">IIIIQQd")


def frame(payload=b"", *, cookie=0x1C849313, payload_len=None, offset=0, figures=3,
          lowest=1, highest=3_600_000_000, ratio=1.0, outer_cookie=0x1C849314,
          outer_len=None, compress=zlib.compress):
    body = HEADER.pack(cookie, len(payload) if payload_len is None else payload_len,
                       offset, figures, lowest, highest, ratio) + payload
    z = compress(body)
    return base64.b64encode(OUTER.pack(outer_cookie, len(z) if outer_len is None else outer_len) + z)


def sample(impl):
    h = impl.Histogram()
    for v in (0, 3, 5000, 123_456, 3_600_000_000):
        h.record(v, 2)
    return h.encode()


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"", "truncated"),
        (b"!!!not base64!!!", "not base64"),
        ("HISTF\u00e9", "non-ASCII"),
        (base64.b64encode(b"\x1c\x84\x93"), "truncated"),
        (frame(outer_cookie=0x12345678), "cookie"),
        (frame(outer_len=5), "declares"),
        (frame(cookie=0x1C849301), "not an HdrHistogram V2 payload"),
        (frame(offset=3), "normalizing index offset"),
        (frame(ratio=0.5), "DoubleHistogram"),
        (frame(figures=9), "significant_figures"),
        (frame(lowest=0), "lowest_trackable"),
        (frame(lowest=10, highest=11), "highest_trackable"),
        (frame(highest=1 << 63), "highest_trackable"),
        (frame(payload_len=10**9), "cannot fit"),
        (frame(b"\x02\x04", payload_len=5), "truncated"),
        (frame(b"\x02\x04\x06", payload_len=2), "does not end"),
        (frame(b"\x02\xff"), "end inside|malformed"),
        (frame(b"\x02" * 30 + b"\x80\x80\x80\x80\x80\x80\x80\x80"), "end inside|malformed"),
        # a run of zeros past the last bucket (23552 buckets at the default)
        (frame(b"\xff\xff\x7f\x02"), "run past|malformed"),
        # INT64_MIN as a zero-run length
        (frame(b"\xff" * 8 + b"\xff"), "run past|malformed"),
        # counts whose sum overflows int64
        (frame((b"\xfe" + b"\xff" * 7 + b"\xff") * 2), "2\\*\\*63"),
        (base64.b64encode(OUTER.pack(0x1C849314, 4) + b"abcd"), "zlib"),
        (base64.b64encode(OUTER.pack(0x1C849314, 6) + zlib.compress(b"x")[:6]), "truncated|zlib"),
    ],
)
def test_bad_input_raises_value_error(impl, data, needle):
    with pytest.raises(ValueError, match=needle):
        impl.Histogram.decode(data)


@pytest.mark.parametrize("data", [None, 12, 3.5, ["HISTF"], object()])
def test_wrong_type_raises_type_error(impl, data):
    with pytest.raises(TypeError, match="bytes or str"):
        impl.Histogram.decode(data)


def test_compression_bomb_is_not_inflated(impl):
    # A 100 MB run of zero bytes compresses to ~100 kB; the header declares 2
    # payload bytes, so decoding must stop long before inflating it all.
    bomb = frame(b"\x00" * 100_000_000, payload_len=2)
    assert len(bomb) < 200_000
    with pytest.raises(ValueError, match="does not end"):
        impl.Histogram.decode(bomb)


def test_declared_layout_bounds_allocation(impl):
    # The largest layout that validates (5 figures to 2**63-1) is decodable,
    # with no counts: nothing beyond what that configuration needs.
    data = frame(figures=5, highest=(1 << 63) - 1)
    h = impl.Histogram.decode(data)
    assert h.total_count == 0 and h.highest_trackable == (1 << 63) - 1


def _zigzag(n):
    v = (n << 1) ^ (n >> 63)
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


@pytest.mark.parametrize("highest, figures", [(1000, 2), (3_600_000_000, 3), (2, 1), (100, 3)])
def test_counts_past_highest_are_kept_as_real_values(impl, highest, figures):
    from loopwatch.hdr.layout import layout

    last = layout(1, highest, figures).counts_len - 1
    # 2 in bucket 1, then 5 in the very last bucket, beyond highest_trackable:
    # Java and the hdrhistogram package record there, so it is real data
    payload = _zigzag(-1) + _zigzag(2) + _zigzag(-(last - 2)) + _zigzag(5)
    data = frame(payload, figures=figures, highest=highest)
    h = impl.Histogram.decode(data)
    assert h.total_count == 7
    assert h.saturated_count == 0
    assert h.count_at(h.highest_recordable) == 5
    assert h.value_at_percentile(100) == h.max == h.highest_recordable > highest
    assert h.min == 1
    # lossless: the same counts come back out
    assert impl.Histogram.decode(h.encode()) == h
    assert base64.b64decode(h.encode()) == base64.b64decode(data)


def test_whitespace_around_base64_is_accepted(impl):
    data = sample(impl)
    assert impl.Histogram.decode(b"  " + data + b"\n") == impl.Histogram.decode(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_encodings_never_crash(impl, data):
    raw = bytearray(base64.b64decode(sample(impl)))
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        elif kind == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)):]
        else:
            i = data.draw(st.integers(0, len(raw)))
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        h = impl.Histogram.decode(base64.b64encode(bytes(raw)))
    except ValueError:
        return
    # whatever decodes is a consistent histogram
    assert h.total_count == sum(c for _, c in h.recorded())
    h.encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=64), figures=st.integers(1, 3),
       highest=st.sampled_from([2, 1000, 3_600_000_000, (1 << 63) - 1]))
def test_arbitrary_payloads_decode_or_raise(impl, payload, figures, highest):
    try:
        h = impl.Histogram.decode(frame(payload, figures=figures, highest=highest))
    except ValueError:
        return
    assert h.total_count == sum(c for _, c in h.recorded())
    # (the format has no field for the saturated count: compare buckets)
    assert list(impl.Histogram.decode(h.encode()).recorded()) == list(h.recorded())


def test_both_twins_agree_on_arbitrary_payloads(request):
    from loopwatch._selector import load_implementation

    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")

    native, python = load_implementation("native"), load_implementation("python")

    @settings(max_examples=300, deadline=None)
    @given(payload=st.binary(max_size=48))
    def check(payload):
        data = frame(payload, figures=2, highest=100_000)
        outcomes = []
        for impl in (native, python):
            try:
                outcomes.append(list(impl.Histogram.decode(data).recorded()))
            except ValueError:
                outcomes.append("ValueError")
        assert outcomes[0] == outcomes[1]

    check()
