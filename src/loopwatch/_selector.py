"""Chooses between the native extension and the pure-Python twin.

Each public class that has a native core is listed once in ``_TWINS`` with
the module of each implementation. ``LOOPWATCH_NO_EXTENSIONS=1`` (any
non-empty value but ``0``) forces the twins. Otherwise the native modules are
used, and if one cannot be imported the twins take over, all together, with
one RuntimeWarning that says why: never silently.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import SimpleNamespace

NO_EXTENSIONS: bool = os.environ.get("LOOPWATCH_NO_EXTENSIONS", "") not in ("", "0")

# public name -> (native module, pure-Python module), both inside this package
_TWINS: dict[str, tuple[str, str]] = {
    "Histogram": ("hdr.native", "hdr.twin"),
    "TimerWheel": ("sessions.wheel_native", "sessions.wheel_twin"),
    "LoopMonitor": ("loop.native", "loop.twin"),
    "watch": ("loop.native", "loop.twin"),
    "StatusCore": ("status.native", "status.twin"),
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


def _choose() -> SimpleNamespace:
    if not NO_EXTENSIONS:
        try:
            return load_implementation("native")
        except ImportError as exc:
            warnings.warn(
                f"loopwatch: native extension unavailable ({exc}); using the pure-Python "
                "implementation. Set LOOPWATCH_NO_EXTENSIONS=1 to choose it explicitly.",
                RuntimeWarning,
                stacklevel=3,
            )
    return load_implementation("python")


_chosen = _choose()
IMPLEMENTATION: str = _chosen.name
Histogram = _chosen.Histogram
TimerWheel = _chosen.TimerWheel
LoopMonitor = _chosen.LoopMonitor
watch = _chosen.watch
StatusCore = _chosen.StatusCore
