"""ext/sessions (the native session table) given clock readings far ahead
of its wheel's cursor, built with -fsanitize=float-cast-overflow (which
-fsanitize=undefined leaves out): no tick of a filed wake may overflow the
conversion to uint64_t, and every session stays reported
(tests/c/sessions_far_clock.c)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
SOURCES = [ROOT / "tests" / "c" / "sessions_far_clock.c", *sorted((ROOT / "ext" / "sessions").glob("*.c")),
           ROOT / "ext" / "wheel" / "lw_slots.c", ROOT / "ext" / "platform" / "lw_mem_linux.c",
           ROOT / "ext" / "platform" / "lw_mem_macos.c", ROOT / "ext" / "platform" / "lw_loop_clock_linux.c",
           ROOT / "ext" / "platform" / "lw_loop_clock_macos.c"]
SANITIZERS = ["-fsanitize=float-cast-overflow,undefined", "-fno-sanitize-recover=all"]


@pytest.mark.skipif(CC is None or not sys.platform.startswith(("linux", "darwin")),
                    reason="needs a C compiler")
def test_session_table_files_far_wakes_without_an_overflowing_conversion(tmp_path):
    exe = tmp_path / "sessions_far_clock"
    cmd = [CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *SANITIZERS,
           *(f"-I{ROOT / 'ext' / d}" for d in ("sessions", "wheel", "platform")),
           *map(str, SOURCES), "-lm", "-lpthread", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip("no UndefinedBehaviorSanitizer here")
    assert build.returncode == 0, build.stderr
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0 and run.stdout == "ok\n", run.stdout + run.stderr
