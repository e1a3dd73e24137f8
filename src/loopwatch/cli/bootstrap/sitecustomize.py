"""loopwatch run's bootstrap: ``loopwatch run`` puts this folder first on
PYTHONPATH, so every Python process it starts (multiprocessing spawn and
forkserver, subprocess, uvicorn workers, ...) imports this module at
startup (``site`` does, unless Python runs with -S, -I or -E).

With LOOPWATCH_RUN=1 it watches the process (loopwatch.cli.process,
options in LOOPWATCH_RUN_OPTIONS), then runs the next ``sitecustomize`` on
sys.path, if there is one, as coverage's and tracing agents' bootstraps do.
An interpreter without loopwatch (another virtualenv, say) is left alone.
"""

import os
import sys


def _watch() -> None:
    if os.environ.get("LOOPWATCH_RUN") != "1":
        return
    try:
        from loopwatch.cli.process import start_from_environment
    except ImportError:  # another interpreter, without loopwatch: not ours to watch
        return
    try:
        start_from_environment()
    except Exception as exc:  # never keep the program from starting
        sys.stderr.write("loopwatch[pid %d]: not watching this process: %s: %s\n"
                         % (os.getpid(), type(exc).__name__, exc))


def _chain() -> None:
    """Run the sitecustomize this one hides, if any."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path
            if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    _watch()  # first: the loop hook must come before anything imports uvloop
finally:
    _chain()
