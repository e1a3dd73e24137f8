"""Fuzz target for ``Histogram.decode`` (atheris / libFuzzer).

Each input is one byte of mode, then the rest:

* mode even: the rest is the binary V2 compressed frame (cookie, length,
  zlib stream), base64-encoded before decoding: the framing and zlib checks.
* mode odd: the rest is the inflated body (header and counts payload),
  compressed and framed here, so that mutations reach the header checks and
  the counts decoders (the C one in ext/hdr/lw_hdr_codec.c above all)
  instead of dying on a zlib checksum.

The native decoder must either raise ValueError or return a consistent
histogram: its total is the sum of its buckets, it re-encodes and decodes to
an equal histogram, and, for layouts small enough to decode fast in Python,
the pure-Python twin reaches exactly the same outcome. Anything else (another
exception, a crash, a sanitizer report) is a finding.

Seeds are every histogram of the .hlog corpus (tests/hdr/corpus), in both
modes. Run (libFuzzer's options pass through)::

    python tests/fuzz/fuzz_decode.py -max_total_time=60

With no corpus directory given, the seeds are written to a fresh temporary
one. Under the sanitizer build, preload libasan as .ci/run does. ``--check``
runs every seed once through the target, without atheris;
``--write-seeds DIR`` writes the seeds into DIR (as .ci/run does);
``--mutate SECONDS [DIR...]`` replays the seeds and every input in the
DIRs, then mutates them (structure-aware, without coverage feedback) for
SECONDS: .ci/run's loop on the sanitizer build, where libFuzzer's coverage
feedback does not work.
"""

from __future__ import annotations

import base64
import struct
import sys
import tempfile
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "hdr" / "corpus"
_OUTER = struct.Struct(">II")
# Layouts up to this many counts are also decoded by the twin (a Python list
# of the declared size is allocated and scanned: keep the target fast).
TWIN_MAX_COUNTS = 1 << 16


def seeds() -> list[bytes]:
    out = []
    for path in sorted(CORPUS.glob("*.hlog")):
        for line in path.read_text().splitlines():
            if "HIST" not in line:
                continue
            raw = base64.b64decode(line.rsplit(",", 1)[1])
            out.append(b"\x00" + raw)
            out.append(b"\x01" + zlib.decompress(raw[_OUTER.size:]))
    return out


def to_encoding(data: bytes) -> bytes:
    if not data:
        return b""
    mode, rest = data[0], data[1:]
    if mode & 1:
        z = zlib.compress(rest)
        rest = _OUTER.pack(0x1C849314, len(z)) + z
    return base64.b64encode(rest)


def _outcome(cls, encoded: bytes):
    try:
        h = cls.decode(encoded)
    except ValueError:
        return None, "ValueError"
    return h, (h.lowest_trackable, h.highest_trackable, h.significant_figures,
               h.total_count, h.saturated_count, list(h.recorded()))


def test_one_input(data: bytes) -> None:
    from loopwatch.hdr import native, twin
    from loopwatch.hdr.codec import decode_frame
    from loopwatch.hdr.layout import layout

    encoded = to_encoding(data)
    h, outcome = _outcome(native.Histogram, encoded)
    if h is not None:
        recorded = outcome[-1]
        assert h.total_count == sum(c for _, c in recorded), outcome
        assert h.saturated_count == 0, outcome
        assert h.max == (recorded[-1][0] if recorded else 0), outcome
        again = native.Histogram.decode(h.encode())
        assert again == h, outcome
        h.percentiles([0, 50, 99.9, 100])
        h.mean, h.stdev, h.min  # noqa: B018 - queries must not crash
    # the twin must agree on everything it can decode quickly
    try:
        frame = decode_frame(encoded)
    except ValueError:
        assert outcome == "ValueError"
        return
    if layout(frame.lowest_trackable, frame.highest_trackable,
              frame.significant_figures).counts_len <= TWIN_MAX_COUNTS:
        _, twin_outcome = _outcome(twin.Histogram, encoded)
        assert twin_outcome == outcome, (outcome, twin_outcome)


