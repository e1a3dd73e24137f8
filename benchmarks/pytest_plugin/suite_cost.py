"""What the pytest plugin costs a test suite: wall time of a generated suite
of small pytest-asyncio tests, run in a subprocess

* without the plugin's option (the plugin loaded, inert): the baseline,
* with ``--loopwatch-max-lag=0.1`` (every test's loop watched),
* with ``-p no:loopwatch`` (the plugin not even loaded),
* under asyncio debug mode (``PYTHONASYNCIODEBUG=1``), for comparison,

alternating the variants round by round in one session, and printing each
one's median wall time and its ratio to the baseline (median of the
per-round ratios), and the same for the CPU time the pytest process used
(user + system; less sensitive to other load on the machine).

    python benchmarks/pytest_plugin/suite_cost.py [--tests 1000] [--rounds 5]
        [--no-extensions] [--other-src DIR]

``--other-src DIR`` adds a variant: ``--loopwatch-max-lag=0.1`` with
``PYTHONPATH=DIR``, e.g. a copy of ``src`` from another commit (its built
extensions included), to compare two versions of the plugin in one session.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TEST = '''
@pytest.mark.asyncio
async def test_{n}():
    queue = asyncio.Queue()
    for i in range(20):
        queue.put_nowait(i)
    total = 0
    while not queue.empty():
        total += await queue.get()
    await asyncio.sleep(0)
    assert total == 190
'''


def make_suite(folder: Path, tests: int, per_file: int = 100) -> None:
    (folder / "pytest.ini").write_text(textwrap.dedent("""\
        [pytest]
        asyncio_default_fixture_loop_scope = function
        """))
    for start in range(0, tests, per_file):
        body = "import asyncio\nimport pytest\n" + "".join(
            TEST.format(n=n) for n in range(start, min(tests, start + per_file)))
        (folder / f"test_gen_{start // per_file:03d}.py").write_text(body)


VARIANTS = {
    "inert (baseline)": ([], {}),
    "--loopwatch-max-lag=0.1": (["--loopwatch-max-lag=0.1"], {}),
    "-p no:loopwatch": (["-p", "no:loopwatch"], {}),
    "PYTHONASYNCIODEBUG=1": ([], {"PYTHONASYNCIODEBUG": "1"}),
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(folder: Path, args: list[str], env: dict[str, str],
        base_env: dict[str, str]) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-x", *args]
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env={**base_env, **env}, capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-extensions", action="store_true",
                        help="measure the pure-Python twin (LOOPWATCH_NO_EXTENSIONS=1)")
    parser.add_argument("--other-src", metavar="DIR",
                        help="add --loopwatch-max-lag=0.1 with PYTHONPATH=DIR as a variant")
    opts = parser.parse_args()
    variants = dict(VARIANTS)
    if opts.other_src:
        variants[f"max-lag=0.1 [{Path(opts.other_src).name}]"] = (
            ["--loopwatch-max-lag=0.1"], {"PYTHONPATH": str(Path(opts.other_src).resolve())})
    base_env = dict(os.environ)
    base_env.pop("PYTHONASYNCIODEBUG", None)
    # The warm-up writes the .pyc files (loopwatch's, pytest's rewritten
    # test modules): without them every run would compile them all again,
    # a cost no real suite pays on its second run.
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)
    if opts.no_extensions:
        base_env["LOOPWATCH_NO_EXTENSIONS"] = "1"
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="loopwatch-suite-") as tmp:
        folder = Path(tmp)
        make_suite(folder, opts.tests)
        for name, (args, env) in variants.items():  # warm-up: imports, .pyc files
            run(folder, args, env, base_env)
        for r in range(opts.rounds):
            order = list(variants.items())
            if r % 2:
                order.reverse()
            for name, (args, env) in order:
                wall, cpu = run(folder, args, env, base_env)
                times[name].append(wall)
                cpus[name].append(cpu)
    impl = "pure-Python twin" if opts.no_extensions else "native"
    print(f"\n{opts.tests} pytest-asyncio tests, {opts.rounds} rounds, loopwatch {impl}, "
          f"{os.cpu_count()} CPUs; ratios: median of the per-round ratios to the baseline")
    print(f"{'variant':<28}{'wall s':>9}{'ratio':>8}{'cpu s':>9}{'ratio':>8}   wall per round")
    for name in variants:
        wall_ratio = statistics.median(
            v / b for v, b in zip(times[name], times["inert (baseline)"]))
        cpu_ratio = statistics.median(
            v / b for v, b in zip(cpus[name], cpus["inert (baseline)"]))
        print(f"{name:<28}{statistics.median(times[name]):>9.3f}{wall_ratio:>8.3f}"
              f"{statistics.median(cpus[name]):>9.3f}{cpu_ratio:>8.3f}   "
              + " ".join(f"{v:.2f}" for v in times[name]))

if __name__ == "__main__":
    main()
