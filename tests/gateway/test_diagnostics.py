"""Diagnostics, the object a gateway starts: its parts run together and stop
together, the liveness line comes on time while the loop is blocked, and a
loop stall makes no session stuck (both implementations, both loops)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest

from loop_support import new_loop

import loopwatch
from loopwatch import Diagnostics, SessionRegistry


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def messages(self, logger_name: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger_name]


@pytest.fixture
def records():
    handler = Records()
    names = ("loopwatch.liveness", "loopwatch.sessions", "loopwatch.loop")
    saved = {}
    for name in names:
        log = logging.getLogger(name)
        saved[name] = log.level
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    yield handler
    for name in names:
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(saved[name])


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_parts_start_and_stop_together(impl, loop_kind, runtime_dir):
    loop = new_loop(loop_kind)
    registry = SessionRegistry(stuck_after=60.0)

    async def main():
        registry.open("a", key="alice", state="processing")
        registry.open("b", state="idle")
        monitor = impl.LoopMonitor(resolution=0.005, stall_threshold=0.05)
        async with Diagnostics(registry, monitor=monitor, liveness_interval=0.1,
                               check_interval=0.05) as diag:
            assert diag.monitor is monitor and monitor.running
            path = diag.status_path
            assert path == loopwatch.status_socket_path() and os.path.exists(path)
            assert _threads("loopwatch-liveness")
            await asyncio.sleep(0.3)
            doc = diag.status()
            # From another thread, as a client: the whole document.
            served = await asyncio.get_running_loop().run_in_executor(
                None, loopwatch.query_status)
            checks = diag.checks
        return monitor, path, doc, served, checks, diag

    try:
        monitor, path, doc, served, checks, diag = loop.run_until_complete(main())
    finally:
        loop.close()
    assert not monitor.running and not os.path.exists(path)
    assert not _threads("loopwatch-liveness")
    assert checks >= 2  # the registry's checks ran as a task on the loop
    assert doc["pid"] == os.getpid()
    (entry,) = doc["loops"]
    assert entry["implementation"] == impl.name
    assert entry["loop_class"].endswith(type(loop).__qualname__)
    assert entry["total"]["lag_ms"]["count"] > 0
    assert doc["sessions"]["counts"]["processing"] == 1 and doc["sessions"]["total"] == 2
    assert served["pid"] == os.getpid() and served["loops"][0]["id"] == entry["id"]
    assert served["live"]["loops"] == [] or served["live"]["loops"][0]["stalled"] is False
    assert diag.liveness.last is not None  # lines were made every 0.1 s


def test_liveness_line_comes_while_the_loop_is_blocked(impl, loop_kind, runtime_dir, records):
    loop = new_loop(loop_kind)
    block = {}

    async def main():
        monitor = impl.LoopMonitor(resolution=0.005, stall_threshold=0.05)
        # Warn on lag alone (the blocked loop is also 100 % utilized).
        thresholds = loopwatch.LivenessThresholds(delay_p99_ms=200, delay_max_ms=200,
                                                  utilization=2.0, cpu_core_ratio=100.0)
        async with Diagnostics(monitor=monitor, liveness_interval=0.25, status=False,
                               thresholds=thresholds):
            await asyncio.sleep(0.3)
            block["start"] = time.time()
            time.sleep(1.5)  # the loop is blocked; the liveness thread is not
            block["end"] = time.time()
            await asyncio.sleep(0.05)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    during = [r for r in records.records if r.name == "loopwatch.liveness"
              and block["start"] < r.created < block["end"]]
    warnings = [r for r in during if r.levelno == logging.WARNING]
    assert warnings, [r.getMessage() for r in during]
    assert warnings[0].getMessage().startswith("liveness warning: eventLoopDelayP99Ms=")
    assert warnings[0].eventLoopDelayMaxMs >= 200
    assert warnings[0].loopwatch_crossed[-1] == "eventLoopDelayMaxMs"


def test_options_are_checked():
    with pytest.raises(ValueError, match="liveness_interval"):
        Diagnostics(liveness_interval=0)
    with pytest.raises(TypeError, match="check_interval"):
        Diagnostics(check_interval="1")
    with pytest.raises(TypeError, match="registry"):
        Diagnostics(registry={"a": 1})
    with pytest.raises(ValueError, match="resolution"):
        Diagnostics(resolution=-1)


def test_start_outside_a_loop_is_a_clear_error():
    with pytest.raises(RuntimeError, match="running loop"):
        Diagnostics(status=False).start()


@pytest.mark.skipif(not hasattr(SessionRegistry, "set_stall_clock"),
                    reason="stall-aware ages need SessionRegistry.set_stall_clock")
def test_a_loop_stall_makes_no_session_stuck(impl, loop_kind, runtime_dir, records):
    """A 3 s stall against a 2 s stuck_after: the healthy session, which was
    only kept from progressing by the stall, is not reported; the wedged
    one, 2 s without progress in time the loop ran, is."""
    loop = new_loop(loop_kind)
    registry = SessionRegistry(stuck_after=2.0, evict_after=60.0)

    async def healthy():
        while True:
            registry.progress("healthy")
            await asyncio.sleep(0.05)

    async def main():
        registry.open("healthy", state="processing")
        registry.open("wedged", state="processing")
        monitor = impl.LoopMonitor(resolution=0.005, stall_threshold=0.05)
        async with Diagnostics(registry, monitor=monitor, check_interval=0.1, status=False):
            worker = asyncio.create_task(healthy())
            await asyncio.sleep(0.2)
            time.sleep(3.0)  # the stall
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any("sessionId=wedged" in m for m in records.messages("loopwatch.sessions")):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # checks after the wedged report
            worker.cancel()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    messages = records.messages("loopwatch.sessions")
    assert any(m.startswith("stuck session: sessionId=wedged") for m in messages), messages
    assert not any("sessionId=healthy" in m for m in messages), messages
    assert "healthy" in registry and "wedged" in registry  # nobody evicted
    # The stall itself was reported, as the loop's.
    assert any("stall #1 in progress" in m for m in records.messages("loopwatch.loop"))


@pytest.mark.native_only
def test_without_status_a_gil_holding_stall_still_gets_its_line(runtime_dir):
    """status=False: no socket, but the native watchdog thread still writes
    the line of a stall in C code that holds the GIL, while it goes on."""
    import subprocess
    import sys

    script = (
        "import asyncio, ctypes, sys, loopwatch\n"
        "async def main():\n"
        "    async with loopwatch.Diagnostics(status=False, name='gateway-loop') as diag:\n"
        "        assert diag.status_path is None\n"
        "        await asyncio.sleep(0.1)\n"
        "        ctypes.PyDLL(None).sleep(2)\n"
        "        print('UNBLOCKED', file=sys.stderr, flush=True)\n"
        "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, LOOPWATCH_NO_EXTENSIONS="0"))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    (line,) = [i for i, text in enumerate(lines) if "reported by the native watchdog" in text]
    assert lines[line].startswith("loopwatch: stall #1 on gateway-loop (pid "), lines[line]
    assert line < lines.index("UNBLOCKED")
    assert not (runtime_dir / "loopwatch").exists() or not list((runtime_dir / "loopwatch").iterdir())
