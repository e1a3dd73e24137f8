"""The C record path's guarantees (ext/hdr/lw_hdr.h): lock-free recording from
threads that hold no GIL, concurrent with readers, loses no count; the
single-writer recording gives the same histogram, and loses no count while
one writer at a time records (readers running, hand-overs under a mutex).
Checked by C programs, also under ThreadSanitizer when the compiler has it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CC = os.environ.get("CC", "cc")

pytestmark = pytest.mark.skipif(
    shutil.which(CC) is None or not (ROOT / "ext" / "hdr" / "lw_hdr.c").exists(),
    reason="needs a C compiler and the ext/ sources",
)


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}


def _build(tmp_path, extra_flags, program="lw_hdr_stress.c"):
    exe = tmp_path / program.removesuffix(".c")
    sources = [str(ROOT / "tests/c" / program), str(ROOT / "ext/hdr/lw_hdr.c"), str(ROOT / "ext/hdr/lw_hdr_codec.c")]
    cmd = [CC, "-std=c11", "-O1", "-g", "-Wall", "-Werror", "-I", str(ROOT / "ext" / "hdr"), *extra_flags,
           *sources, "-o", str(exe), "-lpthread", "-lm"]
    return exe, subprocess.run(cmd, capture_output=True, text=True, env=_clean_env())


def _run(exe):
    # The sanitizer stage of CI preloads ASan into Python; a TSan program
    # cannot run with it, so the child gets a clean environment.
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=100, env=_clean_env())


def test_concurrent_record_loses_nothing(tmp_path):
    exe, built = _build(tmp_path, [])
    assert built.returncode == 0, built.stderr
    run = _run(exe)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "total=800000 sum=800000" in run.stdout


def test_concurrent_record_is_race_free_under_tsan(tmp_path):
    exe, built = _build(tmp_path, ["-fsanitize=thread"])
    if built.returncode != 0:
        pytest.skip(f"no ThreadSanitizer runtime: {built.stderr.strip()[:200]}")
    run = _run(exe)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING: ThreadSanitizer" not in run.stderr
    assert "total=800000 sum=800000" in run.stdout


SINGLE_WRITER_OK = "same=1 lone=200000/200000 turns=400000/400000"


def test_single_writer_records_what_record_does_and_loses_nothing(tmp_path):
    exe, built = _build(tmp_path, [], "lw_hdr_single_writer.c")
    assert built.returncode == 0, built.stderr
    run = _run(exe)
    assert run.returncode == 0, run.stdout + run.stderr
    assert SINGLE_WRITER_OK in run.stdout


def test_single_writer_is_race_free_under_tsan(tmp_path):
    exe, built = _build(tmp_path, ["-fsanitize=thread"], "lw_hdr_single_writer.c")
    if built.returncode != 0:
        pytest.skip(f"no ThreadSanitizer runtime: {built.stderr.strip()[:200]}")
    run = _run(exe)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING: ThreadSanitizer" not in run.stderr
    assert SINGLE_WRITER_OK in run.stdout
