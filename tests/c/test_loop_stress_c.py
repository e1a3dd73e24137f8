"""The native sampler (ext/loop/lw_loop.c) stressed from C, without Python:
heartbeats with stalls and pauses, interval swaps as fast as they come, an
event reader. No lag sample may be lost or doubled across swaps, every stall
start must have its end, stop must join promptly. Built plain and under
ThreadSanitizer and AddressSanitizer + UBSan."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from loop_support import REPO


SOURCES = ["tests/c/lw_loop_stress.c", "ext/loop/lw_loop.c", "ext/platform/lw_loop_clock_linux.c",
           "ext/platform/lw_loop_clock_macos.c", "ext/platform/lw_threadcpu_linux.c",
           "ext/platform/lw_threadcpu_macos.c", "ext/platform/lw_threadstate_linux.c",
           "ext/platform/lw_threadstate_macos.c", "ext/platform/lw_ping_linux.c",
           "ext/platform/lw_ping_macos.c", "ext/platform/lw_selectwait_linux.c",
           "ext/platform/lw_selectwait_macos.c", "ext/platform/lw_fdtable_linux.c",
           "ext/platform/lw_fdtable_macos.c", "ext/platform/lw_wakewatch_linux.c",
           "ext/platform/lw_wakewatch_macos.c", "ext/hdr/lw_hdr.c", "ext/hdr/lw_hdr_codec.c"]
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(CC is None, reason="no C compiler")
@pytest.mark.parametrize("sanitizer", [None, "thread", "address,undefined"])
def test_native_sampler_under_stress(tmp_path, sanitizer):
    exe = tmp_path / "lw_loop_stress"
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g"]
    if sanitizer:
        flags += [f"-fsanitize={sanitizer}", "-fno-sanitize-recover=all"]
    build = subprocess.run([CC, *flags, "-Iext/hdr", "-Iext/loop", "-Iext/platform", *SOURCES, "-lpthread", "-lm", "-o", str(exe)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    if build.returncode != 0 and sanitizer and "sanitize" in build.stderr:
        pytest.skip(f"{CC} cannot build with -fsanitize={sanitizer}")
    assert build.returncode == 0, build.stderr
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["TSAN_OPTIONS"] = "halt_on_error=1"
    run = subprocess.run([str(exe), "1.0"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING" not in run.stderr, run.stderr
    fields = dict(item.split("=") for item in run.stdout.split())
    assert int(fields["samples"]) == int(fields["recorded"]) > 1000
    assert int(fields["starts"]) == int(fields["ends"]) >= 1
