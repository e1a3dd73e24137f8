"""Whose code blocked the loop, and the failure message that says so.

A stall's stack runs from pytest's frames through pluggy's, the test
runner's (pytest-asyncio, anyio) and asyncio's down to the frame that was
running when the stack was taken. The frame to blame is the innermost one
of the project's own code: not the standard library's, not an installed
package's (site-packages), not loopwatch's, pytest's or pluggy's.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
from typing import Any, Iterable, Sequence

__all__ = ["FrameJudge", "format_failure", "where"]

MAX_LISTED = 5
PHASE_WORDS = {
    "setup": "setup (fixtures)",
    "call": "the test",
    "teardown": "teardown (fixtures)",
}


def _module_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else None


class FrameJudge:
    """Tells the project's frames from everyone else's."""

    def __init__(self, rootpath: str | os.PathLike[str] | None = None) -> None:
        excluded = set()
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            path = sysconfig.get_paths().get(key)
            if path:
                excluded.add(os.path.abspath(path))
        for name in ("loopwatch", "_pytest", "pytest", "pluggy", "asyncio", "anyio",
                     "pytest_asyncio", "uvloop", "xdist", "execnet"):
            path = _module_dir(name)
            if path:
                excluded.add(path)
        # the stdlib dir contains site-packages of some layouts: keep both,
        # a prefix match excludes either
        self._excluded = tuple(sorted(p.rstrip(os.sep) + os.sep for p in excluded))
        self._root = os.path.abspath(rootpath) + os.sep if rootpath else None
        self._cache: dict[str, bool] = {}

    def is_project(self, filename: str) -> bool:
        known = self._cache.get(filename)
        if known is not None:
            return known
        if filename.startswith("<"):
            answer = False
        else:
            path = os.path.abspath(filename)
            parts = path.split(os.sep)
            answer = not ("site-packages" in parts or "dist-packages" in parts
                          or path.startswith(self._excluded))
        self._cache[filename] = answer
        return answer

    def blamed_index(self, stack: Sequence[Any]) -> int | None:
        """The index of the innermost project frame of `stack` (outermost
        first), or None when there is none."""
        for i in range(len(stack) - 1, -1, -1):
            if self.is_project(stack[i].filename):
                return i
        return None

    def short(self, filename: str) -> str:
        path = os.path.abspath(filename)
        if self._root and path.startswith(self._root):
            return path[len(self._root):]
        try:
            rel = os.path.relpath(path)
        except ValueError:
            return path
        return path if rel.startswith(".." + os.sep + "..") else rel


def where(judge: FrameJudge, stack: Sequence[Any] | None) -> str:
    """One line: the blamed frame, e.g. ``parse() at tests/test_x.py:12``
    (the innermost frame when no project frame is in the stack)."""
    if not stack:
        return "(stack not captured)"
    index = judge.blamed_index(stack)
    frame = stack[index if index is not None else -1]
    return f"{frame.function}() at {judge.short(frame.filename)}:{frame.lineno}"


def _source(frame: Any) -> str:
    return linecache.getline(frame.filename, frame.lineno).strip()


def _stack_lines(judge: FrameJudge, stack: Sequence[Any]) -> list[str]:
    blamed = judge.blamed_index(stack)
    if blamed is None:
        # nothing of the project's: show the innermost frames as they are
        shown = range(max(0, len(stack) - 3), len(stack))
        lines = [f"    ({len(stack) - len(shown)} outer frames not shown; none is the project's)"]
    else:
        first = next(i for i in range(len(stack)) if judge.is_project(stack[i].filename))
        shown = range(first, len(stack))
        lines = []
        if first:
            lines.append(f"    ({first} outer frames of pytest, pluggy and the loop not shown)")
    for i in shown:
        frame = stack[i]
        mine = judge.is_project(frame.filename)
        if not mine and blamed is not None and i < blamed:
            continue  # a library frame between two of the project's
        mark = ">" if i == blamed else " "
        lines.append(f"{mark}   {judge.short(frame.filename)}:{frame.lineno}: in {frame.function}")
        text = _source(frame)
        if text and (mine or i == len(stack) - 1):
            lines.append(f"        {text}")
    return lines


def format_failure(judge: FrameJudge, phase: str, limit: float, limit_source: str,
                   stalls: Iterable[Any], phase_start: float) -> str:
    """The message of a test (or fixture) that blocked its loop longer than
    its limit: each stall over it (MAX_LISTED at most) with its stack, the
    project's innermost frame marked with ``>``."""
    over = list(stalls)
    worst = max(over, key=lambda s: s.duration)
    place = (f"in {where(judge, worst.stack)}" if worst.stack
             else "(where: unknown, stack not captured)")
    headline = (f"event loop blocked for {worst.duration:.3f} s {place} "
                f"during {PHASE_WORDS[phase]}, over the limit of {limit:.3f} s ({limit_source})")
    if len(over) > 1:
        headline += f"; {len(over)} stalls over the limit"
    lines = [headline]
    for n, stall in enumerate(over[:MAX_LISTED], 1):
        state = "" if stall.ended else ", still going on at the end of the phase"
        lines.append("")
        lines.append(f"stall {n}: blocked {stall.duration:.3f} s{state}, from "
                     f"{max(0.0, stall.started_at - phase_start):.3f} s into {phase}"
                     f" ({stall.loop_name})")
        if stall.stack:
            lines.extend(_stack_lines(judge, stall.stack))
            lines.append(f"E   blocked in {where(judge, stall.stack)}")
        else:
            lines.append(f"E   {stall.stack_error or 'stack not captured'}")
    if len(over) > MAX_LISTED:
        rest = over[MAX_LISTED:]
        lines.append("")
        lines.append(f"... and {len(rest)} more stalls over the limit (longest "
                     f"{max(s.duration for s in rest):.3f} s)")
    return "\n".join(lines)
