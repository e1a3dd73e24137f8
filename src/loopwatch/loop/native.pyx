# cython: language_level=3, boundscheck=False, wraparound=False
"""Native loop monitor: a thin binding over ext/loop/lw_loop.c (the sampler
thread, which never takes the GIL), ext/platform/lw_threadcpu_*.c and
ext/platform/lw_loop_clock_*.c. The shared logic and the documentation are in
loop/monitor.py; loop/twin.py is the pure-Python twin."""

from libc.stdint cimport int64_t

from loopwatch.hdr.native cimport Histogram
from loopwatch.hdr.lw_hdr cimport lw_hdr, lw_hdr_record

import threading

from loopwatch.hdr.native import Histogram as _Histogram
from loopwatch.loop.monitor import SUSPENDED, LoopMonitorBase

__all__ = ["LoopMonitor", "watch"]


cdef extern from "lw_loop_clock.h" nogil:
    int64_t lw_loop_now_ns()

cdef extern from "lw_threadcpu.h" nogil:
    ctypedef struct lw_threadcpu:
        int valid
        int64_t id
        int64_t tid
    int lw_threadcpu_capture_self(lw_threadcpu *t)
    int lw_threadcpu_read_ns(const lw_threadcpu *t, int64_t *out_ns)
    int lw_threadcpu_run_state(const lw_threadcpu *t, char *out_state)

cdef extern from "lw_loop.h" nogil:
    ctypedef struct lw_loop:
        pass
    ctypedef struct lw_loop_event:
        int kind
        int64_t stall_id
        int64_t heartbeat_ns
        int64_t started_ns
        int64_t detected_ns
        int64_t duration_ns
        int64_t cpu_ns
        int64_t sampler_late_ns
        int run_state
    lw_loop *lw_loop_new(int64_t resolution_ns, int64_t threshold_ns, lw_hdr *a, lw_hdr *b)
    void lw_loop_free(lw_loop *m)
    int lw_loop_start(lw_loop *m, int paused)
    void lw_loop_stop(lw_loop *m)
    int lw_loop_running(const lw_loop *m)
    int lw_loop_suspend(lw_loop *m)
    int lw_loop_resume_thread(lw_loop *m)
    void lw_loop_set_loop_thread(lw_loop *m, const lw_threadcpu *t)
    void lw_loop_heartbeat(lw_loop *m, int64_t now_ns)
    void lw_loop_pause(lw_loop *m)
    void lw_loop_resume(lw_loop *m, int64_t now_ns)
    int64_t lw_loop_last_heartbeat(const lw_loop *m)
    int lw_loop_wait_event(lw_loop *m, int64_t timeout_ns, lw_loop_event *out)
    lw_hdr *lw_loop_swap_lag(lw_loop *m)
    int64_t lw_loop_sample_count(const lw_loop *m)
    int64_t lw_loop_dropped_events(const lw_loop *m)
    void lw_loop_after_fork_child(lw_loop *m)
    int lw_loop_ping_fd(lw_loop *m)
    void lw_loop_set_ping(lw_loop *m, int on)
    int64_t lw_loop_ping_answer(lw_loop *m, int64_t now_ns)
    void lw_loop_ping_poke(lw_loop *m)
    int64_t lw_loop_take_idle_answers(lw_loop *m)
    void lw_loop_ping_counts(const lw_loop *m, int64_t *sent, int64_t *skipped, int64_t *sleeps)
    int lw_loop_sampler_table(const lw_loop *m)
    void lw_loop_set_spare_idle(lw_loop *m, int on)
    void lw_loop_set_wakewatch(lw_loop *m, int on)
    int lw_loop_wakewatch_state(const lw_loop *m)
    ctypedef struct lw_loop_live:
        int running
        int paused
        int in_stall
        int64_t stall_id
        int64_t stall_started_ns
        int64_t heartbeat_ns
        int64_t resolution_ns
        int64_t threshold_ns
        int64_t samples
    void lw_loop_read_live(const lw_loop *m, lw_loop_live *out)
    int64_t lw_loop_stalled_ns(const lw_loop *m, int64_t now_ns)


