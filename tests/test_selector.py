"""Choice of implementation: the switch, and the loud fallback."""

from __future__ import annotations

import ast
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
    assert run.stdout.split() == ["python", "loopwatch.hdr.twin"]
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
        "sys.modules['loopwatch.hdr.native'] = None\n"
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


PUBLIC_API = [
    "Diagnostics", "IMPLEMENTATION", "Histogram", "HistogramLogReader", "HistogramLogWriter",
    "LatencyStats", "LivenessReport",
    "LivenessThresholds", "LoopMonitor", "LoopStats", "LoopWindow", "RegistryFull",
    "SessionEvent", "SessionRegistry", "SessionScope", "SessionView", "StackFrame", "StallEvent",
    "StatusFolderError", "StatusUnavailable", "TimerWheel", "__version__", "query_status",
    "status_socket_path", "watch",
]


@pytest.mark.parametrize("switch", ["0", "1"])
def test_public_api_is_pinned_and_resolves_in_both_implementations(switch, request):
    """``loopwatch.X`` is the API, whatever the layout underneath: the same
    names, each resolving, with either implementation chosen."""
    if switch == "0" and request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    code = (
        "import loopwatch\n"
        "print(sorted(loopwatch.__all__))\n"
        "for name in loopwatch.__all__:\n"
        "    obj = getattr(loopwatch, name)\n"
        "    assert obj is not None, name\n"
        "print(loopwatch.IMPLEMENTATION)\n"
    )
    run = _run(code, LOOPWATCH_NO_EXTENSIONS=switch)
    assert run.returncode == 0, run.stderr
    names, implementation = run.stdout.splitlines()
    assert names == repr(sorted(PUBLIC_API))
    assert implementation == ("python" if switch == "1" else "native")


from loopwatch._selector import _TWINS as _ALL_TWINS  # noqa: E402

NATIVE_MODULES = sorted({native for native, _ in _ALL_TWINS.values()})


def test_pure_build_has_no_native_module_and_no_warning():
    """A package built with LOOPWATCH_NO_EXTENSIONS=1 has no native module at
    all (no spec to find): it knows it is a pure build and stays quiet."""
    code = (
        "import sys, warnings\n"
        f"for name in {NATIVE_MODULES!r}:\n"
        "    sys.modules['loopwatch.' + name] = None  # no spec: find_spec answers None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import loopwatch\n"
        "print(loopwatch.IMPLEMENTATION, len(caught))\n"
    )
    run = _run(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["python", "0"]
    assert run.stderr == ""


def test_native_build_whose_extension_fails_to_load_still_warns():
    """The extension is there (a spec) but cannot load, as an .so with an
    unresolved symbol: one RuntimeWarning, naming the cause."""
    code = (
        "import importlib.abc, importlib.util, sys, warnings\n"
        "class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'loopwatch.loop.native':\n"
        "            return importlib.util.spec_from_loader(name, self)\n"
        "    def create_module(self, spec):\n"
        "        raise ImportError('undefined symbol: lw_loop_new (simulated)')\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "sys.meta_path.insert(0, Broken())\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import loopwatch\n"
        "print(loopwatch.IMPLEMENTATION)\n"
        "print([str(w.message) for w in caught if w.category is RuntimeWarning])\n"
    )
    run = _run(code)
    assert run.returncode == 0, run.stderr
    implementation, messages = run.stdout.splitlines()
    assert implementation == "python"
    messages = ast.literal_eval(messages)
    assert len(messages) == 1 and "undefined symbol: lw_loop_new" in messages[0]
