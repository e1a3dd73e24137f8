"""``loopwatch status``: ask watched processes how they are, even while
their event loop is blocked.

    loopwatch status [--timeout S] [--json]          every watched process of this user
    loopwatch status PID [--timeout S] [--json]      one process, as a readable table
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence, TextIO

from ..status.client import StatusUnavailable, query_status
from ..status.document import printable
from ..status.paths import StatusFolderError, remove_stale_sockets, watched_pids

__all__ = ["format_process", "main"]

USAGE = """\
usage: loopwatch status [--timeout S] [--json] [PID]

Without PID: one line for every process of this user that serves loopwatch
status (pid, command, lag p99, stall now?, stuck sessions). With PID: that
process in full. The answer comes from a thread of the process that does
not need its event loop, so it comes while the loop is blocked.

options:
  --timeout S   give up on a process after S seconds (default 2)
  --json        print the JSON document(s) instead
"""


class UsageError(Exception):
    pass


def _parse(argv: Sequence[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"timeout": 2.0, "json": False, "pid": None}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            raise SystemExit(print(USAGE, end="") or 0)
        if name == "--timeout":
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise UsageError("--timeout expects a number of seconds")
            try:
                opts["timeout"] = float(value)
            except ValueError:
                raise UsageError(f"--timeout expects a number of seconds, got {value!r}") from None
            if not opts["timeout"] > 0 or opts["timeout"] == float("inf"):
                raise UsageError(f"--timeout must be a positive number of seconds, got {value}")
        elif arg == "--json":
            opts["json"] = True
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        elif opts["pid"] is None:
            if not arg.isdigit() or int(arg) <= 0:
                raise UsageError(f"PID must be a positive integer, got {arg!r}")
            opts["pid"] = int(arg)
        else:
            raise UsageError(f"unexpected argument {arg!r}")
        i += 1
    return opts


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _live_loops(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {entry["id"]: entry for entry in doc.get("live", {}).get("loops", [])}


def live_sessions(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The registries as the native status thread read them from their
    tables just now (served when no Python code could run), merged like
    the published ``sessions`` entry; None when the document has none."""
    tables = [entry.get("table") for entry in doc.get("live", {}).get("sessions", [])]
    tables = [t for t in tables if isinstance(t, dict) and "counts" in t]
    if not tables:
        return None
    counts: dict[str, int] = {}
    stuck: list[dict[str, Any]] = []
    for table in tables:
        for state, n in table["counts"].items():
            counts[state] = counts.get(state, 0) + n
        stuck += table["stuck"]
    stuck.sort(key=lambda s: -s["since_progress_s"])
    return {"total": sum(t["total"] for t in tables), "counts": counts,
            "queued": sum(t.get("queued", 0) for t in tables),
            "stuck_count": sum(t["stuck_count"] for t in tables), "stuck": stuck, "live": True}


def _stalled_now(doc: dict[str, Any]) -> tuple[bool, float]:
    """Whether any loop is stalled now (live figures first), and the
    longest stall going on so far."""
    longest, stalled = 0.0, False
    for entry in doc.get("live", {}).get("loops", []):
        if entry.get("stalled"):
            stalled = True
            longest = max(longest, entry.get("stall_so_far_s") or 0.0)
    if not doc.get("live", {}).get("loops"):
        for loop in doc.get("loops", []):
            current = loop.get("current_stall")
            if current:
                stalled = True
                longest = max(longest, current.get("so_far_s") or 0.0)
    return stalled, longest


