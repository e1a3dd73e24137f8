"""Mistakes a user's type checker must catch in loopwatch's public API: every
line marked ``# error`` must be rejected (one error each) and no other line.
Checked by tests/typing/check.py (.ci/run's typing stage); never run."""

from __future__ import annotations

import asyncio

from loopwatch import (
    Diagnostics,
    Histogram,
    LivenessThresholds,
    LoopMonitor,
    SessionRegistry,
    TimerWheel,
    query_status,
    watch,
)

Histogram(lowest_trackable="one")  # error
Histogram(significant_figure=3)  # error
Histogram().record(1.5)  # error
Histogram().value_at_percentile("99")  # error
total: str = Histogram().total_count  # error
Histogram.decode(12)  # error
TimerWheel(resolution="1ms")  # error
TimerWheel().schedule("key", deadline=None)  # error
nxt: float = TimerWheel().next_deadline()  # error
watch(resolutoin=0.01)  # error
watch(0.01)  # error
LoopMonitor(asyncio.new_event_loop(), stall_threshold="100ms")  # error
LoopMonitor(on_stall=lambda event: event.no_such_field)  # error
SessionRegistry(stuck_after="2m")  # error
SessionRegistry(evict_after=600, max_sessions=1e6)  # error
SessionRegistry(clock=str)  # error
SessionRegistry().open("s1", state=3)  # error
SessionRegistry().set_state("s1", "waiting", queue_depth="3")  # error
Diagnostics(liveness_interval="30")  # error
Diagnostics(status="yes")  # error
LivenessThresholds(delay_p99_ms="1s")  # error
query_status(pid="1234")  # error
