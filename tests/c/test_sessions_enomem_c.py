"""ext/sessions (the native session table) on its own, for the paths Python
cannot reach: every allocator it uses fails at random (wrapped at link
time), and each call that reports out-of-memory must have changed nothing:
a twin table fed the same operations without failures agrees with it on
everything, event by event (tests/c/sessions_enomem.c). Built with ASan +
UBSan where the compiler has them (the arrays then come from calloc/realloc,
whose redzones ASan checks), and once without them (mmap/mremap)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
SOURCES = [ROOT / "tests" / "c" / "sessions_enomem.c", *sorted((ROOT / "ext" / "sessions").glob("*.c")),
           ROOT / "ext" / "wheel" / "lw_slots.c", ROOT / "ext" / "platform" / "lw_mem_linux.c",
           ROOT / "ext" / "platform" / "lw_mem_macos.c", ROOT / "ext" / "platform" / "lw_loop_clock_linux.c",
           ROOT / "ext" / "platform" / "lw_loop_clock_macos.c"]
WRAPPED = "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=mmap,--wrap=mremap"


def _build(tmp_path, sanitized: bool) -> Path | None:
    exe = tmp_path / ("sessions_enomem" + ("_asan" if sanitized else ""))
    cmd = [CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
           *(f"-I{ROOT / 'ext' / d}" for d in ("sessions", "wheel", "platform")),
           *map(str, SOURCES), WRAPPED, "-lm", "-lpthread", "-o", str(exe)]
    if sanitized:
        cmd[1:1] = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    build = subprocess.run(cmd, capture_output=True, text=True)
    if build.returncode != 0:
        assert sanitized, build.stderr  # only the sanitizers may be missing
        return None
    return exe


@pytest.mark.skipif(not sys.platform.startswith("linux") or CC is None,
                    reason="needs a C compiler and GNU ld (--wrap)")
@pytest.mark.parametrize("sanitized", [True, False], ids=["asan", "plain"])
def test_session_table_loses_nothing_when_memory_runs_out(tmp_path, sanitized):
    exe = _build(tmp_path, sanitized)
    if exe is None:
        pytest.skip("no AddressSanitizer here")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=1"
    for seed in (1, 2):  # odd: with a store (its questions and answers), even: without
        run = subprocess.run([str(exe), str(seed), "20000"], capture_output=True, text=True,
                             env=env, timeout=120)
        assert run.returncode == 0 and run.stdout.startswith("ok "), run.stdout + run.stderr
        failures = int(run.stdout.split(", ")[1].split()[0])
        assert failures > 50, run.stdout  # the failing paths were exercised
