"""Pure-Python twin of the native loop monitor: same API, same measures.

The sampler is a Python thread, so unlike the native one it needs the GIL
to take each sample: while the loop thread holds the GIL inside native
code it cannot run, and when it gets the GIL back it fills in the ticks it
missed (with the staleness they would have seen) and reports a stall it
could not see in time as such, late.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from ..hdr.twin import Histogram
from .monitor import END, START, SUSPENDED, Event, LoopMonitorBase, read_thread_state
from .stats import StallEvent

__all__ = ["LoopMonitor", "watch"]

_QUEUE = 64
_MAX_BACKFILL = 10_000
_SELECTWAIT_RECHECK_NS = 1_000_000_000


def _epoll_wait_numbers() -> frozenset[int]:
    """The system call numbers of epoll waits on this machine (Linux)."""
    import platform

    return frozenset({
        "x86_64": (232, 281, 441),
        "aarch64": (22, 441),
        "riscv64": (22, 441),
        "i686": (256, 319, 441),
        "i386": (256, 319, 441),
    }.get(platform.machine(), ()))


class _SelectWait:
    """Is a thread asleep in epoll on a set that watches a given fd? The
    twin of ext/platform/lw_selectwait_linux.c (see lw_selectwait.h): the
    thread's /proc syscall file (a kept-open fd, one pread) and the epoll
    fd's fdinfo (re-read once a second and when the epoll fd changes)."""

    def __init__(self) -> None:
        self._tid = 0
        self._watched = -1
        self._fd = -1
        self._epfd = -1
        self._epfd_at = 0
        self._broken = not sys.platform.startswith("linux")
        self._numbers = _epoll_wait_numbers() if not self._broken else frozenset()

    def set(self, tid: int, watched_fd: int) -> None:
        if (tid, watched_fd) == (self._tid, self._watched):
            return
        self.close()
        self._tid, self._watched = tid, watched_fd
        self._broken = not self._numbers

    def close(self) -> None:
        fd, self._fd, self._epfd = self._fd, -1, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def check(self, now_ns: int) -> bool:
        if self._broken or self._tid <= 0 or self._watched < 0:
            return False
        try:
            if self._fd < 0:
                self._fd = os.open(f"/proc/self/task/{self._tid}/syscall",
                                   os.O_RDONLY | os.O_CLOEXEC)
            fields = os.pread(self._fd, 256, 0).split()
        except OSError:
            self._broken = True
            return False
        try:
            if int(fields[0]) not in self._numbers:
                return False
            epfd = int(fields[1], 16)
        except (ValueError, IndexError):
            return False  # "running"
        if epfd != self._epfd or now_ns - self._epfd_at > _SELECTWAIT_RECHECK_NS:
            self._epfd = -1
            try:
                with open(f"/proc/self/fdinfo/{epfd}", "rb") as f:
                    info = f.read(4096)
            except OSError:
                return False
            targets = {line.split()[1] for line in info.splitlines()
                       if line.startswith(b"tfd:") and len(line.split()) > 1}
            if str(self._watched).encode() not in targets:
                return False
            self._epfd, self._epfd_at = epfd, now_ns
        return True


