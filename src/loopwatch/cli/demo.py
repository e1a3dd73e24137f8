"""``loopwatch demo``: the seed report, replayed.

The report (OpenClaw #77115): a session whose client was killed stayed in a
gateway's memory as ``state=processing`` for 11.5 hours after the session
store had forgotten it; the stuck-session checker flagged it every 30
seconds, forever; the event loop was blocked for up to 12.8 s at a time,
and every CLI command, ``gateway status`` included, timed out and was
SIGKILLed.

This command runs a real asyncio gateway that embeds loopwatch
(:mod:`loopwatch.cli.demo_gateway`) as a subprocess and does the same to
it, on shrunk timescales: client processes that are SIGKILLed mid-request,
a session whose store entry vanishes while its handler is wedged (the
ghost), a request handler that blocks the loop for seconds, and
``loopwatch status`` asked over and over during the block. Then it checks
what loopwatch did about each, and prints a verdict (``--json``: as JSON).
Exit status 0 when every check passed, 1 otherwise, 2 on a usage error.

    loopwatch demo [--fast] [--json] [--block-kind busy|sleep]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence, TextIO

__all__ = ["main", "run_demo", "TIMESCALES"]

USAGE = """\
usage: loopwatch demo [--fast] [--json] [--block-kind busy|sleep]

Replays the report that started loopwatch against a real asyncio gateway
that embeds it (a subprocess), on shrunk timescales: clients SIGKILLed
mid-request, a ghost session whose store entry vanished, a handler that
blocks the event loop for seconds, `loopwatch status` asked during the
block. Prints what loopwatch did and a verdict; exit status 0 when every
check passed. About a minute (--fast: about 20-30 s).

