"""examples/gateway: the server runs on its own, the client talks to it,
sessions follow their connections, and SIGTERM leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import loopwatch
from loop_support import REPO

SERVER = os.path.join(REPO, "examples", "gateway", "server.py")
CLIENT = os.path.join(REPO, "examples", "gateway", "client.py")


class Gateway:
    def __init__(self, store):
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--port", "0", "--store", str(store), "--stuck-after", "30",
             "--check-interval", "0.2", "--liveness-interval", "0.5"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.proc.stdout.readline()  # blocks until it listens (or dies)
        assert line.startswith("listening "), (line, self.proc.stderr.read() if not line else "")
        fields = dict(p.split("=", 1) for p in line.split()[1:])
        self.port, self.pid = int(fields["port"]), int(fields["pid"])

    def _read(self):
        for line in self.proc.stderr:
            record = json.loads(line)  # every line is one JSON object
            with self._cond:
                self.records.append(record)
                self._cond.notify_all()

    def wait_record(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(pred(r) for r in self.records):
                left = deadline - time.monotonic()
                assert left > 0, f"no such record in {self.records}"
                self._cond.wait(left)
            return next(r for r in self.records if pred(r))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _client(port, *args, timeout=60):
    out = subprocess.run([sys.executable, CLIENT, "--port", str(port), *args],
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()], out.stderr


@pytest.mark.timeout(120)
def test_gateway_serves_a_session_and_stops_clean(tmp_path):
    store = tmp_path / "store"
    gw = Gateway(store)
    try:
        code, events, err = _client(gw.port, "work", "--seconds", "0.6", "--heartbeat", "0.1",
                                    "--key", "test:work")
        assert code == 0, err
        kinds = [e["event"] for e in events]
        assert kinds[0] == "opened" and kinds[-2:] == ["done", "closed"], events
        sid = events[0]["session"]
        steps = [e["step"] for e in events if e["event"] == "progress"]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3, events
        assert events[-2]["steps"] == len(steps)
        # the registry saw it open, work and close; the store file came and went
        opened = gw.wait_record(lambda r: r.get("msg") == "session opened"
                                and r.get("session") == sid)
        assert opened["key"] == "test:work" and opened["logger"] == "gateway"
        gw.wait_record(lambda r: r.get("msg") == "work done" and r.get("session") == sid)
        closed = gw.wait_record(lambda r: r.get("msg") == "session closed"
                                and r.get("session") == sid)
        assert closed["reason"] == "client_close"
        assert list(store.iterdir()) == []

        # a session held open is in the store, in the registry and in loopwatch status
        holder = subprocess.Popen([sys.executable, CLIENT, "--port", str(gw.port), "open",
                                   "--key", "test:held"], stdout=subprocess.PIPE, text=True)
        try:
            held = json.loads(holder.stdout.readline())
            assert held["event"] == "opened"
            assert (store / f"{held['session']}.session").exists()
            doc = loopwatch.query_status(gw.pid, timeout=10)
            assert doc["sessions"]["total"] == 1 and doc["sessions"]["counts"]["idle"] == 1
            assert doc["loops"][0]["name"] == "gateway"
            code, events, err = _client(gw.port, "stats")
            assert code == 0, err
            reply = events[0]["reply"]
            assert reply["sessions"] == 1 and reply["checks"] > 0 and reply["pid"] == gw.pid
            # killed: the session goes with its connection, and so does its store file
            holder.kill()
            holder.wait(10)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(10)
            holder.stdout.close()
        gone = gw.wait_record(lambda r: r.get("msg") == "session closed"
                              and r.get("session") == held["session"])
        assert gone["reason"] == "connection_lost"
        assert list(store.iterdir()) == []

        code, events, err = _client(gw.port, "block", "--seconds", "0.3", "--kind", "sleep")
        assert code == 0 and events[0]["reply"]["blocked_s"] >= 0.3, err
        gw.wait_record(lambda r: r.get("logger") == "loopwatch.loop"
                       and (r.get("loopwatch_event") or {}).get("blocking_function")
                       == "sleep_block")

        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(30) == 0
        stopped = gw.wait_record(lambda r: r.get("msg") == "gateway stopped")
        assert stopped["sessions"] == 0 and stopped["checks"] > 0
        assert not os.path.exists(loopwatch.status_socket_path(gw.pid))
    finally:
        gw.close()


@pytest.mark.timeout(120)
def test_gateway_sigterm_closes_open_sessions(tmp_path):
    gw = Gateway(tmp_path / "store")
    holder = None
    try:
        holder = subprocess.Popen([sys.executable, CLIENT, "--port", str(gw.port), "hang"],
                                  stdout=subprocess.PIPE, text=True)
        events = [json.loads(holder.stdout.readline()) for _ in range(2)]
        assert [e["event"] for e in events] == ["opened", "hanging"]
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(30) == 0
        closed = gw.wait_record(lambda r: r.get("msg") == "session closed")
        assert closed["reason"] == "shutdown" and closed["session"] == events[0]["session"]
        assert gw.wait_record(lambda r: r.get("msg") == "gateway stopped")["sessions"] == 0
        assert holder.wait(30) == 1  # the client saw its connection dropped
        assert list((tmp_path / "store").iterdir()) == []
    finally:
        if holder is not None:
            if holder.poll() is None:
                holder.kill()
                holder.wait(10)
            holder.stdout.close()
        gw.close()