def _open_ping() -> tuple[int, int]:
    """(read fd, write fd) of a ping: an eventfd where there is one, else
    a pipe; non-blocking, close-on-exec (lw_ping.h)."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


class _PyCore:
    """The sampler: a Python thread sampling the heartbeat's staleness every
    resolution into the active one of two lag histograms (microseconds)."""

    thread_cpu_supported = hasattr(time, "pthread_getcpuclockid")
    #: The sampler needs the GIL: its lateness does not tell a stopped
    #: process from a loop thread holding the GIL.
    sampler_needs_gil = True

    def __init__(self, resolution_ns: int, threshold_ns: int, lag_a: Histogram,
                 lag_b: Histogram) -> None:
        if resolution_ns <= 0 or threshold_ns < resolution_ns or lag_a is lag_b:
            raise ValueError("invalid sampler configuration")
        self._res = resolution_ns
        self._thr = threshold_ns
        self._lag = (lag_a, lag_b)
        self._heartbeat = time.monotonic_ns()
        self._paused = False
        self._samples = 0
        self._dropped = 0
        self._stall_id = 0
        self._cpu_clock: int | None = None
        self._native_id: int | None = None
        self._schedstat_fd = -1  # the loop thread's /proc schedstat (Linux)
        # The loop thread's (CPU, run delay) at the last pass and when: a
        # stall seen late starts from there (see _begin_stall).
        self._times: tuple[int | None, int | None] = (None, None)
        self._times_at = 0
        self._ping: tuple[int, int] | None = None  # (read fd, write fd), kept
        self._ping_on = False
        self._ping_sent = 0
        self._pings_sent = 0
        self._pings_skipped = 0
        self._idle_answers = 0  # delay samples of 0: pings a proved-idle loop was spared
        self._spare_idle = True
        self._selectwait = _SelectWait()
        self._init_sync()

    def stall_reader(self) -> tuple[int, int] | None:
        """The native core's C reader of the stall clock; the twin has none."""
        return None

    def __del__(self) -> None:
        # Every fd the core opened: the ping, and the loop thread's /proc
        # files (schedstat, and the syscall file the idle check reads).
        ping, self._ping = getattr(self, "_ping", None), None
        fds = set(ping) if ping is not None else set()
        schedstat, self._schedstat_fd = getattr(self, "_schedstat_fd", -1), -1
        if schedstat >= 0:
            fds.add(schedstat)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        selectwait = getattr(self, "_selectwait", None)
        if selectwait is not None:
            selectwait.close()

    def _init_sync(self) -> None:
        self._active = 0
        self._record_lock = threading.Lock()  # the Recorder swap
        self._mutex = threading.Lock()
        self._tick_cond = threading.Condition(self._mutex)
        self._event_cond = threading.Condition(self._mutex)
        self._events: deque[Event] = deque()
        self._stopping = True
        self._thread: threading.Thread | None = None
        self._in_stall = False
        self._stall_heartbeat = 0
        self._suspended = False
        self._suspended_at = 0
        self._suspended_heartbeat = 0
        self._credit_heartbeat = -1
        self._credit = 0

    # -- sampler thread -----------------------------------------------------
    def start(self, paused: bool) -> None:
        with self._mutex:
            if self._thread is not None:
                raise RuntimeError("sampler already running")
            if self._suspended:
                raise RuntimeError("sampler suspended")
            self._stopping = False
            self._in_stall = False
            self._credit_heartbeat, self._credit = -1, 0
            self._events.clear()
            self._heartbeat = time.monotonic_ns()
            self._paused = paused
            self._thread = threading.Thread(target=self._run, name="loopwatch-sampler",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._mutex:
            if ((self._thread is not None and not self._stopping) or self._suspended) \
                    and self._in_stall:
                now = time.monotonic_ns()
                self._end_stall(now, now)  # every START gets its END
            self._suspended = False
            self._stopping = True
            thread, self._thread = self._thread, None
            self._tick_cond.notify_all()
            self._event_cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def suspend(self) -> bool:
        """Before a fork: join the sampler, keeping its stall state and
        queue; True if one ran."""
        with self._mutex:
            thread = self._thread
            if thread is None or self._stopping:
                return False
            self._stopping = self._suspended = True
            self._tick_cond.notify_all()
            self._event_cond.notify_all()
        if thread is not threading.current_thread():
            thread.join()
        with self._mutex:
            self._suspended_at = time.monotonic_ns()
            self._suspended_heartbeat = self._heartbeat
        return True

    def resume_thread(self) -> None:
        """After the fork, in the parent: a new sampler thread goes on; the
        time suspended is not the heartbeat's staleness (see lw_loop.h)."""
        with self._mutex:
            if not self._suspended:
                return
            if self._heartbeat == self._suspended_heartbeat:
                if self._credit_heartbeat != self._suspended_heartbeat:
                    self._credit_heartbeat, self._credit = self._suspended_heartbeat, 0
                self._credit += time.monotonic_ns() - self._suspended_at
            self._suspended = self._stopping = False
            self._thread = threading.Thread(target=self._run, name="loopwatch-sampler",
                                            daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def read_live(self) -> tuple[bool, bool, bool, int, int, int, int]:
        """(sampling, loop_running, in_stall, stall_id, stall_started_ns,
        heartbeat_ns, samples): what the sampler knows now."""
        with self._mutex:
            sampling = (self._thread is not None and not self._stopping) or self._suspended
            in_stall = sampling and self._in_stall
            started = self._stall_heartbeat + self._res if in_stall else 0
            return (sampling, not self._paused, in_stall, self._stall_id, started,
                    self._heartbeat, self._samples)

    def _run(self) -> None:
        res = self._res
        prev_heartbeat = self._heartbeat
        tick = time.monotonic_ns() + res
        with self._mutex:
            while not self._stopping:
                now = time.monotonic_ns()
                if now < tick:
                    self._tick_cond.wait((tick - now) / 1e9)
                    continue
                tick, prev_heartbeat = self._sample(tick, now, prev_heartbeat)

    def _staleness(self, at: int, heartbeat: int) -> int:
        stale = at - heartbeat - self._res
        if heartbeat == self._credit_heartbeat:
            stale -= self._credit  # time suspended around a fork: not sampled
        return stale

    def _record(self, staleness_ns: int) -> None:
        with self._record_lock:
            self._lag[self._active].record(staleness_ns // 1000 if staleness_ns > 0 else 0)
        self._samples += 1

    def _sample(self, tick: int, now: int, prev_heartbeat: int) -> tuple[int, int]:
        res = self._res
        due = (now - tick) // res + 1
        late = now - tick
        heartbeat = self._heartbeat
        if self._paused:
            if self._in_stall:
                self._end_stall(now, now)
            return now + res, heartbeat
        if due > 1:
            missed = due - 1
            for i in range(missed - min(missed, _MAX_BACKFILL), missed):
                at = tick + i * res
                known = heartbeat if heartbeat <= at else prev_heartbeat
                stale = self._staleness(at, known)
                self._record(stale)
                if not self._in_stall and stale > self._thr:
                    self._begin_stall(known, now, late)
        stale = self._staleness(now, heartbeat)
        self._record(stale)
        if self._in_stall and heartbeat != self._stall_heartbeat:
            self._end_stall(heartbeat, now)
        if not self._in_stall and stale > self._thr:
            self._begin_stall(heartbeat, now, late)
        if self._ping_on and self._ping is not None:
            self._ping_or_skip(now)
        if not self._in_stall:
            # The baseline of the next stall's cause: this sampler needs the
            # GIL, so it sees a GIL-holding stall only after it; the loop
            # thread's times from before it tell what it did meanwhile.
            self._times, self._times_at = self.loop_thread_times(), time.monotonic_ns()
        return tick + due * res, heartbeat

    def _ping_or_skip(self, now: int) -> None:
        """Ping the loop if it answered the last ping, unless it is asleep
        in its selector (then that is its answer; see lw_loop.c)."""
        assert self._ping is not None
        if self._heartbeat < self._ping_sent:
            return
        if self._spare_idle and self._selectwait.check(now):
            self._heartbeat = max(self._heartbeat, now)
            self._pings_skipped += 1
            self._idle_answers += 1
            return
        self._ping_sent = now
        try:
            os.write(self._ping[1], b"\x01\0\0\0\0\0\0\0")
        except BlockingIOError:
            pass  # pending already
        except OSError:
            return
        self._pings_sent += 1

    # -- the ping (see lw_loop.h) --------------------------------------------
    def ping_fd(self) -> int:
        """The fd the loop watches for the sampler's pings (opened once)."""
        with self._mutex:
            if self._ping is None:
                self._ping = _open_ping()
                self._selectwait.set(self._native_id or 0, self._ping[0])
            return self._ping[0]

    def set_ping(self, on: bool) -> None:
        self._ping_on = on

    def poke(self) -> None:
        """One ping now, from any thread: wakes the loop."""
        if self._ping is not None:
            try:
                os.write(self._ping[1], b"\x01\0\0\0\0\0\0\0")
            except OSError:
                pass

    def ping_answer(self, now_ns: int) -> int:
        """The loop thread: drain the ping and beat; how long the ping had
        waited (ns), or -1 if none was pending."""
        got = False
        if self._ping is not None:
            try:
                got = bool(os.read(self._ping[0], 4096))
            except OSError:
                pass
        self._heartbeat = now_ns
        sent = self._ping_sent
        if not got or sent <= 0:
            return -1
        return max(0, now_ns - sent)

    def take_idle_answers(self) -> int:
        """The pings not sent since the last call because the loop was
        proved idle: delay samples of 0 (see lw_loop.h)."""
        with self._mutex:
            taken, self._idle_answers = self._idle_answers, 0
        return taken

    def ping_counts(self) -> tuple[int, int, int]:
        """(pings sent, pings skipped, idle sleeps: none, the twin samples
        every resolution)."""
        return self._pings_sent, self._pings_skipped, 0

    def sampler_table(self) -> str | None:
        """The sampler thread's fd table: "shared" while it runs (a Python
        thread never leaves the process's table), else None."""
        return "shared" if self.running else None

    def set_spare_idle(self, on: bool) -> None:
        """Off: ping the loop every resolution even when it is proved asleep
        in its selector."""
        self._spare_idle = bool(on)

    def set_wake_watch(self, on: bool) -> None:
        """Nothing to set: the twin's sampler never sleeps with the loop."""

    def wake_watch(self) -> str | None:
        """None: the twin's sampler never sleeps with the loop (it needs
        the GIL for every pass)."""
        return None

    def _push(self, event: Event) -> None:
        if len(self._events) >= _QUEUE:
            self._dropped += 1
            return
        self._events.append(event)
        self._event_cond.notify_all()

    def _begin_stall(self, heartbeat: int, now: int, late: int) -> None:
        self._in_stall = True
        self._stall_id += 1
        self._stall_heartbeat = heartbeat
        cpu, run_delay = self._times
        # (cpu_ns, at_ns, state, run_delay_ns, sampler_late_ns): the loop
        # thread's times at the last pass before the stall was seen; its
        # state now is of no use (the GIL came back: the stall may be over).
        readings = (cpu, self._times_at, None, run_delay, max(0, late)) if cpu is not None \
            else None
        self._push((START, self._stall_id, heartbeat, heartbeat + self._res, now,
                    now - heartbeat - self._res, readings))

    def _end_stall(self, end: int, now: int) -> None:
        start = self._stall_heartbeat
        self._in_stall = False
        self._push((END, self._stall_id, start, start + self._res, now,
                    max(0, end - start - self._res), None))

    # -- the loop thread ----------------------------------------------------
    def heartbeat(self, now_ns: int) -> None:
        self._heartbeat = now_ns

    def pause(self) -> None:
        self._paused = True

    def resume(self, now_ns: int) -> None:
        self._heartbeat = now_ns
        self._paused = False

    def last_heartbeat_ns(self) -> int:
        return self._heartbeat

    def capture_loop_thread(self) -> None:
        self._cpu_clock = None
        if self.thread_cpu_supported:
            try:
                self._cpu_clock = time.pthread_getcpuclockid(threading.get_ident())
            except OSError:
                pass
        native_id = threading.get_native_id()
        if self._ping is not None:
            with self._mutex:
                self._selectwait.set(native_id, self._ping[0])
        if native_id != self._native_id:
            self._native_id = native_id
            fd, self._schedstat_fd = self._schedstat_fd, -1
            if fd >= 0:
                os.close(fd)
            try:  # Linux: on-CPU time and run-queue wait of the loop thread
                self._schedstat_fd = os.open(f"/proc/self/task/{native_id}/schedstat",
                                             os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass

    def loop_thread_times(self) -> tuple[int | None, int | None]:
        """The loop thread's (CPU ns, ns waited for a CPU while runnable):
        /proc/self/task/<tid>/schedstat where there is one, else the CPU
        clock and no run delay."""
        fd = self._schedstat_fd
        if fd >= 0:
            try:
                fields = os.pread(fd, 128, 0).split()
                return int(fields[0]), int(fields[1])
            except (OSError, ValueError, IndexError):
                pass
        return self.loop_thread_cpu_ns(), None

    def loop_thread_state(self) -> str | None:
        """The loop thread's scheduler state letter now, or None."""
        return read_thread_state(self._native_id)

    def loop_thread_cpu_ns(self) -> int | None:
        if self._cpu_clock is None:
            return None
        try:
            return time.clock_gettime_ns(self._cpu_clock)
        except OSError:
            return None

    # -- the reporter and the reader ----------------------------------------
    def wait_event(self, timeout: float | None) -> Event | None | bool | str:
        """An event, None on timeout, False once stopped and drained,
        SUSPENDED while suspended for a fork."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mutex:
            while True:
                if self._suspended:
                    return SUSPENDED
                if self._events:
                    return self._events.popleft()
                if self._stopping:
                    return False
                if deadline is None:
                    self._event_cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._event_cond.wait(left)

    def swap_lag(self) -> int:
        with self._record_lock:
            was = self._active
            self._active = 1 - was
        return was

    def sample_count(self) -> int:
        return self._samples

    def dropped_events(self) -> int:
        return self._dropped

    def after_fork_child(self) -> None:
        self._init_sync()
        # The ping is shared with the parent, whose loop watches it: left
        # open (the child's copy of the loop may list it), not used here.
        self._ping, self._ping_on, self._ping_sent = None, False, 0
        self._selectwait.close()  # the child's copy of the parent thread's file
        self._selectwait = _SelectWait()
        fd, self._schedstat_fd, self._native_id = self._schedstat_fd, -1, None
        if fd >= 0:  # the parent's thread's
            try:
                os.close(fd)
            except OSError:
                pass


class _PyTick:
    """The loop callback: every resolution, store the heartbeat and record
    the callback's own firing delay (microseconds) into the active delay
    histogram."""

    def __init__(self, core: _PyCore, loop: Any, resolution: float, delay_a: Histogram,
                 delay_b: Histogram, delay_index: int = 0) -> None:
        self._core = core
        self._loop = loop
        self._res = resolution
        self._res_ns = max(1, round(resolution * 1e9))
        self._delay = (delay_a, delay_b)
        self._index = delay_index
        self._lock = threading.Lock()
        self._active = False
        self._handle: Any = None
        self._expected = 0
        self.thread_id: int | None = None

    @property
    def delay_index(self) -> int:
        return self._index

    def arm(self) -> None:
        """In the loop thread: (re)start ticking from now."""
        if self._handle is not None:
            self._handle.cancel()
        self.thread_id = threading.get_ident()
        self._core.capture_loop_thread()
        now = time.monotonic_ns()
        self._core.resume(now)
        self._expected = now + self._res_ns
        self._active = True
        self._handle = self._loop.call_later(self._res, self)

    def disarm(self) -> None:
        """In the loop thread: stop ticking (the loop stops running)."""
        self._active = False
        self._core.pause()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def disarm_from_any_thread(self) -> None:
        """Stop ticking; a pending tick fires once and does nothing."""
        self._active = False
        self._core.pause()

    def deactivate(self) -> None:
        self._active = False

    def __call__(self) -> None:
        if not self._active:
            return
        now = time.monotonic_ns()
        late = now - self._expected
        with self._lock:
            self._delay[self._index].record(late // 1000 if late > 0 else 0)
        self._core.heartbeat(now)
        self._expected = now + self._res_ns
        self._handle = self._loop.call_later(self._res, self)

    def swap_delay(self) -> int:
        with self._lock:
            was = self._index
            self._index = 1 - was
        return was

    def after_fork_child(self) -> None:
        self._lock = threading.Lock()
        self._active = False
        self._handle = None


class _PyPing:
    """The loop's answer to the sampler's ping: a reader callback on the
    ping's fd that drains it, beats, and records how long the ping waited
    (the delay, microseconds). Nothing runs in the loop between pings."""

    def __init__(self, core: _PyCore, loop: Any, resolution: float, delay_a: Histogram,
                 delay_b: Histogram, delay_index: int = 0) -> None:
        self._core = core
        self._loop = loop
        self._fd = core.ping_fd()
        self._delay = (delay_a, delay_b)
        self._index = delay_index
        self._lock = threading.Lock()
        self._active = False
        self._reading = False
        self.thread_id: int | None = None

    @property
    def delay_index(self) -> int:
        return self._index

    def arm(self) -> None:
        """In the loop thread: watch the ping from now (the loop runs)."""
        self.thread_id = threading.get_ident()
        self._core.capture_loop_thread()
        self._core.resume(time.monotonic_ns())
        self._loop.add_reader(self._fd, self)
        self._reading = True
        self._active = True
        self._core.set_ping(True)

    def disarm(self) -> None:
        """In the loop thread: stop answering (the loop stops running)."""
        self._active = False
        self._core.set_ping(False)
        self._core.pause()
        self._unwatch()

    def _unwatch(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def disarm_from_any_thread(self) -> None:
        """Stop answering; the loop removes the reader at its next call,
        which a ping sent now brings."""
        self._active = False
        self._core.set_ping(False)
        self._core.pause()
        self._core.poke()

    def deactivate(self) -> None:
        self._active = False
        self._core.set_ping(False)
        self._core.poke()

    def __call__(self) -> None:
        if not self._active:
            self._core.ping_answer(time.monotonic_ns())  # drain it
            self._unwatch()
            return
        waited = self._core.ping_answer(time.monotonic_ns())
        if waited >= 0:
            with self._lock:
                self._delay[self._index].record(waited // 1000)

    def swap_delay(self) -> int:
        """Swap the delay histograms; the index of the one drained, which
        first gets the idle answers (0) counted since the last swap."""
        idle = self._core.take_idle_answers()
        with self._lock:
            was = self._index
            if idle:
                self._delay[was].record(0, idle)
            self._index = 1 - was
        return was

    def after_fork_child(self) -> None:
        # The loop's reader is the parent's too (a forked epoll set is
        # shared): never touch it here.
        self._lock = threading.Lock()
        self._active = False
        self._reading = False


class _PySelectTimer:
    """Wraps a selector's select() and adds up the time spent inside it;
    once inactive (its monitor stopped), a pure pass-through."""

    def __init__(self) -> None:
        self._select: Any = None
        self._waited = 0
        self._since = 0
        self.active = True
        self.link: Any = None  # the monitor's bookkeeping of the wrapper chain

    def wrap(self, select: Callable[[float | None], Any]) -> None:
        self._select = select

    def select(self, timeout: float | None = None) -> Any:
        # A poll (timeout 0: the loop has callbacks ready) does not wait:
        # it is busy time, and needs no clock.
        if not self.active or (timeout is not None and not timeout):
            return self._select(timeout)
        start = time.monotonic_ns()
        self._since = start
        try:
            return self._select(timeout)
        finally:
            self._since = 0
            self._waited += time.monotonic_ns() - start

    def waited_ns(self, now: int) -> int:
        since = self._since
        return self._waited + (max(0, now - since) if since else 0)


class LoopMonitor(LoopMonitorBase):
    __doc__ = LoopMonitorBase.__doc__
    _Core = _PyCore
    _Tick = _PyTick
    _Ping = _PyPing
    _SelectTimer = _PySelectTimer
    _Histogram = Histogram
    _implementation = "python"


def watch(
    *,
    resolution: float = 0.01,
    stall_threshold: float = 0.1,
    on_stall: Callable[[StallEvent], Any] | None = None,
    capture_stack: bool = True,
    exact_utilization: bool = False,
) -> LoopMonitor:
    """A monitor of the running loop: ``async with loopwatch.watch() as m:``.

    Takes LoopMonitor's options (but no loop: it watches the loop running
    at ``async with``); stops when the block exits.
    """
    return LoopMonitor(None, resolution, stall_threshold, on_stall, capture_stack,
                       exact_utilization)