options:
  --fast              shorter timescales (the test suite's)
  --json              print the verdict as one JSON document on stdout
                      (progress goes to stderr)
  --block-kind KIND   how the handler blocks the loop: busy (CPU-bound
                      Python, as in the report; default) or sleep
  -h, --help          show this help
"""

#: The shrunk timescales, and loopwatch's defaults they stand for.
TIMESCALES: dict[str, dict[str, float]] = {
    "normal": {"stuck_after": 3.0, "report_backoff": 2.0, "max_report_interval": 12.0,
               "evict_after": 90.0, "check_interval": 0.5, "liveness_interval": 2.0,
               "block": 8.0, "heartbeat": 0.25, "victims": 3, "reports_before_delete": 3},
    "fast": {"stuck_after": 1.0, "report_backoff": 2.0, "max_report_interval": 4.0,
             "evict_after": 30.0, "check_interval": 0.25, "liveness_interval": 1.0,
             "block": 3.0, "heartbeat": 0.2, "victims": 3, "reports_before_delete": 3},
}

BLOCK_FUNCTIONS = {"busy": "busy_block", "sleep": "sleep_block"}


class DemoError(RuntimeError):
    """Something the demo waited for did not happen in time."""


class UsageError(Exception):
    pass


# -- processes and their lines -------------------------------------------------------
class Lines:
    """The lines a stream gives, read by a thread: JSON objects where they
    parse (else ``{"raw": line}``), each with ``_seen`` (epoch seconds)."""

    def __init__(self, stream: Any, name: str) -> None:
        self.items: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,),
                                        name=f"demo-{name}", daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        try:
            for line in stream:
                line = line.rstrip("\n")
                if not line:
                    continue
                try:
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        item = {"raw": line}
                except ValueError:
                    item = {"raw": line}
                item["_seen"] = time.time()
                with self._cond:
                    self.items.append(item)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def find(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._cond:
            return [i for i in self.items if pred(i)]

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str,
             count: int = 1) -> dict[str, Any]:
        """The ``count``-th item that matches, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [i for i in self.items if pred(i)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if self._closed:
                    raise DemoError(f"{what}: the stream ended first")
                if left <= 0:
                    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


class Proc:
    """A child process whose stdout is read line by line."""

    def __init__(self, name: str, args: list[str], stderr: Any = subprocess.DEVNULL) -> None:
        self.name = name
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=stderr, text=True, bufsize=1)
        self.out = Lines(self.popen.stdout, name)
        self.err = Lines(self.popen.stderr, name + "-err") if stderr == subprocess.PIPE else None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> float:
        """SIGKILL; returns when it was sent."""
        at = time.time()
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)
        return at

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DemoError(f"{self.name} did not exit within {timeout:.0f} s") from None

    def cleanup(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.out.join(2)
        if self.err is not None:
            self.err.join(2)


# -- the demo -----------------------------------------------------------------------------
class Demo:
    def __init__(self, fast: bool, block_kind: str, progress: TextIO) -> None:
        self.mode = "fast" if fast else "normal"
        self.ts = dict(TIMESCALES[self.mode])
        self.block_kind = block_kind
        self.block_function = BLOCK_FUNCTIONS[block_kind]
        self.progress_out = progress
        self.t0 = time.time()
        self.procs: list[Proc] = []
        self.tmp: str | None = None
        self.gateway: Proc | None = None
        self.gateway_pid: int | None = None
        self.facts: dict[str, Any] = {}
        self.gateway_exit: int | None = None

    # -- output --------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.time() - self.t0:6.1f} s] {text}", file=self.progress_out, flush=True)

    def rel(self, t: float) -> float:
        return round(t - self.t0, 3)

    # -- children ------------------------------------------------------------
    def spawn(self, name: str, args: list[str], stderr: Any = subprocess.DEVNULL) -> Proc:
        proc = Proc(name, args, stderr)
        self.procs.append(proc)
        return proc

    def client(self, name: str, *args: str) -> Proc:
        from . import demo_client

        # -P: the client is a standard-library-only script; run it by path
        # without putting its folder first on sys.path (fast start).
        return self.spawn(name, [sys.executable, "-P", demo_client.__file__,
                                 "--port", str(self.port), *args])

    def glog(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str,
             count: int = 1) -> dict[str, Any]:
        assert self.gateway is not None and self.gateway.err is not None
        return self.gateway.err.wait(pred, timeout, what, count)

    def gfind(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        assert self.gateway is not None and self.gateway.err is not None
        return self.gateway.err.find(pred)

    @staticmethod
    def session_event(kind: str, sid: str | None = None) -> Callable[[dict[str, Any]], bool]:
        def pred(r: dict[str, Any]) -> bool:
            ev = r.get("event")
            return (r.get("logger") == "loopwatch.sessions" and isinstance(ev, dict)
                    and ev.get("kind") == kind and (sid is None or ev.get("session") == sid))
        return pred

    @staticmethod
    def gateway_msg(msg: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
        def pred(r: dict[str, Any]) -> bool:
            return (r.get("logger") == "gateway" and r.get("msg") == msg
                    and all(r.get(k) == v for k, v in fields.items()))
        return pred

    # -- the steps --------------------------------------------------------------
    def run(self) -> None:
        ts = self.ts
        slack = 20.0  # seconds added to every wait: a loaded machine is slow, not broken
        self.tmp = tempfile.mkdtemp(prefix="loopwatch-demo-")
        self.store = os.path.join(self.tmp, "store")
        # The gateway runs as a module of the installed package (not by path:
        # its folder holds modules named like the standard library's).
        args = [sys.executable, "-m", "loopwatch.cli.demo_gateway",
                "--port", "0", "--store", self.store,
                "--stuck-after", str(ts["stuck_after"]),
                "--report-backoff", str(ts["report_backoff"]),
                "--max-report-interval", str(ts["max_report_interval"]),
                "--evict-after", str(ts["evict_after"]),
                "--check-interval", str(ts["check_interval"]),
                "--liveness-interval", str(ts["liveness_interval"]),
                "--liveness-p99-ms", "500", "--liveness-max-ms", "1000",
                "--liveness-cooldown", str(2 * ts["liveness_interval"])]
        self.gateway = gw = self.spawn("gateway", args, stderr=subprocess.PIPE)
        first = gw.out.wait(lambda r: r.get("raw", "").startswith("listening "), 30 + slack,
                            "the gateway to listen")
        fields = dict(part.split("=", 1) for part in first["raw"].split()[1:])
        self.port, self.gateway_pid = int(fields["port"]), int(fields["pid"])
        start = self.glog(self.gateway_msg("gateway listening"), slack, "the gateway's first line")
        self.facts["implementation"] = start.get("implementation")
        self.facts["stall_aware_ages"] = bool(start.get("stall_aware_ages"))
        self.say(f"gateway started: pid {self.gateway_pid}, port {self.port}, "
                 f"loopwatch {start.get('implementation')}, session store {self.store}")

        # 1. CLI clients SIGKILLed mid-request (the report: `openclaw cron` calls timed out).
        victims = []
        for i in range(int(ts["victims"])):
            victims.append(self.client(f"victim{i}", "work", "--seconds", "600",
                                       "--heartbeat", str(ts["heartbeat"]),
                                       "--key", f"cli:cron-list-{i + 1}"))
        killed = []
        for proc in victims:
            prog = proc.out.wait(lambda r: r.get("event") == "progress", 15 + slack,
                                 f"{proc.name} to be mid-request")
            killed.append((prog["session"], proc.kill()))
        closes = []
        for sid, kill_t in killed:
            rec = self.glog(self.gateway_msg("session closed", session=sid), 10 + slack,
                            f"killed client's session {sid} to close")
            closes.append({"session": sid, "reason": rec.get("reason"),
                           "closed_after_s": round(max(0.0, rec["t"] - kill_t), 3)})
        self.facts["killed_clients"] = closes
        worst = max(c["closed_after_s"] for c in closes)
        self.say(f"{len(victims)} clients SIGKILLed mid-request (state processing): their sessions "
                 f"closed within {worst * 1000:.0f} ms, with their connections "
                 f"(reasons: {', '.join(sorted({c['reason'] for c in closes}))})")

        # 2. The ghost: a request wedged in state processing, its client killed.
        ghost_client = self.client("ghost", "hang", "--key", "agent:main:main")
        hang = ghost_client.out.wait(lambda r: r.get("event") == "hanging", 15 + slack,
                                     "the ghost's request to start")
        ghost = self.ghost = hang["session"]
        self.ghost_since = self.glog(self.gateway_msg(
            "request hangs: awaiting a future nobody completes", session=ghost), slack,
            "the ghost's request in the log")["t"]
        ghost_client.kill()
        self.say(f"session {ghost} (key agent:main:main): request wedged in state processing, "
                 "its client SIGKILLed; the handler never notices (the lost cleanup)")
        first_report = self.glog(self.session_event("stuck", ghost),
                                 ts["stuck_after"] * 3 + slack, "the ghost's first stuck report")
        self.say(f"loopwatch: {first_report['msg']}")

        # 3. A healthy session that works through the block.
        keeper_s = ts["block"] + 4 * ts["stuck_after"] + 3
        keeper = self.client("keeper", "work", "--seconds", str(keeper_s),
                             "--heartbeat", str(ts["heartbeat"]), "--key", "agent:main:worker")
        kp = keeper.out.wait(lambda r: r.get("event") == "progress", 15 + slack,
                             "the healthy session to work")
        self.keeper = kp["session"]
        self.say(f"healthy session {self.keeper} working for {keeper_s:.0f} s, progress every "
                 f"{ts['heartbeat']} s (it must not be reported stuck nor evicted)")

        # 4. The block, and loopwatch status during it.
        self.block_phase()

        # 5. The ghost's store entry vanishes; loopwatch must evict it.
        for n in range(2, int(ts["reports_before_delete"]) + 1):
            report = self.glog(self.session_event("stuck", ghost),
                               ts["max_report_interval"] * 2 + ts["block"] + slack,
                               f"the ghost's stuck report #{n}", count=n)
            self.say(f"loopwatch: {report['msg']}")
        os.unlink(os.path.join(self.store, f"{ghost}.session"))
        self.deleted_at = time.time()
        self.say(f"the ghost's store file {ghost}.session deleted (the store forgot it, "
                 "as the report's did; memory still has it)")
        evicted = self.glog(self.session_event("evicted", ghost),
                            ts["max_report_interval"] * 2 + slack, "the ghost's eviction")
        self.say(f"loopwatch: {evicted['msg']}")
        self.glog(self.gateway_msg("evicted session's handler ended, connection closed",
                                   session=ghost), slack, "the ghost's handler to end")
        self.say("the ghost's wedged handler was cancelled by on_evict; its connection closed")

        # 6. The healthy session finishes; nothing is left.
        keeper.out.wait(lambda r: r.get("event") == "closed", keeper_s + slack,
                        "the healthy session to finish and close")
        keeper.wait(slack)
        self.say("healthy session finished its work and closed")
        from ..status.client import query_status

        doc = query_status(self.gateway_pid, timeout=5.0)
        self.facts["sessions_left_status"] = (doc.get("sessions") or {}).get("total")
        self.say(f"loopwatch status: {self.facts['sessions_left_status']} sessions in the registry")
        gw.popen.send_signal(signal.SIGTERM)
        self.gateway_exit = gw.wait(15 + slack)
        stopped = self.glog(self.gateway_msg("gateway stopped"), slack, "the gateway's last line")
        self.facts["gateway_stopped"] = {k: stopped.get(k) for k in
                                         ("sessions", "counts", "checks", "check_cpu_s")}
        self.say(f"gateway stopped by SIGTERM (exit status {self.gateway_exit}): "
                 f"{stopped.get('sessions')} sessions left, {stopped.get('checks')} checks made")

    def block_phase(self) -> None:
        ts = self.ts
        slack = 20.0
        self.client("block", "block", "--seconds", str(ts["block"]), "--kind", self.block_kind)
        started = self.glog(self.gateway_msg("block started: the event loop is blocked in Python code"),
                            15 + slack, "the block to start")
        self.block_start = started["t"]
        self.say(f"a handler blocks the event loop for {ts['block']:.0f} s in {self.block_function}()")
        stall = self.glog(lambda r: r.get("logger") == "loopwatch.loop"
                          and isinstance(r.get("loopwatch_event"), dict)
                          and r["loopwatch_event"].get("kind") == "started"
                          and r["t"] >= self.block_start - 0.05,
                          ts["block"] + slack, "the stall report")
        self.say(f"loopwatch: {stall['msg']}")
        self.facts["stall_report"] = {"after_s": round(stall["t"] - self.block_start, 3),
                                      "msg": stall["msg"]}
        # a gateway request during the block: it waits for the loop
        ping = self.client("ping", "ping")
        # direct status queries from this process, in a thread
        from ..status.client import StatusUnavailable, query_status

        answers: list[dict[str, Any]] = []
        stop = threading.Event()

        def ask_forever() -> None:
            while not stop.is_set():
                t_start = time.time()
                try:
                    doc: Any = query_status(self.gateway_pid, timeout=2.0)
                except StatusUnavailable as exc:
                    doc = exc
                answers.append(self.judge(doc, t_start, time.time(), "query_status"))
                stop.wait(0.1)

        asker = threading.Thread(target=ask_forever, name="demo-status", daemon=True)
        asker.start()
        cli: list[dict[str, Any]] = []
        planned_end = self.block_start + ts["block"]
        try:
            while time.time() < planned_end - 1.0:
                t_start = time.time()
                try:
                    out = subprocess.run(
                        [sys.executable, "-m", "loopwatch", "status", str(self.gateway_pid),
                         "--json", "--timeout", "5"], capture_output=True, text=True,
                        timeout=30, stdin=subprocess.DEVNULL)
                    doc = json.loads(out.stdout) if out.returncode == 0 else RuntimeError(
                        out.stderr.strip() or f"exit status {out.returncode}")
                except (subprocess.TimeoutExpired, ValueError) as exc:
                    doc = exc
                cli.append(self.judge(doc, t_start, time.time(), "loopwatch status --json"))
            ended = self.glog(self.gateway_msg("block ended"), ts["block"] + slack,
                              "the block to end")
        finally:
            stop.set()
            asker.join(10)
        self.block_end = ended["t"]
        pong = ping.out.wait(lambda r: r.get("event") == "reply", slack, "the ping's reply")
        self.facts["ping_during_block_ms"] = pong.get("ms")
        inside = [a for a in answers if a["end"] <= self.block_end]
        cli_inside = [a for a in cli if a["end"] <= self.block_end]
        self.facts["status_answers"] = inside
        self.facts["status_cli"] = cli_inside
        self.facts["status_outside_block"] = len(answers) - len(inside) + len(cli) - len(cli_inside)
        lat = [a["ms"] for a in inside if a["ok"]]
        self.say(f"block ended after {self.block_end - self.block_start:.1f} s; during it "
                 f"loopwatch status answered {len(lat)} direct queries (p50 "
                 f"{statistics.median(lat) if lat else float('nan'):.1f} ms, max "
                 f"{max(lat) if lat else float('nan'):.1f} ms) and {len(cli_inside)} "
                 f"`loopwatch status` commands; a gateway ping sent during it waited "
                 f"{(pong.get('ms') or 0) / 1000:.1f} s")
        middle = [a for a in inside if a["ok"] and a.get("so_far_s")]
        if middle:
            a = middle[len(middle) // 2]
            self.say(f"  one answer, mid-block: stall #{a.get('stall_id')} ongoing for "
                     f"{a['so_far_s']:.2f} s, blocked in {a['frame']}; sessions {a['sessions']}, "
                     f"stuck {a['stuck']}{' (the ghost)' if a['ghost_listed'] else ''}; "
                     f"answered by the {a['served_by']} status thread in {a['ms']:.0f} ms")

    def judge(self, doc: Any, t_start: float, t_end: float, how: str) -> dict[str, Any]:
        """One status answer: did it come, and did it show the stall going
        on, with the blocking frame, and the stuck ghost?"""
        out: dict[str, Any] = {"how": how, "start": t_start, "end": t_end,
                               "ms": round((t_end - t_start) * 1000, 3)}
        if not isinstance(doc, dict):
            out.update(ok=False, error=str(doc), stall_shown=False, frame=None, ghost_listed=False)
            return out
        stalled, frame = False, None
        for loop in doc.get("loops", []):
            current = loop.get("current_stall")
            if current:
                stalled = True
                out["stall_id"] = current.get("stall_id")
                out["so_far_s"] = current.get("so_far_s")
                stack = current.get("stack") or []
                if stack:
                    f = stack[-1]
                    frame = f"{f.get('function')}() at {os.path.basename(str(f.get('file')))}:{f.get('line')}"
                    out["function"] = f.get("function")
        for entry in (doc.get("live") or {}).get("loops", []):
            if entry.get("stalled"):
                stalled = True
                text = entry.get("stack_text") or ""
                if frame is None and self.block_function in text:
                    frame = f"{self.block_function}() (stack read by the native thread)"
                    out["function"] = self.block_function
        sessions = doc.get("sessions") or {}
        stuck = sessions.get("stuck") or []
        out["sessions"] = sessions.get("total")
        out["stuck"] = sessions.get("stuck_count")
        out.update(ok=True, stall_shown=stalled, frame=frame,
                   ghost_listed=any(s.get("id") == getattr(self, "ghost", None) for s in stuck),
                   served_by=doc.get("served_by"),
                   python_answered=(doc.get("live") or {}).get("python_answered"))
        return out

    # -- the verdict ----------------------------------------------------------
    def verdict(self, error: str | None) -> dict[str, Any]:
        ts, facts = self.ts, self.facts
        checks: list[dict[str, Any]] = []

        def check(name: str, ok: bool, detail: str) -> None:
            checks.append({"name": name, "ok": bool(ok), "detail": detail})

        records: list[dict[str, Any]] = []
        if self.gateway is not None and self.gateway.err is not None:
            records = self.gateway.err.find(lambda r: True)
        ghost = getattr(self, "ghost", None)
        session_events = [r for r in records if r.get("logger") == "loopwatch.sessions"
                          and isinstance(r.get("event"), dict)]

        # the ghost
        reports = [r for r in session_events if r["event"]["session"] == ghost
                   and r["event"]["kind"] == "stuck"]
        eviction = next((r for r in session_events if r["event"]["session"] == ghost
                         and r["event"]["kind"] == "evicted"), None)
        since = getattr(self, "ghost_since", None)
        ghost_fact: dict[str, Any] = {
            "session": ghost, "evicted": eviction is not None,
            "reason": eviction["event"]["reason"] if eviction else None,
            "evicted_after_store_deleted_s": None, "evicted_after_hang_s": None,
            "age_at_eviction_s": eviction["event"]["age_s"] if eviction else None,
            "stuck_reports": [{"after_hang_s": round(r["t"] - since, 3) if since else None,
                               "reports": r["event"]["reports"],
                               "next_report_in_s": r["event"]["next_report_in_s"],
                               "age_s": r["event"]["age_s"]} for r in reports],
        }
        if eviction is not None and getattr(self, "deleted_at", None):
            ghost_fact["evicted_after_store_deleted_s"] = round(eviction["t"] - self.deleted_at, 3)
        if eviction is not None and since:
            ghost_fact["evicted_after_hang_s"] = round(eviction["t"] - since, 3)
        facts["ghost"] = ghost_fact
        if eviction is not None:
            check("ghost evicted", ghost_fact["reason"] == "ghost",
                  f"{ghost_fact['evicted_after_store_deleted_s']:.1f} s after its store entry "
                  f"vanished (reason {ghost_fact['reason']}; {ghost_fact['evicted_after_hang_s']:.1f}"
                  f" s after its request wedged; bound: the next stuck report, at most "
                  f"{ts['max_report_interval']:.0f} s)")
        else:
            check("ghost evicted", False, "never evicted")
        gaps = [r["next_report_in_s"] for r in ghost_fact["stuck_reports"]]
        backoff_ok = (len(gaps) >= 2 and all(g is not None for g in gaps)
                      and all(b > a or b == ts["max_report_interval"] for a, b in zip(gaps, gaps[1:])))
        times = ", ".join(f"+{r['after_hang_s']:.1f}" for r in ghost_fact["stuck_reports"]
                          if r["after_hang_s"] is not None)
        check("stuck reports back off", backoff_ok,
              f"{len(gaps)} reports at {times} s after the request wedged; next report "
              f"scheduled {', '.join(f'{g:g}' for g in gaps if g is not None)} s later "
              f"(x{ts['report_backoff']:g}, capped at {ts['max_report_interval']:g} s); "
              f"the report's checker flagged its ghost every 30 s for 11.5 h")
        facts["backoff_visible"] = backoff_ok

        # killed clients
        closes = facts.get("killed_clients") or []
        closed_ok = bool(closes) and all(c["reason"] == "connection_lost" for c in closes)
        check("killed clients' sessions closed", closed_ok and len(closes) == int(ts["victims"]),
              f"{len(closes)}/{int(ts['victims'])} SIGKILLed mid-request, closed within "
              f"{max((c['closed_after_s'] for c in closes), default=0) * 1000:.0f} ms "
              "(the session's lifetime is its connection's)")

        # status during the block
        answers = facts.get("status_answers") or []
        cli = facts.get("status_cli") or []
        good = [a for a in answers if a["ok"]]
        lat = [a["ms"] for a in good]
        shown = [a for a in good if a["stall_shown"] and a.get("function") == self.block_function]
        frames = sorted({a["frame"] for a in shown if a["frame"]})
        status_fact: dict[str, Any] = {
            "count": len(answers), "answered": len(good),
            "p50_ms": round(statistics.median(lat), 3) if lat else None,
            "max_ms": round(max(lat), 3) if lat else None,
            "showed_stall_with_frame": len(shown),
            "ghost_listed": sum(1 for a in good if a["ghost_listed"]),
            # a frame with its place (from Python) before the native thread's
            # name-only reading, which answers when the GIL was busy
            "blocking_frame": min(frames, key=lambda f: (" at " not in f, f)) if frames else None,
            "cli_calls": len(cli), "cli_answered": sum(1 for a in cli if a["ok"]),
            "cli_showed_stall_with_frame": sum(1 for a in cli if a["ok"] and a["stall_shown"]
                                               and a.get("function") == self.block_function),
            "cli_ms": [a["ms"] for a in cli],
            "ping_during_block_ms": facts.get("ping_during_block_ms"),
        }
        facts["status_during_block"] = status_fact
        status_ok = (len(good) >= 3 and len(good) == len(answers) and len(shown) == len(good)
                     and status_fact["max_ms"] is not None and status_fact["max_ms"] < 1000)
        check("status answered during the block", status_ok,
              f"{len(good)}/{len(answers)} queries answered, p50 {status_fact['p50_ms'] or 0:.1f} ms,"
              f" max {status_fact['max_ms'] or 0:.1f} ms; {len(shown)} showed the stall ongoing in "
              f"{status_fact['blocking_frame']}; {status_fact['ghost_listed']} listed the stuck "
              "ghost")
        cli_ok = (status_fact["cli_calls"] >= 1
                  and status_fact["cli_showed_stall_with_frame"] == status_fact["cli_calls"])
        check("`loopwatch status PID --json` during the block", cli_ok,
              f"{status_fact['cli_showed_stall_with_frame']}/{status_fact['cli_calls']} commands "
              f"showed the stall, in {_ms_range(status_fact['cli_ms'])} (with Python's start-up);"
              " the report's `gateway status` was SIGKILLed")

        # liveness
        block_start: Any = getattr(self, "block_start", None)
        block_end: Any = getattr(self, "block_end", None)
        liveness = [r for r in records if r.get("logger") == "loopwatch.liveness"]
        during = [r for r in liveness if block_start is not None and block_end is not None
                  and block_start <= r["t"] <= block_end + 0.05]
        warnings = [r for r in during if r.get("level") == "WARNING"]
        facts["liveness_during_block"] = {
            "lines": len(during), "warnings": len(warnings),
            "first_warning": warnings[0]["msg"] if warnings else None,
            "warning_after_block_start_s": round(warnings[0]["t"] - block_start, 3)
            if warnings else None,
        }
        check("liveness warning during the block", len(warnings) >= 1,
              f"{len(warnings)} of {len(during)} liveness lines made during the block: "
              + (warnings[0]["msg"] if warnings else "none"))

        # the healthy session(s)
        wrong = [r for r in session_events if r["event"]["session"] != ghost
                 and r["event"]["kind"] in ("stuck", "evicted")]
        keeper = getattr(self, "keeper", None)
        work_start: Any = next((r["t"] for r in records if r.get("msg") == "work started"
                           and r.get("session") == keeper), None)
        work_done: Any = next((r["t"] for r in records if r.get("msg") == "work done"
                          and r.get("session") == keeper), None)
        spanned = (None not in (work_start, work_done, block_start, block_end)
                   and work_start < block_start and work_done > block_end)
        facts["healthy_wrongly_stuck_or_evicted"] = len(wrong)
        facts["healthy_worked_through_block"] = bool(spanned)
        detail = (f"{len(wrong)} (a session working through the {ts['block']:g} s block, "
                  f"heartbeat every {ts['heartbeat']:g} s, stuck_after {ts['stuck_after']:g} s"
                  + ("" if spanned else "; its work did NOT span the block") + ")")
        if wrong:
            detail += ": " + "; ".join(r["msg"] for r in wrong[:3])
            if not facts.get("stall_aware_ages"):
                detail += (" -- this loopwatch lacks stall-aware ages "
                           "(SessionRegistry.set_stall_clock): the stall counted as no progress")
        check("healthy sessions wrongly stuck or evicted", not wrong and spanned, detail)

        # nothing left
        stopped = facts.get("gateway_stopped") or {}
        left = (facts.get("sessions_left_status"), stopped.get("sessions"))
        check("sessions left in the registry", left == (0, 0) and self.gateway_exit == 0,
              f"{left[0]} (loopwatch status before shutdown), {left[1]} (the gateway's last line "
              f"after SIGTERM, exit status {self.gateway_exit})")
        facts["sessions_left"] = left[1]

        # the checks' cost
        n, cpu = stopped.get("checks"), stopped.get("check_cpu_s")
        if n and cpu is not None:
            per = cpu / n * 1e6
            facts["check_cpu"] = {"checks": n, "cpu_s": cpu, "per_check_us": round(per, 1)}
            check("CPU spent by session checks", per < 5000,
                  f"{cpu * 1000:.1f} ms for {n} checks ({per:.0f} us each); the report's "
                  "checker kept a core 48% busy")
        else:
            check("CPU spent by session checks", False, "no figures (the gateway did not stop)")
        if error:
            check("the demo ran to the end", False, error)
        passed = all(c["ok"] for c in checks)
        return {
            "pass": passed,
            "exit_status": 0 if passed else 1,
            "mode": self.mode,
            "block_kind": self.block_kind,
            "timescales": ts,
            "duration_s": round(time.time() - self.t0, 1),
            "error": error,
            "checks": checks,
            "facts": facts,
        }

    # -- cleanup ----------------------------------------------------------------
    def cleanup(self) -> None:
        gw = self.gateway
        if gw is not None and gw.alive():
            gw.popen.send_signal(signal.SIGTERM)
            try:
                gw.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            proc.cleanup()
        if self.gateway_pid is not None:
            from ..status.paths import pid_alive, status_socket_path

            path = status_socket_path(self.gateway_pid)
            if os.path.exists(path) and not pid_alive(self.gateway_pid):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _ms_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"p50 {statistics.median(values):.0f} ms, max {max(values):.0f} ms"


def _timescale_lines(ts: dict[str, float], block_kind: str) -> list[str]:
    return [
        f"  stuck_after          {ts['stuck_after']:g} s          (loopwatch's default 120 s; "
        "the report's ghost: state=processing age=41514s)",
        f"  stuck report backoff x{ts['report_backoff']:g}, at most every {ts['max_report_interval']:g} s "
        "(default x2, at most 1800 s; the report: every 30 s for 11.5 h)",
        f"  evict_after          {ts['evict_after']:g} s         (default 600 s; the report asks: "
        "evict after 10 min, sooner when the store lacks it)",
        f"  session checks       every {ts['check_interval']:g} s at most (default 1 s; the report's "
        "checker: every 30 s)",
        f"  liveness line        every {ts['liveness_interval']:g} s      (default 30 s, as in the report)",
        f"  loop block           {ts['block']:g} s of {'busy Python' if block_kind == 'busy' else 'time.sleep'}"
        " on the loop (the report: eventLoopDelayP99Ms=12876.5)",
    ]


def format_verdict(v: dict[str, Any]) -> str:
    lines = ["", "verdict"]
    width = max(len(c["name"]) for c in v["checks"])
    for c in v["checks"]:
        lines.append(f"  {'PASS' if c['ok'] else 'FAIL'}  {c['name']:<{width}}  {c['detail']}")
    lines.append("")
    lines.append(f"  {'PASS' if v['pass'] else 'FAIL'}: "
                 + ("loopwatch caught every part of the report"
                    if v["pass"] else f"{sum(not c['ok'] for c in v['checks'])} check(s) failed")
                 + f" ({v['duration_s']:.0f} s, exit status {v['exit_status']})")
    return "\n".join(lines)


def _parse(argv: Sequence[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"fast": False, "json": False, "block_kind": "busy"}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            raise SystemExit(print(USAGE, end="") or 0)
        if arg == "--fast":
            opts["fast"] = True
        elif arg == "--json":
            opts["json"] = True
        elif name == "--block-kind":
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise UsageError("--block-kind expects busy or sleep")
            if value not in BLOCK_FUNCTIONS:
                raise UsageError(f"--block-kind expects busy or sleep, got {value!r}")
            opts["block_kind"] = value
        else:
            raise UsageError(f"unexpected argument {arg!r}")
        i += 1
    return opts


def run_demo(fast: bool = False, block_kind: str = "busy",
             progress: TextIO | None = None) -> dict[str, Any]:
    """Run the demo; returns the verdict (a JSON-able dict)."""
    out = progress or sys.stdout
    demo = Demo(fast, block_kind, out)
    print("loopwatch demo: the seed report (OpenClaw #77115: a ghost session, a blocked event "
          "loop, a CLI that timed out), replayed against a real asyncio gateway that embeds "
          "loopwatch", file=out)
    print(f"timescales, shrunk ({demo.mode}; the defaults and the report's figures in brackets):",
          file=out)
    for line in _timescale_lines(demo.ts, block_kind):
        print(line, file=out)
    out.flush()
    error = None
    try:
        demo.run()
    except DemoError as exc:
        error = str(exc)
        demo.say(f"FAILED: {error}")
    except Exception as exc:  # report it in the verdict; the traceback on stderr
        import traceback

        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        demo.say(f"FAILED: {error}")
    finally:
        demo.cleanup()
    return demo.verdict(error)


def main(argv: Sequence[str] | None = None) -> int:
    """``loopwatch demo``; returns the exit status."""
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"loopwatch demo: error: {exc}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        def terminate(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)
        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        verdict = run_demo(opts["fast"], opts["block_kind"],
                           sys.stderr if opts["json"] else sys.stdout)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if opts["json"]:
        print(json.dumps(verdict, indent=2))
    else:
        print(format_verdict(verdict))
    status: int = verdict["exit_status"]
    return status


if __name__ == "__main__":
    sys.exit(main())
