"""The ``loopwatch`` command.

    loopwatch run [--resolution S] [--stall-threshold S] [--no-stack] [--no-status]
                  [--summary-file PATH] [--prometheus-port N [--prometheus-host H]]
                  [--hlog PATH [--hlog-interval S]] script.py [args ...]
    loopwatch run [options] -m module [args ...]
    loopwatch status [--timeout S] [--json] [PID]
    loopwatch demo [--fast] [--json]
    loopwatch --version

runs an asyncio program (asyncio or uvloop) with a loop monitor on every
event loop it runs, without changing its code: stalls are reported live on
stderr, naming the blocking function, and a summary of each loop (lag and
delay percentiles, stalls, utilization, CPU, a terminal histogram of lag)
is printed on stderr when the program ends. The program's exit status is
loopwatch's (a program killed by a signal dies of it). Every Python
process of the program is watched the same way (forked, spawned, started
with ``subprocess``: see :mod:`loopwatch.cli.process`), each printing its
own summary. Also ``python -m loopwatch run ...`` (:mod:`loopwatch.__main__`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import runpy
import sys
import traceback
from typing import Any, Sequence

USAGE = """\
usage: loopwatch run [--resolution S] [--stall-threshold S] [--no-stack] [--no-status]
                     [--summary-file PATH] [--prometheus-port N [--prometheus-host H]]
                     [--hlog PATH [--hlog-interval S]] script.py [args ...]
       loopwatch run [options] -m module [args ...]
       loopwatch status [--timeout S] [--json] [PID]
       loopwatch demo [--fast] [--json]
       loopwatch --version

run: run an asyncio program with a monitor on every event loop it runs:
stalls are reported on stderr while they happen, a summary of each loop is
printed at exit, and `loopwatch status PID` answers while it runs. Child
Python processes (fork, multiprocessing, subprocess, uvicorn and gunicorn
workers) are watched too, each printing its own summary.
status: ask watched processes how they are (see `loopwatch status --help`).
demo: replay the seed report's failure against a real gateway and show
loopwatch catch it (about a minute).

run options:
  --resolution S       seconds between heartbeats and lag samples (default 0.01)
  --stall-threshold S  lag in seconds that counts as a stall (default 0.1)
  --no-stack           do not take the loop thread's stack for stall reports
  --no-status          do not serve the status socket
  --summary-file PATH  write each process's summary to PATH ({pid}: the process id)
                       instead of stderr (appended)
  --prometheus-port N  serve Prometheus metrics at http://H:N/metrics (0: a free port,
                       printed on stderr); needs prometheus_client
  --prometheus-host H  the address to serve them on (default 127.0.0.1, loopback only)
  --hlog PATH          write each loop's lag to an HdrHistogram interval log (.hlog),
                       one line per loop (Tag=loop1, ...) per interval
  --hlog-interval S    seconds between interval log lines (default 1)
  -m module            run a module as a script, like python -m
  -h, --help           show this help
