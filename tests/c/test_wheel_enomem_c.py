"""ext/wheel/lw_wheel.c on its own, for the paths Python cannot reach: allocation
failures (realloc wrapped to fail on demand), under ASan/UBSan when the
compiler has them. Linux only (GNU ld's --wrap)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@pytest.mark.skipif(not sys.platform.startswith("linux") or CC is None,
                    reason="needs a C compiler and GNU ld (--wrap)")
def test_native_wheel_survives_out_of_memory(tmp_path):
    exe = tmp_path / "wheel_enomem"
    base = [CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'ext' / 'wheel'}",
            str(ROOT / "tests" / "c" / "wheel_enomem.c"), str(ROOT / "ext" / "wheel" / "lw_wheel.c"),
            str(ROOT / "ext" / "wheel" / "lw_slots.c"),
            "-Wl,--wrap=realloc", "-lm", "-o", str(exe)]
    sanitized = base[:1] + ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"] + base[1:]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=1"
    if subprocess.run(sanitized, capture_output=True).returncode != 0:
        build = subprocess.run(base, capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0 and run.stdout == "ok\n", run.stdout + run.stderr