def now_ns():
    """The sampler's clock (the one behind time.monotonic_ns())."""
    return lw_loop_now_ns()


cdef class _NativeCore:
    """The native sampler: owns the lw_loop and keeps its histograms alive."""

    cdef lw_loop *_m
    cdef Histogram _lag_a
    cdef Histogram _lag_b
    cdef lw_threadcpu _cpu
    cdef public int64_t last_gil_wait_ns
    cdef public int64_t last_wake_cpu_ns

    thread_cpu_supported = True
    #: The sampler samples without the GIL: its own lateness means the
    #: process (not just Python code) could not run.
    sampler_needs_gil = False

    def __cinit__(self, int64_t resolution_ns, int64_t threshold_ns, Histogram lag_a not None,
                  Histogram lag_b not None):
        self._lag_a = lag_a
        self._lag_b = lag_b
        self._cpu.valid = 0
        self.last_wake_cpu_ns = -1
        self._m = lw_loop_new(resolution_ns, threshold_ns, lag_a._h, lag_b._h)
        if self._m is NULL:
            if resolution_ns <= 0 or threshold_ns < resolution_ns or lag_a is lag_b:
                raise ValueError("invalid sampler configuration")
            raise MemoryError()

    def __dealloc__(self):
        if self._m is not NULL:
            with nogil:
                lw_loop_free(self._m)  # joins the sampler first
            self._m = NULL

    def start(self, bint paused):
        cdef int err = lw_loop_start(self._m, paused)
        if err != 0:
            raise OSError(err, "cannot start the loop sampler thread")

    def stop(self):
        with nogil:
            lw_loop_stop(self._m)

    @property
    def running(self):
        return bool(lw_loop_running(self._m))

    def suspend(self):
        """Before a fork: join the sampler, keeping its stall state and
        queue; True if one ran."""
        cdef int got
        with nogil:
            got = lw_loop_suspend(self._m)
        return bool(got)

    def resume_thread(self):
        """After the fork, in the parent: a new sampler thread goes on."""
        cdef int err = lw_loop_resume_thread(self._m)
        if err != 0:
            raise OSError(err, "cannot restart the loop sampler thread")

    cdef inline void heartbeat(self, int64_t now) noexcept:
        lw_loop_heartbeat(self._m, now)

    def pause(self):
        lw_loop_pause(self._m)

    def resume(self, int64_t now_ns):
        lw_loop_resume(self._m, now_ns)

    def last_heartbeat_ns(self):
        return lw_loop_last_heartbeat(self._m)

    def capture_loop_thread(self):
        """In the loop thread: remember it, for its CPU time (the sampler
        reads it too, with its scheduler state, when it sees a stall)."""
        lw_threadcpu_capture_self(&self._cpu)
        lw_loop_set_loop_thread(self._m, &self._cpu)

    def loop_thread_cpu_ns(self):
        cdef int64_t ns = 0
        if lw_threadcpu_read_ns(&self._cpu, &ns) != 0:
            return None
        return ns

    def loop_thread_times(self):
        """The loop thread's (CPU ns, run delay ns): no run delay here."""
        return self.loop_thread_cpu_ns(), None

    def loop_thread_state(self):
        """The loop thread's scheduler state letter now ('R', 'S', ...), or
        None when it cannot be read."""
        cdef char state = 0
        if lw_threadcpu_run_state(&self._cpu, &state) != 0 or state == 0:
            return None
        return chr(<unsigned char>state)

    def wait_event(self, timeout):
        """An event tuple, None on timeout, False once stopped and drained,
        SUSPENDED while suspended for a fork. Waits without the GIL."""
        cdef lw_loop_event ev
        cdef int got
        cdef int64_t woke
        cdef int64_t cpu_woke = -1
        cdef int64_t timeout_ns = -1 if timeout is None else <int64_t>(timeout * 1e9)
        with nogil:
            got = lw_loop_wait_event(self._m, timeout_ns, &ev)
            woke = lw_loop_now_ns()
            if lw_threadcpu_read_ns(&self._cpu, &cpu_woke) != 0:
                cpu_woke = -1
        # How long this thread then waited for the GIL: long when another
        # thread holds it in native code, short when only the machine's
        # load delayed the wake-up (see LoopMonitorBase._take_stack); and
        # the loop thread's CPU time when the wait began (explain_stall:
        # how much it ran while it kept the GIL from this thread).
        self.last_gil_wait_ns = lw_loop_now_ns() - woke
        self.last_wake_cpu_ns = cpu_woke
        if got == -2:
            return SUSPENDED
        if got < 0:
            return False
        if got == 0:
            return None
        readings = None
        if ev.kind == 1:  # START: (cpu_ns, at_ns, state, run_delay_ns, sampler_late_ns)
            readings = (ev.cpu_ns if ev.cpu_ns >= 0 else None, ev.detected_ns,
                        chr(ev.run_state) if 0 < ev.run_state < 128 else None, None,
                        ev.sampler_late_ns)
        return (ev.kind, ev.stall_id, ev.heartbeat_ns, ev.started_ns, ev.detected_ns,
                ev.duration_ns, readings)

    def swap_lag(self):
        """Swap the interval lag histograms; the index of the one drained."""
        cdef lw_hdr *old
        with nogil:
            old = lw_loop_swap_lag(self._m)
        return 0 if old == self._lag_a._h else 1

    def sample_count(self):
        return lw_loop_sample_count(self._m)

    def read_live(self):
        """(sampling, loop_running, in_stall, stall_id, stall_started_ns,
        heartbeat_ns, samples): what the sampler knows now."""
        cdef lw_loop_live live
        with nogil:
            lw_loop_read_live(self._m, &live)
        return (bool(live.running), not live.paused, bool(live.running and live.in_stall),
                live.stall_id, live.stall_started_ns, live.heartbeat_ns, live.samples)

    def _address(self):
        """The lw_loop's address, for the native status server, which reads
        its live figures without the GIL (it keeps this core alive while
        it does)."""
        return <size_t>self._m

    def stall_reader(self):
        """``(function, context)`` addresses for reading the loop's stall
        clock from C without the GIL (``lw_loop_stalled_ns(context, now)``),
        for a native session table that measures ages in unstalled time; it
        must keep this core alive while it reads. The twin has none (None)."""
        return (<size_t>&lw_loop_stalled_ns, <size_t>self._m)

    def dropped_events(self):
        return lw_loop_dropped_events(self._m)

    def after_fork_child(self):
        lw_loop_after_fork_child(self._m)

    def ping_fd(self):
        """The fd the loop watches for the sampler's pings (opened once)."""
        cdef int fd = lw_loop_ping_fd(self._m)
        if fd < 0:
            raise OSError(-fd, "cannot open the loop monitor's ping")
        return fd

    def set_ping(self, bint on):
        """Ping mode on (the sampler pings, the loop answers) or off."""
        lw_loop_set_ping(self._m, on)

    def poke(self):
        """One ping now, from any thread: wakes the loop."""
        lw_loop_ping_poke(self._m)

    def ping_counts(self):
        """(pings sent, pings skipped because the loop was idle in its
        selector, idle sleeps) since the core was made."""
        cdef int64_t sent = 0, skipped = 0, sleeps = 0
        lw_loop_ping_counts(self._m, &sent, &skipped, &sleeps)
        return sent, skipped, sleeps

    def sampler_table(self):
        """The running sampler thread's fd table: "own" (it left the
        process's table: Linux), "shared", or None (no sampler runs, or it
        has not started yet)."""
        cdef int t = lw_loop_sampler_table(self._m)
        return "own" if t == 1 else "shared" if t == 0 else None

    def set_spare_idle(self, bint on):
        """Off: ping the loop every resolution even when it is proved asleep
        in its selector (benchmarks measure what a ping costs an idle
        loop)."""
        lw_loop_set_spare_idle(self._m, on)

    def set_wake_watch(self, bint on):
        """Off: idle sleeps poll the loop's epoll fd (at most 2 x
        resolution) even where io_uring could watch it (tests of the path
        macOS and io_uring-less systems take)."""
        lw_loop_set_wakewatch(self._m, on)

    def wake_watch(self):
        """How idle sleeps wait: "io_uring", "poll", or None (no idle
        sleep yet)."""
        cdef int state = lw_loop_wakewatch_state(self._m)
        return "io_uring" if state == 1 else "poll" if state == -1 else None


