"""The histogram's rows of the project's performance table.

    from table import measure          # or load this file by its path
    rows = measure(quick=True)         # about 20 s; quick=False: about 2 min

Each row is a dict: ``section``, ``what``, ``value``, ``unit``, ``baseline``
(what it is compared with), ``baseline_value``, ``ratio`` (value /
baseline_value, or None), ``target`` (text, "" when there is none), ``met``
(True, False, or None without a target) and ``note`` (how it was measured,
and the measured reason when a target is missed). Every number comes from
this run: callgrind instruction counts (hdr_callgrind.py) and one C timing.

    python benchmarks/hdr/table.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_ABOVE_NOOP = 100  # issue 13: record(v) <= 100 instructions above a no-op method call


def _hdr_callgrind() -> Any:
    # Loaded by path, so that the table works however this file was loaded
    # and puts nothing on sys.path.
    spec = importlib.util.spec_from_file_location(
        "loopwatch_benchmarks_hdr_callgrind", os.path.join(HERE, "hdr_callgrind.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry_installed(python: str) -> bool:
    """Whether record() has its own entry (a method descriptor) in the
    loopwatch that ``python`` imports: the first thing to look at when
    record(v) misses its target."""
    import subprocess

    out = subprocess.run(
        [python, "-c", "from loopwatch.hdr.native import Histogram as H; "
         "print(type(vars(H)['record']).__name__)"], capture_output=True, text=True)
    return out.stdout.strip() == "method_descriptor"


def _row(what: str, value: float, unit: str, baseline: str, baseline_value: float,
         target: str = "", met: bool | None = None, note: str = "") -> dict[str, Any]:
    return {
        "section": "Histogram",
        "what": what,
        "value": round(value, 2),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 2),
        "ratio": round(value / baseline_value, 3) if baseline_value else None,
        "target": target,
        "met": met,
        "note": note,
    }


def measure(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the histogram's rows (see the module docstring)."""
    bench = _hdr_callgrind()
    calls = bench.measure_calls(quick)
    writers = bench.measure_writers(quick)
    version = bench.python_version()
    noop = calls["noop"]
    noop_name = "one-argument no-op method of a Cython cdef class (METH_O)"
    how = (f"callgrind, {version}, instructions per call minus an empty loop, "
           f"fresh processes, {'2*10^4' if quick else '2*10^5'} calls")
    rows = []

    above = calls["record"] - noop
    met = above <= TARGET_ABOVE_NOOP
    note = how + (f"; a Cython def no-op (cyfunction) costs {calls['noop_def'] - noop:+.0f} "
                  "above the METH_O one")
    if not met:
        entry = _entry_installed(bench.PY)
        note += ("; missed with record()'s own entry in use: the interpreter's call or the "
                 "record path grew (profile with callgrind_annotate)" if entry else
                 "; missed because record()'s own entry is not installed: calls go through "
                 "Cython's wrapper (tests/hdr/test_histogram_record_entry.py says why)")
    rows.append(_row("record(v), instructions above a no-op method call", above,
                     "instructions", noop_name, noop, f"<= {TARGET_ABOVE_NOOP}", met, note))
    rows.append(_row("record(v, 3), instructions above a no-op method call",
                     calls["record_count"] - noop, "instructions", noop_name, noop, note=how))
    rows.append(_row("record(v, count=3), instructions above a no-op method call",
                     calls["record_kw"] - noop, "instructions", noop_name, noop,
                     note=how + "; a call with keywords takes CPython's generic vectorcall "
                     "path (3.11 specializes none with keywords for method descriptors)"))
    hdrh_name = "hdrhistogram package's record_value(v)"
    rows.append(_row("record(v), native, instructions per call", calls["record"], "instructions",
                     hdrh_name, calls["hdrhistogram"], note=how))
    rows.append(_row("record(v), pure-Python twin, instructions per call", calls["twin"],
                     "instructions", hdrh_name, calls["hdrhistogram"], note=how))
    rows.append(_row("C record, single writer (plain stores), ns per record",
                     writers["single_writer"], "ns", "lw_hdr_record (locked adds)",
                     writers["atomic"],
                     note="wall time, one thread, best of 9 alternating rounds of "
                     f"{'2*10^6' if quick else '10^7'} records; the instruction counts of the "
                     "two are equal (a locked add is one instruction)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="The histogram's performance table rows.")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    args = parser.parse_args()
    for row in measure(args.quick):
        ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else "-"
        verdict = {True: "met", False: "MISSED", None: ""}[row["met"]]
        print(f"{row['what']:<62} {row['value']:>10,.2f} {row['unit']:<12} "
              f"vs {row['baseline_value']:>10,.2f} ({row['baseline']}) ratio {ratio} "
              f"{row['target']} {verdict}".rstrip())


if __name__ == "__main__":
    main()
