"""Repeatable cost of Histogram.record(): instructions per call under
callgrind, which a noisy shared machine does not blur.

Each case runs in a fresh process twice under callgrind: once with a loop of
N calls (``for v in values: h.record(v)``) and once with the same loop empty
(``for v in values: pass``), after the same setup; the difference over N is
the call alone (loading the method and the argument, the call, and the work).
The baseline is the cheapest method call a Cython extension offers: a
one-argument no-op method of a ``cdef class``, compiled here into a
temporary folder, so no benchmark code ships in the package.

A second measure is in nanoseconds, because instructions cannot show it: a
C loop recording with lw_hdr_record() (locked adds) and with
lw_hdr_record_single_writer() (plain stores), the best of alternating rounds
(record_writers.c).

    python benchmarks/hdr/hdr_callgrind.py [--quick] [--against PYTHON]

``--against`` measures the same calls with another interpreter too (one
with another build of loopwatch installed, e.g. the main branch's), side by
side. Needs valgrind, a C compiler, Cython and setuptools (for the
baseline), and the ``hdrhistogram`` package, in every interpreter used.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable  # the venv's, not the interpreter it links to

# The baselines: what a Cython method taking one argument costs when it does
# nothing. call_o is the cheapest method call CPython has (a METH_O method
# descriptor: no argument parsing at all), the baseline of the <= 100 target;
# call is the same no-op with the package's directives (setup.py: a
# cyfunction, with Cython's argument parsing), what any `def` method pays.
NOOP_PYX = """\
# cython: language_level=3, embedsignature=True
cimport cython

cdef class Noop:
    def call(self, value):
        pass

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def call_o(self, value):
        pass
"""

NOOP_SETUP = """\
from setuptools import Extension, setup
from Cython.Build import cythonize
setup(
    script_args=["build_ext", "--inplace", "-q"],
    ext_modules=cythonize(
        [Extension("lw_bench_noop", ["lw_bench_noop.pyx"], extra_compile_args=["-O2", "-g0"])],
        quiet=True),
)
"""

CHILD = r"""
import random, sys
case, mode, n, noop_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rnd = random.Random(3)
# microsecond latencies: mostly sub-millisecond, a long tail to seconds
base = [int(rnd.lognormvariate(6, 1.5)) for _ in range(1000)]
values = (base * (n // len(base) + 1))[:n]
kind, _, call = case.partition(":")
if kind in ("native", "twin"):
    # Only loopwatch.hdr, which imports nothing above it: the package's
    # __init__ imports every capability (0.5 G instructions under callgrind).
    import types
    import importlib.util
    spec = importlib.util.find_spec("loopwatch")
    package = types.ModuleType("loopwatch")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["loopwatch"] = package
if kind == "noop":
    sys.path.insert(0, noop_dir)
    from lw_bench_noop import Noop
    obj = Noop()
elif kind == "hdrhistogram":
    from hdrh.histogram import HdrHistogram
    obj = HdrHistogram(1, 3_600_000_000, 3)
else:
    from importlib import import_module
    obj = import_module("loopwatch.hdr." + kind).Histogram(1, 3_600_000_000, 3)
body = "pass" if mode == "empty" else "obj." + call
namespace = {}
exec("def run(obj, values):\n    for v in values:\n        " + body + "\n", namespace)
namespace["run"](obj, values)
"""

# case -> (label, the call in the loop, share of N calls it runs)
CASES = {
    "noop": ("no-op method call (METH_O, Cython binding=False)", "noop:call_o(v)", 1),
    "noop_def": ("no-op method call (Cython def, package directives)", "noop:call(v)", 1),
    "record": ("native record(v)", "native:record(v)", 1),
    "record_count": ("native record(v, 3)", "native:record(v, 3)", 1),
    "record_kw": ("native record(v, count=3)", "native:record(v, count=3)", 1),
    "twin": ("pure-Python twin record(v)", "twin:record(v)", 0.25),
    "hdrhistogram": ("hdrhistogram record_value(v)", "hdrhistogram:record_value(v)", 0.25),
}


def build_noop(folder: str, python: str = PY) -> str:
    """Compile the baseline's no-op class into ``folder`` for ``python``."""
    with open(os.path.join(folder, "lw_bench_noop.pyx"), "w") as f:
        f.write(NOOP_PYX)
    built = subprocess.run([python, "-c", NOOP_SETUP], cwd=folder, capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"cannot build the no-op baseline with {python} (it needs Cython and "
                           f"setuptools): {built.stderr.strip()[-500:]}")
    return folder


def child_env(pycache: str) -> dict[str, str]:
    """The children's environment: a fixed hash seed, and bytecode cached in
    ``pycache`` (never in the source tree), so that no run compiles."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPYCACHEPREFIX=pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_up(kinds: list[str], noop_dir: str, pycache: str, python: str = PY) -> None:
    """Run each kind's setup once, natively, to fill ``pycache``: a run that
    compiles a module while its empty twin loads it would not subtract."""
    for kind in kinds:
        subprocess.run([python, "-c", CHILD, kind + ":", "empty", "0", noop_dir],
                       check=True, capture_output=True, env=child_env(pycache))


def instructions(case: str, mode: str, n: int, noop_dir: str, python: str = PY,
                 pycache: str | None = None) -> int:
    """Instructions of one fresh process running ``case`` (all threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = child_env(pycache or os.path.join(tmp, "pycache"))
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, "-c", CHILD,
             case, mode, str(n), noop_dir],
            check=True, capture_output=True, env=env)
        total = 0
        for path in glob.glob(out + "*"):
            with open(path) as f:
                total += int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))
        return total