def _command(doc: dict[str, Any], width: int = 40) -> str:
    argv = [printable(a) for a in doc.get("argv", [])]
    if argv and width < 60:  # the list: the program's name, not its folder
        argv[0] = argv[0].rsplit("/", 1)[-1]
    text = " ".join(argv)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_process(doc: dict[str, Any], answered_in: float | None = None) -> str:
    """One process's document as a readable report."""
    lines = []
    uptime = doc.get("uptime_s")
    head = f"process {doc.get('pid')}: {_command(doc, 70)}"
    lines.append(head)
    age = doc.get("published_age_s")
    detail = [f"up {uptime:.0f} s" if isinstance(uptime, (int, float)) else "up ?",
              f"loopwatch {doc.get('implementation', '?')}",
              f"answered by the {doc.get('served_by', '?')} status thread"]
    if answered_in is not None:
        detail.append(f"in {answered_in * 1000:.0f} ms")
    if not doc.get("live", {}).get("python_answered", True):
        detail.append(f"Python part {age:.2f} s old: no Python code could run"
                      if isinstance(age, (int, float)) else "no Python part yet")
    lines.append("  " + ", ".join(detail))
    live = _live_loops(doc)
    loops = doc.get("loops", [])
    if not loops and not live:
        lines.append("  no loop watched")
    for loop in loops:
        iv, tot = loop["interval"], loop["total"]
        lines.append("")
        name = printable(loop.get("name"))
        where = f"{loop.get('loop_class')}, thread {printable(loop.get('thread'))}"
        lines.append(f"  loop {loop['id']}: {name}" + ("" if str(loop.get("loop_class")).split(".")[-1]
                                                        in name else f" ({where})"))
        lines.append("                  lag p50      p99      max   util   cpu  stalls  longest")
        for label, w in ((f"  last {iv['duration_s']:.0f} s", iv), ("  total", tot)):
            lag = w["lag_ms"]
            cpu = "-" if w["cpu_core_ratio"] is None else format(w["cpu_core_ratio"], ".2f")
            lines.append(f"  {label:<14}{_ms(lag['p50']):>9} {_ms(lag['p99']):>8} "
                         f"{_ms(lag['max']):>8} {_pct(w['utilization']):>6} {cpu:>5} "
                         f"{w['stall_count']:>7}  {w['longest_stall_s']:.2f} s")
        now = live.get(loop["id"], {})
        current = loop.get("current_stall")
        if now.get("stalled"):
            lines += _live_stall_lines(now, current)
        elif current and not live:
            lines.append(f"    STALLED NOW: stall #{current['stall_id']} for "
                         f"{current['so_far_s']:.2f} s so far")
            lines += _stack_lines(current)
    # Loops the Python part does not list yet (it was published before they
    # were added, and no Python code could run since): what the samplers know.
    published = {loop["id"] for loop in loops}
    for loop_id, now in sorted(live.items()):
        if loop_id in published:
            continue
        lines.append("")
        lines.append(f"  loop {loop_id}: {printable(now.get('name'))} "
                     f"(heartbeat {now.get('heartbeat_age_s', 0):.2f} s ago)")
        if now.get("stalled"):
            lines += _live_stall_lines(now, None)
    sessions = live_sessions(doc) or doc.get("sessions")
    if sessions:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(sessions["counts"].items()) if v)
        lines.append("")
        lines.append(f"  sessions: {sessions['total']} ({counts}); "
                     f"stuck: {sessions['stuck_count']}"
                     + ("; read live from the native table" if sessions.get("live") else ""))
        if sessions["stuck"]:
            lines.append(f"    {'id':<38} {'key':<20} {'state':<11} {'age':>9} "
                         f"{'no progress':>12} {'reports':>7}")
            for s in sessions["stuck"]:
                lines.append(f"    {s['id'][:38]:<38} {(s['key'] or '-')[:20]:<20} "
                             f"{s['state']:<11} {s['age_s']:>8.1f}s {s['since_progress_s']:>11.1f}s "
                             f"{s['reports']:>7}")
            if sessions["stuck_count"] > len(sessions["stuck"]):
                lines.append(f"    ... and {sessions['stuck_count'] - len(sessions['stuck'])} more")
    liveness = doc.get("liveness")
    if liveness:
        lines.append("")
        lines.append(f"  last liveness line ({liveness.get('age_s', 0):.1f} s ago): "
                     f"{liveness.get('line')}")
    return "\n".join(lines)


def _live_stall_lines(now: dict[str, Any], current: dict[str, Any] | None) -> list[str]:
    """The stall going on, from the sampler's live figures, with the stack
    read without the GIL or else the one the Python reporter took."""
    lines = [f"    STALLED NOW: stall #{now.get('stall_id')} for "
             f"{now.get('stall_so_far_s', 0):.2f} s so far"]
    if now.get("stack_text"):
        lines.append("    blocked in (innermost first, read without the GIL):")
        lines += ["      " + _faulthandler_frame(s)
                  for s in now["stack_text"].splitlines()[1:13]]
    elif current and current.get("stall_id") == now.get("stall_id"):
        lines += _stack_lines(current)
    elif now.get("stack_error"):
        lines.append(f"    stack: {printable(now['stack_error'])}")
    return lines


