"""The typing stage of .ci/run: loopwatch's own code and a user's script
type-check under ``mypy --strict``; bad_usage.py's marked mistakes are each
rejected with one error on their line, and nothing else is reported; the same
two scripts under pyright when it runs here, with --verifytypes' score.

    python tests/typing/check.py [--no-pyright]

Run from anywhere with the python whose site-packages hold loopwatch (and
mypy, pyright): the scripts are checked against the installed package, as a
user's would be. Exit status 0 when every check passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GOOD = os.path.join(HERE, "good_usage.py")
BAD = os.path.join(HERE, "bad_usage.py")


def marked_lines(path: str) -> set[int]:
    with open(path) as f:
        return {n for n, line in enumerate(f, 1) if line.rstrip().endswith("# error")}


def run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(cmd), flush=True)
    # As if this python's venv were activated (pyright's --verifytypes
    # finds the package only so).
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def compare(tool: str, errors: list[int], expected: set[int]) -> bool:
    counts: dict[int, int] = {}
    for line in errors:
        counts[line] = counts.get(line, 0) + 1
    ok = True
    missed = sorted(expected - counts.keys())
    extra = sorted(counts.keys() - expected)
    multiple = sorted(line for line, n in counts.items() if n > 1 and line in expected)
    if missed:
        print(f"{tool}: marked lines NOT rejected: {missed}")
        ok = False
    if extra:
        print(f"{tool}: unexpected errors on lines {extra}")
        ok = False
    if multiple:
        print(f"{tool}: more than one error on lines {multiple}")
        ok = False
    print(f"{tool}: bad_usage.py: {len(errors)} errors on {len(counts)} lines, "
          f"{len(expected)} marked: {'OK' if ok else 'FAIL'}")
    return ok


def mypy() -> bool:
    ok = True
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    # The package itself, from the source tree (its own module paths).
    result = run(cmd + [os.path.join(ROOT, "src", "loopwatch")], cwd=ROOT)
    print(result.stdout, end="")
    ok &= result.returncode == 0
    # A user's scripts, against the installed package (run outside the tree).
    result = run(cmd + [GOOD], cwd=HERE)
    print(result.stdout, end="")
    ok &= result.returncode == 0
    result = run(cmd + ["--hide-error-context", "--no-error-summary", BAD], cwd=HERE)
    errors = [int(m.group(1)) for m in re.finditer(r"^.*bad_usage\.py:(\d+): error:",
                                                   result.stdout, re.M)]
    if not compare("mypy", errors, marked_lines(BAD)):
        print(result.stdout, end="")
        ok = False
    return ok


def pyright() -> bool | None:
    exe = shutil.which("pyright", path=os.path.dirname(sys.executable)) or shutil.which("pyright")
    if exe is None:
        print("pyright: not installed here; skipped (mypy only)")
        return None
    env_python = ["--pythonpath", sys.executable]
    result = run([exe, *env_python, "--outputjson", GOOD, BAD], cwd=HERE)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        print(f"pyright: did not run here ({result.stdout[-300:]}{result.stderr[-300:]}); "
              "skipped (mypy only)")
        return None
    ok = True
    diags = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    good = [d for d in diags if d["file"].endswith("good_usage.py")]
    for d in good:
        print(f"pyright: good_usage.py:{d['range']['start']['line'] + 1}: {d['message']}")
    print(f"pyright: good_usage.py: {len(good)} errors: {'OK' if not good else 'FAIL'}")
    ok &= not good
    errors = [d["range"]["start"]["line"] + 1 for d in diags if d["file"].endswith("bad_usage.py")]
    if not compare("pyright", errors, marked_lines(BAD)):
        for d in diags:
            if d["file"].endswith("bad_usage.py"):
                print(f"  line {d['range']['start']['line'] + 1}: {d['message']}")
        ok = False
    result = run([exe, *env_python, "--verifytypes", "loopwatch", "--ignoreexternal",
                  "--outputjson"], cwd=HERE)
    try:
        completeness = json.loads(result.stdout)["typeCompleteness"]
        counts = completeness["exportedSymbolCounts"]
        total = sum(counts.values())
        if total:
            print(f"pyright --verifytypes loopwatch: {completeness['completenessScore'] * 100:.1f}% "
                  f"of {total} exported symbols have a known type "
                  f"({counts['withAmbiguousType']} ambiguous, {counts['withUnknownType']} unknown;"
                  " reported, not enforced)")
        else:
            print("pyright --verifytypes: the installed package was not found "
                  "(an editable install?); no score")
    except (ValueError, KeyError) as exc:
        print(f"pyright --verifytypes: no score ({exc})")
    return ok


def main() -> int:
    ok = mypy()
    if "--no-pyright" not in sys.argv[1:]:
        ok &= pyright() is not False
    print("typing:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
