"""``loopwatch demo --fast --json``: the seed report replayed against the
example gateway, end to end (subprocesses). The assertions are on the facts
the verdict reports, so they fail if any part of the feature breaks: the
ghost not evicted, no backoff, status silent during the block, no liveness
warning, sessions left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import loopwatch
from loop_support import REPO

STALL_AWARE = hasattr(loopwatch.SessionRegistry, "set_stall_clock")
HEALTHY = "healthy sessions wrongly stuck or evicted"


def _socket_folder_pids() -> set[str]:
    from loopwatch.status.paths import status_folder

    try:
        return {n for n in os.listdir(status_folder()) if n.endswith(".sock")}
    except FileNotFoundError:
        return set()


@pytest.mark.timeout(240)
def test_demo_replays_the_report_and_loopwatch_catches_every_part(tmp_path, runtime_dir):
    # a private socket folder: what is left in it is the demo's alone, not
    # another process's that happens to serve status meanwhile
    sockets_before = _socket_folder_pids()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "loopwatch", "demo", "--fast", "--json"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=220)
    where = f"exit {proc.returncode}\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout[-4000:]}"
    verdict = json.loads(proc.stdout)
    facts = verdict["facts"]
    checks = {c["name"]: c for c in verdict["checks"]}
    assert verdict["error"] is None, where
    assert facts["stall_aware_ages"] is STALL_AWARE, where

    # the ghost: evicted as a ghost, by the stuck report after its store entry vanished
    ghost = facts["ghost"]
    assert ghost["evicted"] and ghost["reason"] == "ghost", where
    bound = verdict["timescales"]["max_report_interval"]
    assert 0 <= ghost["evicted_after_store_deleted_s"] <= bound + 10, where
    # backoff: the registry scheduled each next report later than the one before, up to the cap
    gaps = [r["next_report_in_s"] for r in ghost["stuck_reports"]]
    assert len(gaps) >= 2 and gaps[1] > gaps[0], where
    assert all(b >= a for a, b in zip(gaps, gaps[1:])) and max(gaps) <= bound, where
    assert facts["backoff_visible"] and checks["stuck reports back off"]["ok"], where

    # killed clients: their sessions closed with their connections
    assert len(facts["killed_clients"]) == 3, where
    assert all(c["reason"] == "connection_lost" for c in facts["killed_clients"]), where

    # status during the block: answered, each showing the stall going on in busy_block()
    status = facts["status_during_block"]
    assert status["answered"] >= 3 and status["answered"] == status["count"], where
    assert status["showed_stall_with_frame"] == status["answered"], where
    assert status["blocking_frame"].startswith("busy_block() at demo_gateway.py:"), where
    assert status["ghost_listed"] >= 1, where
    assert status["max_ms"] < 1000, where  # the block lasts 3 s
    assert status["cli_calls"] >= 1, where
    assert status["cli_showed_stall_with_frame"] == status["cli_calls"], where
    # while a gateway request sent during the block waited for the loop
    assert status["ping_during_block_ms"] > 500, where

    # a liveness warning, on time, while the loop was blocked
    assert facts["liveness_during_block"]["warnings"] >= 1, where
    assert "liveness warning:" in facts["liveness_during_block"]["first_warning"], where

    # nothing left behind
    assert facts["sessions_left_status"] == 0 and facts["sessions_left"] == 0, where
    assert facts["gateway_stopped"]["checks"] > 0, where
    assert checks["CPU spent by session checks"]["ok"], where
    assert facts["healthy_worked_through_block"], where
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("loopwatch-demo-")], where
    assert _socket_folder_pids() <= sockets_before, where

    failed = {name for name, c in checks.items() if not c["ok"]}
    if STALL_AWARE:
        # a session merely blocked by the stall is not stuck: the stall is not its fault
        assert facts["healthy_wrongly_stuck_or_evicted"] == 0, where
        assert verdict["pass"] and proc.returncode == 0 and not failed, where
    else:
        # before stall-aware ages, that one check may fail (and then the verdict says FAIL)
        assert failed <= {HEALTHY}, where
        assert proc.returncode == (0 if not failed else 1) == verdict["exit_status"], where


def test_demo_usage_errors():
    proc = subprocess.run([sys.executable, "-m", "loopwatch", "demo", "--block-kind", "nap"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--block-kind expects busy or sleep" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "loopwatch", "demo", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: loopwatch demo" in proc.stdout
