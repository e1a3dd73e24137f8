"""Print the loop monitor's overhead ratios from a pytest-benchmark JSON file.

    python -m pytest benchmarks/loop/bench_loop.py --benchmark-json=/tmp/loop.json
    python benchmarks/loop/loop_ratios.py /tmp/loop.json

Each ratio is the median over rounds of (time watched / time unwatched), the
unwatched run taken just before each watched one: 1.000 means no overhead.
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "watcher" not in info:
            continue
        key = (info["workload"], info["loop"])
        rows.setdefault(key, {})[info["watcher"]] = (
            info.get("overhead_ratio"), bench["stats"]["min"])
    print(f"{'workload':<10} {'loop':<8} {'watcher':<26} {'ratio':>7} {'min s':>8}")
    for (workload, loop), watchers in sorted(rows.items()):
        for watcher, (ratio, best) in watchers.items():
            shown = f"{ratio:.3f}" if ratio is not None else "-"
            print(f"{workload:<10} {loop:<8} {watcher:<26} {shown:>7} {best:>8.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