"""


class UsageError(Exception):
    pass


def _seconds(option: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{option} expects a number of seconds, got {value!r}") from None


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise UsageError(f"--prometheus-port expects a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--prometheus-port must be in 0..65535, got {port}")
    return port


def _export_option(name: str, value: str) -> str | float | int:
    """The value of an exporter option (--prometheus-*, --hlog*)."""
    if name == "--prometheus-port":
        return _port(value)
    if name == "--hlog-interval":
        seconds = _seconds(name, value)
        if not (0.001 <= seconds <= 86400.0):  # also refuses NaN
            raise UsageError(f"--hlog-interval must be between 0.001 and 86400 seconds, "
                             f"got {value!r}")
        return seconds
    if name == "--summary-file" and value:
        return os.path.abspath(value)  # children may change directory
    if not value:
        raise UsageError(f"{name} expects a non-empty value")
    return value


_EXPORT_OPTIONS = ("--prometheus-port", "--prometheus-host", "--hlog", "--hlog-interval",
                   "--summary-file")


def parse_run_args(args: Sequence[str]) -> dict[str, Any]:
    """Options of ``loopwatch run``, then the program and its arguments.
    Everything after the script (or -m module) belongs to the program."""
    options = {"resolution": 0.01, "stall_threshold": 0.1, "capture_stack": True,
               "status": True, "prometheus_port": None, "prometheus_host": "127.0.0.1",
               "hlog": None, "hlog_interval": 1.0, "summary_file": None}
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            raise SystemExit(print(USAGE, end="") or 0)
        if name in ("--resolution", "--stall-threshold"):
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise UsageError(f"{name} expects a number of seconds")
            options[name[2:].replace("-", "_")] = _seconds(name, value)
        elif name in _EXPORT_OPTIONS:
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise UsageError(f"{name} expects a value")
            options[name[2:].replace("-", "_")] = _export_option(name, value)
        elif arg == "--no-stack":
            options["capture_stack"] = False
        elif arg == "--no-status":
            options["status"] = False
        elif arg == "-m":
            if i + 1 >= len(args):
                raise UsageError("-m expects a module name")
            return {**options, "module": args[i + 1], "script": None, "args": args[i + 2:]}
        elif arg == "--":
            if i + 1 >= len(args):
                raise UsageError("no script given")
            return {**options, "module": None, "script": args[i + 1], "args": args[i + 2:]}
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}")
        else:
            return {**options, "module": None, "script": arg, "args": args[i + 1:]}
        i += 1
    raise UsageError("no script or -m module given")


def run(argv: Sequence[str]) -> int:
    """``loopwatch run``; returns the exit status."""
    try:
        parsed = parse_run_args(argv)
        import loopwatch
        from loopwatch.loop.monitor import validate_options

        validate_options(parsed["resolution"], parsed["stall_threshold"], None,
                         parsed["capture_stack"])
    except (UsageError, ValueError, TypeError) as exc:
        print(f"loopwatch run: error: {exc}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    script, module = parsed["script"], parsed["module"]
    if script is not None and not os.path.exists(script):
        print(f"loopwatch run: error: {script}: no such file", file=sys.stderr)
        return 2

    from loopwatch.cli import process

    server = None
    if parsed["status"]:
        from loopwatch.status import server as status_server
        from loopwatch.status.paths import StatusFolderError

        try:
            server = status_server.acquire(stall_lines=True)
        except (StatusFolderError, OSError) as exc:
            print(f"loopwatch run: status not served: {exc}", file=sys.stderr)

    from loopwatch.export.runner import Exporters

    exporters = Exporters(parsed["prometheus_port"], parsed["prometheus_host"],
                          parsed["hlog"], parsed["hlog_interval"])
    try:
        exporters.start()
    except Exception as exc:  # a missing prometheus_client, an address or path refused
        print(f"loopwatch run: error: {exc}", file=sys.stderr)
        if server is not None:
            status_server.release(server)
        return 2

    def on_watch(name: str, monitor: Any) -> None:
        if os.getpid() != top_pid:  # a forked child: the exporters are the top's
            return
        exporters.add_monitor(monitor)

    def release_services() -> None:
        if os.getpid() != top_pid:
            return
        exporters.stop()
        if server is not None:
            from loopwatch.status import server as status_server

            status_server.release(server)

    top_pid = os.getpid()
    options = {key: parsed[key] for key in ("resolution", "stall_threshold", "capture_stack",
                                            "summary_file", "status")}
    # A refused status (said above) is not tried again, here or in children.
    options["status"] = server is not None
    watch = process.ProcessWatch(options, on_watch, top=True, status_server=server).start()
    watch.before_abrupt_exit.append(release_services)
    watcher = watch.watcher
    # Every Python process the program starts is watched the same way.
    os.environ.update(process.child_environment(options))
    status = 0
    not_found = False
    interrupted: KeyboardInterrupt | None = None
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    try:
        if module is not None:
            sys.argv = [module, *parsed["args"]]
            sys.path.insert(0, os.getcwd())
            _find_module(module)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [script, *parsed["args"]]
            sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
            runpy.run_path(os.path.abspath(script), run_name="__main__")
    except _ModuleNotFound as exc:
        print(f"loopwatch run: error: {exc}", file=sys.stderr)
        status, not_found = 2, True
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except KeyboardInterrupt as exc:
        _print_program_traceback(exc)
        status, interrupted = 130, exc
    except BaseException as exc:
        _print_program_traceback(exc)
        status = 1
    finally:
        watcher.uninstall()
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path and sys.path[0] != saved_path0:
            sys.path.pop(0)
    if os.getpid() == top_pid:
        exporters.stop()
    if not_found:
        watch.disable()
    else:
        watch.print_summaries("interrupted" if interrupted is not None else None)
    watch.before_abrupt_exit.clear()
    if server is not None and os.getpid() == top_pid:
        from loopwatch.status import server as status_server

        status_server.release(server)
    watcher.stop_all()
    if interrupted is not None:
        _end_like_keyboard_interrupt()
    return status


def _end_like_keyboard_interrupt() -> None:
    """End as Python ends a program that does not catch KeyboardInterrupt:
    the interpreter sees it escape the main module and, after its cleanup,
    kills itself with SIGINT (the traceback is already shown, trimmed)."""
    quiet = KeyboardInterrupt()
    previous = sys.excepthook

    def hook(kind: Any, value: Any, tb: Any) -> None:
        if value is not quiet:
            previous(kind, value, tb)

    sys.excepthook = hook
    raise quiet


class _ModuleNotFound(Exception):
    pass


def _find_module(module: str) -> None:
    """Raises _ModuleNotFound, before any of the program runs, when
    ``python -m module`` would say "No module named ..." (its parent
    packages are imported, as runpy does; their own errors propagate)."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            main = f"{module}.__main__"
            if importlib.util.find_spec(main) is None:
                raise _ModuleNotFound(f"No module named {main}; {module!r} is a package "
                                      "and cannot be directly executed")
    except ModuleNotFoundError as exc:
        # Only a missing parent of the module itself, not an import inside it.
        if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
            raise
        spec = None
    except ValueError as exc:  # an empty or relative name
        raise _ModuleNotFound(f"{exc}: {module!r}") from None
    if spec is None:
        raise _ModuleNotFound(f"No module named {module}")


# Frames of loopwatch's own launch (this module, runpy, the import system
# looking the module up): a program's traceback starts after them, as
# `python script.py` shows it.
_LAUNCH_FILES = (os.path.normcase(os.path.abspath(__file__)), os.path.normcase(runpy.__file__))


def _print_program_traceback(exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (os.path.normcase(filename) in _LAUNCH_FILES
                or filename in ("<frozen runpy>", "<frozen importlib.util>")
                or filename.startswith("<frozen importlib")
                or os.path.normcase(filename) == os.path.normcase(importlib.util.__file__)):
            break
        tb = tb.tb_next
    if tb is not None:  # the hook prints the exception's own traceback
        exc.__traceback__ = tb
    sys.excepthook(type(exc), exc, exc.__traceback__)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loopwatch`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, end="", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if argv[0] in ("-V", "--version"):
        import loopwatch

        print(f"loopwatch {loopwatch.__version__} ({loopwatch.IMPLEMENTATION})")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run(rest)
    if command == "status":
        from loopwatch.cli.status import main as status_main

        return status_main(rest)
    if command == "demo":
        from loopwatch.cli.demo import main as demo_main

        return demo_main(rest)
    print(f"loopwatch: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
