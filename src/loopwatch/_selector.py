"""Chooses between the native extension and the pure-Python twin.

``LOOPWATCH_NO_EXTENSIONS=1`` (any non-empty value but ``0``) forces the
twin. Otherwise the native modules are used, and if they cannot be imported
the twin takes over with one RuntimeWarning that says why: never silently.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("LOOPWATCH_NO_EXTENSIONS", "") not in ("", "0")


def _load() -> tuple[str, ModuleType]:
    if not NO_EXTENSIONS:
        try:
            from . import _histogram_c

            return "native", _histogram_c
        except ImportError as exc:
            warnings.warn(
                f"loopwatch: native extension unavailable ({exc}); using the pure-Python "
                "implementation. Set LOOPWATCH_NO_EXTENSIONS=1 to choose it explicitly.",
                RuntimeWarning,
                stacklevel=3,
            )
    from . import _histogram_py

    return "python", _histogram_py


IMPLEMENTATION, _histogram = _load()
Histogram = _histogram.Histogram