def measure_calls(quick: bool = False, python: str = PY) -> dict[str, float]:
    """Instructions per call of every case in CASES, the empty loop
    subtracted, with ``python`` (and the loopwatch it has installed)."""
    n = 10_000 if quick else 200_000
    # Cases of one kind (noop, native, ...) share their setup and their
    # number of calls, so one empty run per kind serves them all.
    calls: dict[str, int] = {}
    for _, case, share in CASES.values():
        kind = case.partition(":")[0]
        assert calls.setdefault(kind, int(n * share)) == int(n * share), kind
    runs = [(case, "loop") for _, case, _ in CASES.values()]
    runs += [(kind + ":", "empty") for kind in calls]
    with tempfile.TemporaryDirectory() as noop_dir, tempfile.TemporaryDirectory() as pycache:
        # Two at a time: the machine has two cores, and callgrind counts
        # are unaffected by how busy it is. The baseline's build overlaps
        # the runs that do not need it, which go first.
        with ThreadPoolExecutor(max_workers=2) as pool:
            built = pool.submit(build_noop, noop_dir, python)
            warm_up([kind for kind in calls if kind != "noop"], noop_dir, pycache, python)
            built.result()
            warm_up(["noop"], noop_dir, pycache, python)

            def one(run: tuple[str, str]) -> int:
                kind = run[0].partition(":")[0]
                return instructions(run[0], run[1], calls[kind], noop_dir, python, pycache)

            counts = dict(zip(runs, pool.map(one, runs)))
    result = {}
    for key, (_, case, _) in CASES.items():
        kind = case.partition(":")[0]
        result[key] = (counts[(case, "loop")] - counts[(kind + ":", "empty")]) / calls[kind]
    return result


def measure_writers(quick: bool = False) -> dict[str, float]:
    """Nanoseconds per record in C: ``{"atomic": ..., "single_writer": ...}``
    (record_writers.c, built here with the release build's -O2)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (set CC)")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "record_writers")
        subprocess.run(
            [cc, "-std=c11", "-O2", "-I", os.path.join(ROOT, "ext", "hdr"),
             os.path.join(HERE, "record_writers.c"), os.path.join(ROOT, "ext", "hdr", "lw_hdr.c"),
             os.path.join(ROOT, "ext", "hdr", "lw_hdr_codec.c"), "-o", exe, "-lm"],
            check=True, capture_output=True)
        out = subprocess.run([exe, "2000000" if quick else "10000000"], check=True,
                             capture_output=True, text=True).stdout
    found = dict(re.findall(r"(\w+)_ns (\S+)", out))
    return {"atomic": float(found["atomic"]), "single_writer": float(found["single_writer"])}


def python_version(python: str = PY) -> str:
    """``CPython 3.11.7`` for the interpreter ``python``."""
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_implementation(), "
         "platform.python_version())"], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (about 10x)")
    parser.add_argument("--against", metavar="PYTHON",
                        help="also measure with this interpreter (another loopwatch build)")
    args = parser.parse_args()
    columns = [("this", PY)] + ([("against", args.against)] if args.against else [])
    results = {name: measure_calls(args.quick, python) for name, python in columns}
    for name, python in columns:
        print(f"{name}: {python} ({python_version(python)})")
    print("\ninstructions per call, the empty loop subtracted; 'above' = minus the METH_O no-op")
    header = f"{'call':<52}" + "".join(f" {name + ' instr':>13} {'above':>7}" for name, _ in columns)
    print(header)
    for key, (label, _, _) in CASES.items():
        row = f"{label:<52}"
        for name, _ in columns:
            cost, noop = results[name][key], results[name]["noop"]
            row += f" {cost:>13,.0f} {cost - noop:>+7,.0f}"
        print(row)
    writers = measure_writers(args.quick)
    print(f"\nC, ns per record (best of 9 alternating rounds): lw_hdr_record {writers['atomic']:.2f}, "
          f"lw_hdr_record_single_writer {writers['single_writer']:.2f} "
          f"({writers['single_writer'] / writers['atomic']:.2f}x)")


if __name__ == "__main__":
    main()
