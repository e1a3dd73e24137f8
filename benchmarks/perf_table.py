"""The README's whole performance table, from one run: every area's rows
(benchmarks/<area>/table.py: ``measure(quick)``), each measured against its
baseline in the same run, with its target and whether it was met (or the
miss and its measured reason).

    python benchmarks/perf_table.py                 print the table (about 20 minutes)
    python benchmarks/perf_table.py --quick         smaller sizes, fewer rounds (a few minutes)
    python benchmarks/perf_table.py --write-readme  also put it in README.md's Performance section
    python benchmarks/perf_table.py --json FILE     also write the rows as JSON
    python benchmarks/perf_table.py --only sessions one area (hdr, sessions, loop)

Needs the bench extra (``pip install ".[bench]"``) and valgrind (callgrind
counts instructions, which the machine's noise does not blur).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AREAS = ["hdr", "sessions", "loop"]  # the README's order
START = "<!-- perf-table: start (benchmarks/perf_table.py --write-readme) -->"
END = "<!-- perf-table: end -->"


def load_area(area: str):
    """benchmarks/<area>/table.py, imported from its own folder (its
    helpers sit beside it), or None when the area has no table."""
    path = os.path.join(HERE, area, "table.py")
    if not os.path.exists(path):
        return None
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"perf_table_{area}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _verdict(row: dict) -> str:
    if row.get("met") is None:
        return "-"
    return "met" if row["met"] else "**missed**"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"CPython {platform.python_version()}")


def markdown(rows: list[dict], quick: bool) -> str:
    """The table as the README shows it: one table a section, then the
    notes (a missed target's measured reason) under it."""
    when = datetime.date.today().isoformat()
    out = [f"Measured {when} on {machine()}{' (quick run)' if quick else ''}, by "
           "`python benchmarks/perf_table.py`: every row against its baseline measured in "
           "the same run.", ""]
    sections: dict[str, list[dict]] = {}
    for row in rows:
        sections.setdefault(row["section"], []).append(row)
    for section, items in sections.items():
        out.append(f"**{section}**")
        out.append("")
        out.append("| measure | loopwatch | baseline (same run) | ratio | target | |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        notes = []
        for row in items:
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
            mark = ""
            if row.get("note"):
                notes.append(row["note"])
                mark = f" [{len(notes)}]"
            out.append(f"| {row['what']}{mark} | {_number(row['value'])} {row['unit']} | "
                       f"{row['baseline']}: {_number(row['baseline_value'])} | {ratio} | "
                       f"{row['target'] or '-'} | {_verdict(row)} |")
        out.append("")
        for i, note in enumerate(notes, 1):
            out.append(f"[{i}] {note}")
        if notes:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_readme(table: str, path: str = os.path.join(ROOT, "README.md")) -> None:
    with open(path) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + START + "\n" + table + END + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--only", choices=AREAS, action="append")
    args = parser.parse_args(argv)
    missing = [what for what, ok in (("valgrind", shutil.which("valgrind")),
                                     ("Cython (pip install '.[bench]')",
                                      importlib.util.find_spec("Cython"))) if not ok]
    if missing:
        raise SystemExit(f"perf_table: needs {', '.join(missing)}")
    rows: list[dict] = []
    failed = []
    for area in args.only or AREAS:
        module = load_area(area)
        if module is None:
            print(f"({area}: no benchmarks/{area}/table.py)", file=sys.stderr)
            continue
        print(f"measuring {area} ...", file=sys.stderr, flush=True)
        try:
            rows += module.measure(quick=args.quick)
        except Exception:  # one area's failure must not cost the others' run
            traceback.print_exc()
            failed.append(area)
    table = markdown(rows, args.quick)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.write_readme and not failed:
        write_readme(table)
    missed = [r["what"] for r in rows if r.get("met") is False]
    print(f"{len(rows)} rows; targets missed: {len(missed)}", file=sys.stderr)
    if failed:
        raise SystemExit(f"perf_table: these areas failed (above): {', '.join(failed)}")


if __name__ == "__main__":
    main()
