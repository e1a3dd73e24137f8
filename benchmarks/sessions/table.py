"""The session registry's rows of the README's performance table (issue 13,
item 4), each against its baseline measured in the same run:

- progress() by id and by handle at 10**6 sessions with random UUID ids,
  cold (every session once, in random order), CPU time per call, in fresh
  processes alternating with the baseline: the pure registry doing the same
  bookkeeping on a heapq with lazy deletion (asyncio's scheme); the ratio is
  the median of the pairs' ratios;
- the same as instruction counts under callgrind (repeatable whatever else
  the machine does);
- check() with nothing due from 10**3 to 10**7 sessions (flat);
- native memory per session, and 10**7 sessions opened, progressed and
  closed, with the process's peak resident memory.

    python benchmarks/sessions/table.py [--quick]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "registry_child.py")
SECTION = "Sessions"
MACHINE_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

# glibc's thresholds, fixed: the heap's state must not swing the results
# between the processes compared (see benchmarks/README, "fixed thresholds").
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
              "MALLOC_TOP_PAD_": "0", "PYTHONHASHSEED": "0"}


def child(*args: str, valgrind_out: str | None = None) -> dict:
    cmd = [sys.executable, CHILD, *args]
    if valgrind_out:
        # Only the measured calls count (registry_child.measured).
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
               "--toggle-collect=deque_extend", f"--callgrind-out-file={valgrind_out}", *cmd]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **MALLOC_ENV},
                         check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def row(what, value, unit, baseline, baseline_value, ratio, target, met, note=""):
    return {"section": SECTION, "what": what, "value": value, "unit": unit,
            "baseline": baseline, "baseline_value": baseline_value, "ratio": ratio,
            "target": target, "met": met, "note": note}


def progress_rows(n: int, pairs: int) -> list[dict]:
    by_id, by_handle, base = [], [], []
    for _ in range(pairs):
        native = child("progress", "native", str(n))
        heapq = child("progress", "heapq", str(n))
        by_id.append((native["by_id_ns"], heapq["by_id_ns"]))
        by_handle.append((native["by_handle_ns"], heapq["by_id_ns"]))
        base.append(heapq["by_id_ns"])
    baseline = f"the pure registry on a heapq, progress() by id (same run, {pairs} fresh-process pairs)"
    out = []
    for what, got, target in ((f"progress() by id, {n:,} sessions, random ids, cold", by_id, 0.25),
                              (f"progress_handle(), {n:,} sessions, cold", by_handle, 0.15)):
        ratio = statistics.median(a / b for a, b in got)
        out.append(row(what, statistics.median(a for a, _ in got) / 1000, "us CPU per call",
                       baseline, statistics.median(base) / 1000, ratio, f"<= {target}x",
                       ratio <= target))
    return out


def instructions(name: str, n: int, k: int, what: str, k_max: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        child("calls", name, str(n), str(k), what, str(k_max), valgrind_out=out)
        with open(out) as f:
            return int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))


def callgrind_rows(n: int, k: int) -> list[dict]:
    def per_call(name: str, what: str) -> float:
        return (instructions(name, n, k, what, k) - instructions(name, n, 0, what, k)) / k

    heapq = per_call("heapq", "id")
    out = []
    for what, native, target in (("by id", per_call("native", "id"), 0.25),
                                 ("by handle", per_call("native", "handle"), 0.15)):
        out.append(row(f"progress() {what}, {n:,} sessions: instructions per call (callgrind)",
                       round(native), "instructions",
                       "the pure registry on a heapq, progress() by id", round(heapq),
                       native / heapq, f"<= {target}x", native / heapq <= target))
    return out


def check_instructions(n: int, k: int) -> float:
    def total(k_run: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cg.out")
            child("check", "native", str(n), str(k_run), valgrind_out=out)
            with open(out) as f:
                return int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))

    return (total(k) - total(0)) / k


def check_callgrind_row(small: int, large: int, k: int) -> dict:
    a, b = check_instructions(small, k), check_instructions(large, k)
    return row(f"check() with nothing due: instructions per call (callgrind), {large:,} vs "
               f"{small:,} sessions", round(b), "instructions", f"the C table at {small:,} sessions",
               round(a), b / a, "<= 1.5x (flat)", b / a <= 1.5)


def check_rows(sizes: list[int], rounds: int) -> list[dict]:
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for _ in range(rounds):  # interleaved, so a busy spell of the machine hits every size
        for n in sizes:
            runs[n].append(child("check", "native", str(n), "20000"))
    got = {n: min(runs[n], key=lambda r: r["check_ns"]) for n in sizes}
    heapq_small = child("check", "heapq", str(sizes[0]), "20000")
    out = []
    for n in sizes:
        out.append(row(f"check() with nothing due, {n:,} sessions", got[n]["check_ns"] / 1000,
                       "us CPU per call", f"the pure registry on a heapq, {sizes[0]:,} sessions",
                       heapq_small["check_ns"] / 1000, got[n]["check_ns"] / heapq_small["check_ns"],
                       "", None))
    flat = got[sizes[-1]]["check_ns"] / got[sizes[0]]["check_ns"]
    out.append(row(f"check() with nothing due: {sizes[-1]:,} vs {sizes[0]:,} sessions",
                   flat, "x", f"the C table at {sizes[0]:,} sessions",
                   got[sizes[0]]["check_ns"] / 1000, flat, "<= 1.5x (flat)", flat <= 1.5))
    for n in sizes[-2:]:
        per = got[n].get("native_bytes_per_session")
        if per is None:
            continue
        out.append(row(f"native memory per session, {n:,} sessions", per, "bytes",
                       "the 64-byte record", 64, per / 64, "<= 64 besides the key",
                       per <= 64,
                       "" if per <= 64 else
                       "the record is 64 bytes (a cache line); the hash index by id adds 4 "
                       "bytes a slot at 3/8 to 3/4 full"))
    return out


def bulk_row(n: int) -> dict:
    got = child("bulk", str(n))
    total = got["open_s"] + got["progress_s"] + got["close_s"]
    return row(f"{n:,} sessions opened, progressed, closed (the C table)",
               got["peak_rss_bytes"] / 2**30, "GiB peak resident",
               "this machine's memory", MACHINE_MEMORY / 2**30,
               got["peak_rss_bytes"] / MACHINE_MEMORY, "within it",
               got["peak_rss_bytes"] < MACHINE_MEMORY,
               f"open {got['open_s']:.1f} s, progress {got['progress_s']:.1f} s, "
               f"close {got['close_s']:.1f} s ({total / n * 1e9:.0f} ns a session in all); "
               f"native memory {got['native_bytes'] / n:.1f} bytes a session")


def measure(quick: bool = False) -> list[dict]:
    """The rows, measured now (about 3 minutes; quick: under a minute, at
    smaller sizes)."""
    if quick:
        rows = progress_rows(100_000, 1) + check_rows([1_000, 100_000], 1) + [bulk_row(100_000)]
        rows += callgrind_rows(5_000, 1_000)
        rows.append(check_callgrind_row(1_000, 10_000, 500))
        return rows
    rows = progress_rows(1_000_000, 3)
    rows += check_rows([1_000, 100_000, 1_000_000, 10_000_000], 3)
    rows.append(bulk_row(10_000_000))
    rows += callgrind_rows(100_000, 20_000)
    rows.append(check_callgrind_row(1_000, 100_000, 2_000))
    return rows


def main() -> None:
    for r in measure("--quick" in sys.argv):
        ratio = "" if r["ratio"] is None else f" ratio {r['ratio']:.3f}"
        met = {True: "MET", False: "MISSED", None: ""}[r["met"]]
        print(f"{r['what']}: {r['value']:.3f} {r['unit']} (baseline {r['baseline']}: "
              f"{r['baseline_value']:.3f}){ratio} target {r['target']} {met} {r['note']}")


if __name__ == "__main__":
    main()
