"""Chooses between the native extension and the pure-Python twin.

Each public class that has a native core is listed once in ``_TWINS`` with
the module of each implementation. ``LOOPWATCH_NO_EXTENSIONS=1`` (any
non-empty value but ``0``) forces the twins. Otherwise the native modules are
used, and if one cannot be imported the twins take over, all together, with
one RuntimeWarning that says why: never silently. A pure-Python build
(installed with ``LOOPWATCH_NO_EXTENSIONS=1``, or a source tree never built)
has no native module at all: it uses the twins without a warning.

Type checkers see the twins' classes (fully annotated, the same API as the
native ones, whose ``.pyi`` stubs say the same), whichever loads at run time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from types import SimpleNamespace
from typing import TYPE_CHECKING, Literal

NO_EXTENSIONS: bool = os.environ.get("LOOPWATCH_NO_EXTENSIONS", "") not in ("", "0")

# public name -> (native module, pure-Python module), both inside this package
_TWINS: dict[str, tuple[str, str]] = {
    "Histogram": ("hdr.native", "hdr.twin"),
    "TimerWheel": ("sessions.wheel_native", "sessions.wheel_twin"),
    "LoopMonitor": ("loop.native", "loop.twin"),
    "watch": ("loop.native", "loop.twin"),
    "StatusCore": ("status.native", "status.twin"),
    "SessionRegistry": ("sessions.native", "sessions.twin"),
}


def load_implementation(name: str) -> SimpleNamespace:
    """The classes of one implementation, ``"native"`` or ``"python"``.

    Raises ImportError when the native extension cannot be imported; tests
    use this to run every case against both implementations.
    """
    if name not in ("native", "python"):
        raise ValueError(f"implementation must be 'native' or 'python', got {name!r}")
    side = 0 if name == "native" else 1
    classes = {
        public: getattr(importlib.import_module(f"{__package__}.{modules[side]}"), public)
        for public, modules in _TWINS.items()
    }
    return SimpleNamespace(name=name, **classes)


def _built_without_extensions() -> bool:
    """No native module exists at all (no spec to load): a pure-Python build.
    A native module that exists but fails to load is a broken native build."""
    for native, _ in set(_TWINS.values()):
        try:
            if importlib.util.find_spec(f"{__package__}.{native}") is not None:
                return False
        except (ImportError, ValueError):
            continue
    return True


def _choose() -> SimpleNamespace:
    if not NO_EXTENSIONS:
        try:
            return load_implementation("native")
        except ImportError as exc:
            if _built_without_extensions():
                return load_implementation("python")
            warnings.warn(
                f"loopwatch: native extension unavailable ({exc}); using the pure-Python "
                "implementation. Set LOOPWATCH_NO_EXTENSIONS=1 to choose it explicitly.",
                RuntimeWarning,
                stacklevel=3,
            )
    return load_implementation("python")


if TYPE_CHECKING:
    from .hdr.twin import Histogram as Histogram
    from .loop.twin import LoopMonitor as LoopMonitor
    from .loop.twin import watch as watch
    from .sessions.twin import SessionRegistry as SessionRegistry
    from .sessions.wheel_twin import TimerWheel as TimerWheel
    from .status.twin import StatusCore as StatusCore

    IMPLEMENTATION: Literal["native", "python"]
else:
    _chosen = _choose()
    IMPLEMENTATION = _chosen.name
    Histogram = _chosen.Histogram
    TimerWheel = _chosen.TimerWheel
    LoopMonitor = _chosen.LoopMonitor
    watch = _chosen.watch
    StatusCore = _chosen.StatusCore
    SessionRegistry = _chosen.SessionRegistry
