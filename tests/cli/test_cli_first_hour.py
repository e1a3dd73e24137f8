"""The command line as a new user meets it: --version, usage errors on
stderr with status 2, a missing module as one line, and the program's own
tracebacks shown as ``python script.py`` shows them."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from loop_support import impl_env


def _loopwatch(args, cwd, impl_name="native", timeout=60):
    env = dict(os.environ, **impl_env(impl_name))
    return subprocess.run([sys.executable, "-m", "loopwatch", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def _skip_native_if_asked(request, impl_name):
    if impl_name == "native" and request.config.getoption("--no-native"):
        pytest.skip("--no-native given")


@pytest.mark.parametrize("impl_name", ["native", "python"])
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_the_release_and_the_implementation(flag, impl_name, tmp_path, request):
    _skip_native_if_asked(request, impl_name)
    result = _loopwatch([flag], tmp_path, impl_name)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    version = importlib.metadata.version("loopwatch")
    assert result.stdout == f"loopwatch {version} ({impl_name})\n"


def test_bare_command_prints_usage_on_stderr_and_exits_2(tmp_path):
    result = _loopwatch([], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: loopwatch run")
    assert "loopwatch --version" in result.stderr


def test_help_goes_to_stdout_with_status_0(tmp_path):
    result = _loopwatch(["--help"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: loopwatch run") and result.stderr == ""


@pytest.mark.parametrize(
    "module, message",
    [
        ("no_such_module", "No module named no_such_module"),
        ("no_such_package.sub", "No module named no_such_package.sub"),
        ("pkg_without_main", "No module named pkg_without_main.__main__"),
    ],
)
def test_missing_module_is_one_clean_line(module, message, tmp_path):
    (tmp_path / "pkg_without_main").mkdir()
    (tmp_path / "pkg_without_main" / "__init__.py").write_text("")
    result = _loopwatch(["run", "-m", module, "--flag"], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"loopwatch run: error: {message}"
                                          + ("; 'pkg_without_main' is a package and cannot be "
                                             "directly executed" if "__main__" in message else "")]


def test_an_import_error_inside_the_package_is_the_programs_own(tmp_path):
    """A parent package that fails to import is the program's error, with its
    traceback (status 1), not "no module named"."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("import not_installed_dependency\n")
    (tmp_path / "app" / "server.py").write_text("print('unreachable')\n")
    result = _loopwatch(["run", "-m", "app.server"], tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith(f'  File "{tmp_path / "app" / "__init__.py"}", line 1')
    assert "ModuleNotFoundError: No module named 'not_installed_dependency'" in result.stderr


PROGRAM = textwrap.dedent("""\
    import asyncio


    def inner():
        raise ValueError("boom")


    async def main():
        inner()


    asyncio.run(main())
""")


def _traceback_block(stderr):
    lines = stderr.splitlines()
    start = lines.index("Traceback (most recent call last):")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("ValueError"))
    return lines[start:end + 1]


@pytest.mark.parametrize("how", ["script", "module"])
def test_programs_traceback_is_what_python_shows(how, tmp_path):
    (tmp_path / "app.py").write_text(PROGRAM)
    expected = subprocess.run([sys.executable, "app.py"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
    args = ["run", "app.py"] if how == "script" else ["run", "-m", "app"]
    result = _loopwatch(args, tmp_path)
    assert result.returncode == 1
    ours = _traceback_block(result.stderr)
    assert ours == _traceback_block(expected.stderr)
    assert ours[1] == f'  File "{tmp_path / "app.py"}", line 12, in <module>'
    assert not any("runpy" in line or "loopwatch" in line for line in ours)
    assert "]: summary of 1 event loop" in result.stderr  # the summary still follows


def test_keyboard_interrupt_traceback_is_trimmed_too(tmp_path):
    (tmp_path / "stop.py").write_text("raise KeyboardInterrupt\n")
    result = _loopwatch(["run", "stop.py"], tmp_path)
    # as under python: the interpreter ends by SIGINT after its cleanup
    plain = subprocess.run([sys.executable, "stop.py"], capture_output=True, cwd=tmp_path,
                           timeout=60)
    assert result.returncode == plain.returncode == -signal.SIGINT
    lines = result.stderr.splitlines()
    assert lines[:4] == ["Traceback (most recent call last):",
                         f'  File "{tmp_path / "stop.py"}", line 1, in <module>',
                         "    raise KeyboardInterrupt", "KeyboardInterrupt"]