cdef class _NativePing:
    """The loop's answer to the sampler's ping: a reader callback on the
    ping's fd (add_reader, asyncio and uvloop alike) that drains it, stores
    the heartbeat in native memory and records how long the ping waited
    (the delay, microseconds). Nothing runs between pings: no timer, no
    wrapper. It runs with the GIL, which also makes its index read and its
    recording one step with respect to swap_delay()."""

    cdef _NativeCore _core
    cdef object _loop
    cdef readonly int _fd  # the ping's fd the loop watches
    cdef Histogram _delay_a
    cdef Histogram _delay_b
    cdef lw_hdr *_delay[2]
    cdef int _index
    cdef bint _active
    cdef bint _reading
    cdef public object thread_id

    def __cinit__(self, _NativeCore core not None, loop, double resolution,
                  Histogram delay_a not None, Histogram delay_b not None, int delay_index=0):
        self._core = core
        self._loop = loop
        self._fd = core.ping_fd()
        self._delay_a = delay_a
        self._delay_b = delay_b
        self._delay[0] = delay_a._h
        self._delay[1] = delay_b._h
        self._index = delay_index & 1
        self._active = False
        self._reading = False
        self.thread_id = None

    @property
    def delay_index(self):
        return self._index

    def arm(self):
        """In the loop thread: watch the ping from now (the loop runs)."""
        self.thread_id = threading.get_ident()
        self._core.capture_loop_thread()
        lw_loop_resume(self._core._m, lw_loop_now_ns())
        self._loop.add_reader(self._fd, self)
        self._reading = True
        self._active = True
        lw_loop_set_ping(self._core._m, 1)

    def disarm(self):
        """In the loop thread: stop answering (the loop stops running)."""
        self._active = False
        lw_loop_set_ping(self._core._m, 0)
        lw_loop_pause(self._core._m)
        self._unwatch()

    cdef _unwatch(self):
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def disarm_from_any_thread(self):
        """Stop answering; the loop removes the reader at its next call,
        which a ping sent now brings."""
        self._active = False
        lw_loop_set_ping(self._core._m, 0)
        lw_loop_pause(self._core._m)
        lw_loop_ping_poke(self._core._m)

    def deactivate(self):
        self._active = False
        lw_loop_set_ping(self._core._m, 0)
        lw_loop_ping_poke(self._core._m)

    def __call__(self):
        cdef int64_t waited
        if not self._active:
            lw_loop_ping_answer(self._core._m, lw_loop_now_ns())  # drain it
            self._unwatch()
            return
        waited = lw_loop_ping_answer(self._core._m, lw_loop_now_ns())
        if waited >= 0:
            lw_hdr_record(self._delay[self._index], waited // 1000, 1)

    def swap_delay(self):
        """Swap the delay histograms; the index of the one drained, which
        first gets the idle answers (0) counted since the last swap."""
        cdef int was = self._index
        cdef int64_t idle = lw_loop_take_idle_answers(self._core._m)
        if idle > 0:
            lw_hdr_record(self._delay[was], 0, idle)
        self._index = 1 - was
        return was

    def after_fork_child(self):
        # The loop's reader is the parent's too (a forked epoll set is
        # shared): never touch it here.
        self._active = False
        self._reading = False


cdef class _NativeTick:
    """The loop callback: every resolution, store the heartbeat in native
    memory and record the callback's own firing delay (microseconds). It
    runs with the GIL, which also makes its index read and its recording
    one step with respect to swap_delay()."""

    cdef _NativeCore _core
    cdef object _loop
    cdef object _call_later
    cdef double _res
    cdef int64_t _res_ns
    cdef int64_t _expected
    cdef Histogram _delay_a
    cdef Histogram _delay_b
    cdef lw_hdr *_delay[2]
    cdef int _index
    cdef bint _active
    cdef object _handle
    cdef public object thread_id

    def __cinit__(self, _NativeCore core not None, loop, double resolution,
                  Histogram delay_a not None, Histogram delay_b not None, int delay_index=0):
        self._core = core
        self._loop = loop
        self._call_later = loop.call_later
        self._res = resolution
        self._res_ns = max(1, <int64_t>(resolution * 1e9 + 0.5))
        self._delay_a = delay_a
        self._delay_b = delay_b
        self._delay[0] = delay_a._h
        self._delay[1] = delay_b._h
        self._index = delay_index & 1
        self._active = False
        self._handle = None
        self.thread_id = None

    @property
    def delay_index(self):
        return self._index

    def arm(self):
        """In the loop thread: (re)start ticking from now."""
        if self._handle is not None:
            self._handle.cancel()
        self.thread_id = threading.get_ident()
        self._core.capture_loop_thread()
        cdef int64_t now = lw_loop_now_ns()
        lw_loop_resume(self._core._m, now)
        self._expected = now + self._res_ns
        self._active = True
        self._handle = self._call_later(self._res, self)

    def disarm(self):
        """In the loop thread: stop ticking (the loop stops running)."""
        self._active = False
        lw_loop_pause(self._core._m)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def disarm_from_any_thread(self):
        """Stop ticking; a pending tick fires once and does nothing."""
        self._active = False
        lw_loop_pause(self._core._m)

    def deactivate(self):
        self._active = False

    def __call__(self):
        if not self._active:
            return
        cdef int64_t now = lw_loop_now_ns()
        cdef int64_t late = now - self._expected
        lw_hdr_record(self._delay[self._index], late // 1000 if late > 0 else 0, 1)
        lw_loop_heartbeat(self._core._m, now)
        self._expected = now + self._res_ns
        self._handle = self._call_later(self._res, self)

    def swap_delay(self):
        cdef int was = self._index
        self._index = 1 - was
        return was

    def after_fork_child(self):
        self._active = False
        self._handle = None


cdef class _NativeSelectTimer:
    """Wraps a selector's select() and adds up the time spent inside it;
    once inactive (its monitor stopped), a pure pass-through."""

    cdef object _select
    cdef int64_t _waited
    cdef int64_t _since
    cdef public bint active
    cdef public object link  # the monitor's bookkeeping of the wrapper chain

    def __cinit__(self):
        self.active = True

    def wrap(self, select):
        self._select = select

    def select(self, timeout=None):
        # A poll (timeout 0: the loop has callbacks ready) does not wait:
        # it is busy time, and needs no clock.
        if not self.active or (timeout is not None and not timeout):
            return self._select(timeout)
        cdef int64_t start = lw_loop_now_ns()
        self._since = start
        try:
            return self._select(timeout)
        finally:
            self._since = 0
            self._waited += lw_loop_now_ns() - start

    def waited_ns(self, int64_t now):
        cdef int64_t since = self._since
        return self._waited + ((now - since if now > since else 0) if since else 0)


class LoopMonitor(LoopMonitorBase):
    __doc__ = LoopMonitorBase.__doc__
    _Core = _NativeCore
    _Tick = _NativeTick
    _Ping = _NativePing
    _SelectTimer = _NativeSelectTimer
    _Histogram = _Histogram
    _implementation = "native"


def watch(*, resolution=0.01, stall_threshold=0.1, on_stall=None, capture_stack=True,
          exact_utilization=False):
    """A monitor of the running loop: ``async with loopwatch.watch() as m:``.

    Takes LoopMonitor's options (but no loop: it watches the loop running
    at ``async with``); stops when the block exits.
    """
    return LoopMonitor(None, resolution, stall_threshold, on_stall, capture_stack,
                       exact_utilization)
