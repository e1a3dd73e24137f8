"""The fuzz target itself (fuzz_decode.py) on its seeds and a few crafted
inputs: it must pass them, and it must notice a decoder that misbehaves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("fuzz_decode", Path(__file__).with_name("fuzz_decode.py"))
fuzz_decode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_decode)


@pytest.fixture(autouse=True)
def _needs_native(request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")


def test_native_fuzz_target_passes_its_seeds():
    seeds = fuzz_decode.seeds()
    assert len(seeds) >= 50
    for seed in seeds:
        fuzz_decode.test_one_input(seed)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x01", b"\x00garbage", b"\x01" + b"\xff" * 80])
def test_native_fuzz_target_takes_junk(data):
    fuzz_decode.test_one_input(data)


def test_native_fuzz_target_catches_a_disagreement(monkeypatch):
    from loopwatch.hdr import twin

    seed = next(s for s in fuzz_decode.seeds() if s[0] == 1)
    monkeypatch.setattr(twin.Histogram, "_load_payload", lambda self, payload: None)
    with pytest.raises(AssertionError):
        fuzz_decode.test_one_input(seed)
