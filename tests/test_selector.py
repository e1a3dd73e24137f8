"""Choice of implementation: the switch, and the loud fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "LOOPWATCH_NO_EXTENSIONS"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-W", "always::RuntimeWarning", "-c", code],
                          capture_output=True, text=True, env=full_env, timeout=60)


def test_switch_forces_the_pure_python_twin():
    run = _run("import loopwatch; print(loopwatch.IMPLEMENTATION, loopwatch.Histogram.__module__)",
               LOOPWATCH_NO_EXTENSIONS="1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["python", "loopwatch._histogram_py"]
    assert "RuntimeWarning" not in run.stderr


def test_zero_does_not_switch(request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    run = _run("import loopwatch; print(loopwatch.IMPLEMENTATION)", LOOPWATCH_NO_EXTENSIONS="0")
    assert run.stdout.split() == ["native"], run.stderr


def test_broken_extension_falls_back_with_one_warning():
    # A None entry in sys.modules makes the import fail, as a missing or
    # unloadable .so would.
    code = (
        "import sys, warnings\n"
        "sys.modules['loopwatch._histogram_c'] = None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import loopwatch, importlib\n"
        "    import loopwatch._selector\n"
        "print(loopwatch.IMPLEMENTATION)\n"
        "print(sum('native extension unavailable' in str(w.message) for w in caught))\n"
    )
    run = _run(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["python", "1"]


def test_load_implementation_rejects_unknown_names():
    from loopwatch._selector import load_implementation

    with pytest.raises(ValueError, match="'native' or 'python'"):
        load_implementation("rust")


def test_both_implementations_expose_the_same_api(request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    from loopwatch._selector import _TWINS, load_implementation

    native, python = load_implementation("native"), load_implementation("python")
    for name in _TWINS:
        ours, twin = getattr(native, name), getattr(python, name)
        if isinstance(twin, type):
            public = lambda cls: {a for a in dir(cls) if not a.startswith("_")}  # noqa: E731
            assert public(ours) == public(twin), name
        else:  # a function: Cython's and Python's differ in attributes, not in use
            assert callable(ours) and callable(twin), name
