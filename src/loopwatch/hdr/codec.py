"""HdrHistogram's V2 compressed encoding: the framing around the counts.

Wire format (big-endian), base64 over::

    outer:   cookie 0x1c849314 | u32 length of the zlib stream | zlib(...)
    inside:  cookie 0x1c849313 | u32 payload length | u32 normalizing offset
             | u32 significant figures | u64 lowest | u64 highest
             | f64 integer-to-double ratio | counts payload

The counts payload is encoded and decoded by each Histogram twin; this
module checks everything around it and refuses hostile input before it can
cost more memory than the declared configuration allows.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from typing import NamedTuple

from .layout import layout

ENCODING_COOKIE = 0x1C849313
COMPRESSION_COOKIE = 0x1C849314
_COOKIE_BASE_MASK = ~0xF0 & 0xFFFFFFFF
_OUTER = struct.Struct(">II")
_HEADER = struct.Struct(">IIIIQQd")
MAX_VARINT_BYTES = 9


class Decoded(NamedTuple):
    """A checked header and its raw counts payload."""

    lowest_trackable: int
    highest_trackable: int
    significant_figures: int
    payload: bytes


def encode_frame(lowest: int, highest: int, figures: int, payload: bytes) -> bytes:
    """Wrap a counts payload as base64 V2 compressed bytes."""
    header = _HEADER.pack(ENCODING_COOKIE, len(payload), 0, figures, lowest, highest, 1.0)
    compressed = zlib.compress(header + payload)
    return base64.b64encode(_OUTER.pack(COMPRESSION_COOKIE, len(compressed)) + compressed)


def _raw_bytes(data: object) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("encoded histogram is not base64: non-ASCII text") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"encoded histogram must be bytes or str, not {type(data).__name__}")


def decode_frame(data: object) -> Decoded:
    """Check and unwrap base64 V2 compressed data; ValueError if it is not."""
    try:
        raw = base64.b64decode(_raw_bytes(data).strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"encoded histogram is not base64: {exc}") from None
    if len(raw) < _OUTER.size:
        raise ValueError(f"encoded histogram is truncated: {len(raw)} bytes")
    cookie, length = _OUTER.unpack_from(raw)
    if cookie & _COOKIE_BASE_MASK != COMPRESSION_COOKIE & _COOKIE_BASE_MASK:
        raise ValueError(f"not an HdrHistogram V2 compressed encoding (cookie {cookie:#010x})")
    if length != len(raw) - _OUTER.size:
        raise ValueError(
            f"encoded histogram declares {length} compressed bytes but holds {len(raw) - _OUTER.size}"
        )
    inflater = zlib.decompressobj()
    try:
        header = inflater.decompress(raw[_OUTER.size :], _HEADER.size)
        if len(header) < _HEADER.size:
            raise ValueError("encoded histogram is truncated inside its header")
        (cookie, payload_len, offset, figures, lowest, highest, ratio) = _HEADER.unpack(header)
        if cookie & _COOKIE_BASE_MASK != ENCODING_COOKIE & _COOKIE_BASE_MASK:
            raise ValueError(f"not an HdrHistogram V2 payload (cookie {cookie:#010x})")
        if offset != 0:
            raise ValueError(f"normalizing index offset {offset} is not supported")
        if ratio != 1.0:
            raise ValueError(f"a DoubleHistogram encoding (ratio {ratio!r}) is not supported")
        try:
            geometry = layout(lowest, highest, figures)
        except ValueError as exc:
            raise ValueError(f"encoded histogram has a bad configuration: {exc}") from None
        if payload_len > geometry.counts_len * MAX_VARINT_BYTES:
            raise ValueError(
                f"encoded payload of {payload_len} bytes cannot fit {geometry.counts_len} counts"
            )
        # max_length 0 means "no limit" to zlib: never pass it.
        payload = inflater.decompress(inflater.unconsumed_tail, payload_len) if payload_len else b""
        if len(payload) < payload_len:
            raise ValueError(
                f"encoded histogram is truncated: {len(payload)} of {payload_len} payload bytes"
            )
        if inflater.decompress(inflater.unconsumed_tail, 1) or not inflater.eof:
            raise ValueError("encoded histogram does not end where its header says")
    except zlib.error as exc:
        raise ValueError(f"encoded histogram is not valid zlib data: {exc}") from None
    return Decoded(lowest, highest, figures, payload)


#: Layout of the state a pickled Histogram carries: (version, encode()
#: output, saturated_count). The same for both implementations.
PICKLE_VERSION = 1


def unpickle(implementation: str, version: int, data: bytes, saturated: int) -> object:
    """Rebuild a pickled Histogram (the reconstructor both ``__reduce__`` name).

    The state is the histogram's own V2 encoding plus the saturated count
    the format cannot carry, so a pickle written by either implementation
    holds the same state. It loads as the implementation that wrote it; a
    native pickle loads as the pure-Python twin where the native extension
    cannot be imported (as ``loopwatch`` itself falls back).
    """
    if version != PICKLE_VERSION:
        raise ValueError(f"unsupported Histogram pickle version {version!r}")
    cls: object
    if implementation == "native":
        try:
            from .native import Histogram as cls
        except ImportError:
            from .twin import Histogram as cls
    elif implementation == "python":
        from .twin import Histogram as cls
    else:
        raise ValueError(f"unknown Histogram implementation {implementation!r}")
    return cls._restore(data, saturated)  # type: ignore[attr-defined]