# One frame of a faulthandler dump: '  File "app.py", line 12 in handler'.
_DUMPED_FRAME = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\d+|\?\?\?) in (?P<function>.*)$')


def _faulthandler_frame(text: str) -> str:
    """A frame the native thread dumped, in the same ``f() at file:line``
    form as the frames Python publishes (other lines kept as they are)."""
    match = _DUMPED_FRAME.match(text)
    if match is None:
        return printable(text, 300).strip()
    return (f"{printable(match['function'], 100)}() at "
            f"{printable(match['file'], 200)}:{match['line']}")


def _stack_lines(current: dict[str, Any]) -> list[str]:
    if current.get("stack"):
        out = ["    blocked in (innermost first):"]
        for frame in reversed(current["stack"][-8:]):
            out.append(f"      {printable(frame['function'])}() at "
                       f"{printable(frame['file'])}:{frame['line']}")
        return out
    if current.get("stack_error"):
        return [f"    stack: {current['stack_error']}"]
    return []


def _one(pid: int, opts: dict[str, Any], out: TextIO, err: TextIO) -> int:
    start = time.monotonic()
    try:
        doc = query_status(pid, timeout=opts["timeout"])
    except StatusUnavailable as exc:
        print(f"loopwatch status: {exc}", file=err)
        return 1
    took = time.monotonic() - start
    if opts["json"]:
        print(json.dumps(doc, indent=2), file=out)
    else:
        print(format_process(doc, took), file=out)
    return 0


def _all(opts: dict[str, Any], out: TextIO, err: TextIO) -> int:
    remove_stale_sockets()
    pids = list(watched_pids())
    if not pids:
        if opts["json"]:
            print("[]", file=out)
        else:
            print("no process of this user serves loopwatch status", file=out)
        return 0

    def ask(pid: int) -> tuple[int, Any, float]:
        start = time.monotonic()
        try:
            return pid, query_status(pid, timeout=opts["timeout"]), time.monotonic() - start
        except StatusUnavailable as exc:
            return pid, exc, time.monotonic() - start

    with ThreadPoolExecutor(max_workers=min(32, len(pids))) as pool:
        answers = list(pool.map(ask, pids))
    status = 0
    if opts["json"]:
        docs = []
        for pid, doc, _ in answers:
            if isinstance(doc, StatusUnavailable):
                status = 1
                docs.append({"pid": pid, "error": str(doc), "reason": doc.reason})
            else:
                docs.append(doc)
        print(json.dumps(docs, indent=2), file=out)
        return status
    print(f"{'PID':>7}  {'COMMAND':<40}  {'LAG P99':>9}  {'STALLED NOW':<14}  {'STUCK':>5}", file=out)
    for pid, doc, took in answers:
        if isinstance(doc, StatusUnavailable):
            if not doc.stale:
                status = 1
                print(f"{pid:>7}  {'(no answer: ' + doc.reason + ')':<40}", file=out)
            continue
        p99 = max((lp["interval"]["lag_ms"]["p99"] for lp in doc.get("loops", [])), default=None)
        stalled, so_far = _stalled_now(doc)
        stuck = (live_sessions(doc) or doc.get("sessions") or {}).get("stuck_count", 0)
        print(f"{pid:>7}  {_command(doc):<40}  {_ms(p99):>9}  "
              f"{('yes, ' + format(so_far, '.1f') + ' s') if stalled else 'no':<14}  {stuck:>5}",
              file=out)
    return status


def main(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``loopwatch status``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        opts = _parse(argv)
    except UsageError as exc:
        print(f"loopwatch status: error: {exc}\n\n{USAGE}", end="", file=err)
        return 2
    try:
        if opts["pid"] is not None:
            return _one(opts["pid"], opts, out, err)
        return _all(opts, out, err)
    except StatusFolderError as exc:
        print(f"loopwatch status: {exc}", file=err)
        return 1