_INTERESTING = [0, 1, -1, 2, -2, 127, 128, -128, 1 << 31, -(1 << 31), (1 << 62), -(1 << 62),
                (1 << 63) - 1, -(1 << 63), 1 << 16, -(1 << 16)]


def _zigzag(n: int) -> bytes:
    v = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    for _ in range(8):
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def mutate(rng, data: bytes, pool: list[bytes]) -> bytes:
    """One to four structure-aware byte mutations of ``data``."""
    buf = bytearray(data) or bytearray(b"\x01")
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        i = rng.randrange(1, len(buf) + 1) if len(buf) > 1 else 1
        if kind == 0 and len(buf) > 1:  # flip bits
            buf[min(i, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1 and len(buf) > 1:  # set a byte
            buf[min(i, len(buf) - 1)] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif kind == 2:  # insert a varint of an interesting count or run
            buf[i:i] = _zigzag(rng.choice(_INTERESTING) + rng.randint(-2, 2))
        elif kind == 3 and len(buf) > 2:  # delete a range
            del buf[i:i + rng.randint(1, 16)]
        elif kind == 4:  # duplicate a range
            j = rng.randrange(1, len(buf) + 1)
            buf[i:i] = buf[j:j + rng.randint(1, 32)]
        elif kind == 5 and pool:  # splice with another input (same mode byte kept)
            other = rng.choice(pool)
            j = rng.randrange(1, len(other) + 1) if len(other) > 1 else 1
            buf[i:] = other[j:]
        elif len(buf) > 40:  # overwrite a header field (inflated-body mode)
            at = rng.choice([4, 8, 12, 16, 24, 32])
            width = 8 if at >= 16 else 4
            value = rng.choice([0, 1, 2, 5, 6, 62, 63, 64, (1 << 31), (1 << 32) - 1, (1 << 62), (1 << 63) - 1,
                                (1 << 64) - 1, rng.getrandbits(width * 8)])
            buf[1 + at:1 + at + width] = (value & ((1 << (width * 8)) - 1)).to_bytes(width, "big")
    return bytes(buf)


def mutate_for(seconds: float, dirs: list[str]) -> None:
    """Replay every input of ``dirs`` (and the seeds), then mutate them for
    ``seconds``. The fuzzing loop for builds where libFuzzer's coverage
    feedback is not available (the gcc sanitizer build)."""
    import os
    import random
    import time

    pool = seeds() + [p.read_bytes() for d in dirs for p in sorted(Path(d).iterdir()) if p.is_file()]
    for data in pool:
        test_one_input(data)
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    body = [d for d in pool if d[:1] == b"\x01"] or pool
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(body if rng.random() < 0.8 else pool), pool)
        try:
            test_one_input(data)
        except BaseException:
            print(f"fuzz_decode: finding (seed {seed}) on input {base64.b64encode(data).decode()}",
                  file=sys.stderr)
            raise
        runs += 1
    print(f"fuzz_decode: replayed {len(pool)} inputs, then {runs} mutations (seed {seed}), no finding")


def main(argv: list[str]) -> None:
    if "--check" in argv:
        for seed in seeds():
            test_one_input(seed)
        print(f"fuzz_decode: {len(seeds())} seeds pass")
        return
    if "--mutate" in argv:
        at = argv.index("--mutate")
        mutate_for(float(argv[at + 1]), argv[at + 2:])
        return
    if "--write-seeds" in argv:
        seed_dir = Path(argv[argv.index("--write-seeds") + 1])
        for i, seed in enumerate(seeds()):
            (seed_dir / f"seed{i:03d}").write_bytes(seed)
        return
    import atheris

    with atheris.instrument_imports(include=["loopwatch"]):
        from loopwatch.hdr import codec, layout, native, twin  # noqa: F401

    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):
        seed_dir = tempfile.mkdtemp(prefix="fuzz_decode_")
        for i, seed in enumerate(seeds()):
            Path(seed_dir, f"seed{i:03d}").write_bytes(seed)
        args.append(seed_dir)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
