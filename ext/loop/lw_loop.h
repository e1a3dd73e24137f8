/*
 * lw_loop: the event-loop sampler, a native thread that measures how late
 * an event loop is, from outside the loop, without the Python GIL.
 *
 * The loop runs a tiny callback every `resolution` that stores a heartbeat
 * (monotonic ns, lw_loop_now_ns) with lw_loop_heartbeat(). The sampler
 * thread wakes on a fixed schedule, one tick every `resolution`, and records
 * the loop's staleness at each tick, now - heartbeat - resolution floored at
 * 0, in microseconds, into the active one of two lag histograms. Ticks fall
 * at uniform wall times, so the lag distribution is free of coordinated
 * omission; a tick the sampler missed because it woke late (an overloaded
 * machine) is filled in with the staleness it would have seen, so a late
 * wake-up never hides lag either.
 *
 * When staleness passes `stall_threshold` the sampler queues a STALL_START
 * event while the stall is going on, and a STALL_END event with its duration
 * when the next heartbeat arrives. A reporter thread (Python, in loopwatch)
 * takes them with lw_loop_wait_event(), which blocks without the GIL.
 *
 * Threads and memory. The sampler never calls into Python. Histograms are
 * the caller's: they must outlive the sampler (lw_loop_stop joins it).
 * lw_loop_heartbeat, lw_loop_pause and lw_loop_resume are lock-free and
 * called by the loop thread; everything else may be called from any thread,
 * but lw_loop_swap_lag by one thread at a time (the reader of the
 * interval; HdrHistogram's Recorder pattern: it never blocks the sampler).
 */
#ifndef LW_LOOP_H
#define LW_LOOP_H

#include <stdint.h>

#include "lw_hdr.h"
#include "lw_threadcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_loop lw_loop;

typedef enum lw_loop_event_kind {
    LW_LOOP_STALL_START = 1,
    LW_LOOP_STALL_END = 2
} lw_loop_event_kind;

typedef struct lw_loop_event {
    int kind;               /* lw_loop_event_kind */
    int64_t stall_id;       /* 1, 2, ... per sampler; START and END share it */
    int64_t heartbeat_ns;   /* the last heartbeat before the stall */
    int64_t started_ns;     /* heartbeat + resolution: when the loop became late */
    int64_t detected_ns;    /* when the sampler saw it (START) or saw it end (END) */
    int64_t duration_ns;    /* START: staleness at detection; END: the stall's length */
    /* START only, read by the sampler when it saw the stall (the stall's
     * cause; see lw_loop_set_loop_thread). END: -1, -1, 0. */
    int64_t cpu_ns;          /* the loop thread's CPU time then; -1: unknown */
    int64_t sampler_late_ns; /* how late that sampling pass ran after its due
                              * tick: the sampler itself could not run */
    int run_state;           /* the loop thread's scheduler state letter then
                              * ('R', 'S', 'D', 'T'...); 0: unknown */
} lw_loop_event;

/* resolution_ns > 0, stall_threshold_ns >= resolution_ns; lag_a and lag_b
 * distinct histograms recording microseconds. NULL when out of memory. */
lw_loop *lw_loop_new(int64_t resolution_ns, int64_t stall_threshold_ns,
                     lw_hdr *lag_a, lw_hdr *lag_b);
/* Stops (joins) the sampler first. */
void lw_loop_free(lw_loop *m);

/* Start the sampler thread; the heartbeat is set to now. With paused set it
 * records nothing until lw_loop_resume (the loop is not running yet).
 * 0, or an errno value (EALREADY when running). */
int lw_loop_start(lw_loop *m, int paused);
/* Stop and join the sampler; a stall going on gets its STALL_END (with its
 * length so far); wakes every lw_loop_wait_event caller, which then drain
 * the queue and get -1. Idempotent. */
void lw_loop_stop(lw_loop *m);
int lw_loop_running(const lw_loop *m);

/* Before a fork (in the parent): stop and join the sampler thread, keeping
 * everything lw_loop_start resets: a stall going on (no END is queued for
 * it), the stall ids, the event queue. Event waiters wake and get -2 while
 * suspended (the queue is kept for the next reporter). 1 if a sampler was
 * suspended, 0 if none ran. */
int lw_loop_suspend(lw_loop *m);
/* After the fork (in the parent): a new sampler thread goes on where the
 * old one stopped. The time suspended is unsampled time, not lag: while the
 * heartbeat is the one the sampler had at the suspension, staleness does
 * not count the suspension (no lag sample, no stall comes from it), and a
 * stall going on continues (its END comes when the loop beats again).
 * 0 (also when not suspended), or an errno value: no thread could be
 * created, and the sampler is left stopped as by lw_loop_stop. */
int lw_loop_resume_thread(lw_loop *m);

/* The loop thread: a heartbeat at now_ns. */
void lw_loop_heartbeat(lw_loop *m, int64_t now_ns);
/* The loop stopped running (not stalled): record nothing and report no stall
 * until lw_loop_resume. A stall going on ends now. */
void lw_loop_pause(lw_loop *m);
void lw_loop_resume(lw_loop *m, int64_t now_ns);
int64_t lw_loop_last_heartbeat(const lw_loop *m);
/* The loop's thread (captured in it, lw_threadcpu_capture_self): the
 * sampler reads its CPU time and scheduler state when it sees a stall. */
void lw_loop_set_loop_thread(lw_loop *m, const lw_threadcpu *t);

/* Block until an event is queued (1, *out filled), until timeout_ns passes
 * (0; timeout_ns < 0 waits without limit), until the sampler is stopped
 * and the queue is empty (-1) or while it is suspended (-2, even with
 * events queued: they wait for the reporter of the resumed sampler). */
int lw_loop_wait_event(lw_loop *m, int64_t timeout_ns, lw_loop_event *out);

/* Make the other lag histogram the active one and return the one that was
 * active, once no recording into it is in flight. */
lw_hdr *lw_loop_swap_lag(lw_loop *m);

/* Counters since lw_loop_new: lag samples recorded, and events dropped
 * because the queue was full (nobody took them). */
int64_t lw_loop_sample_count(const lw_loop *m);
int64_t lw_loop_dropped_events(const lw_loop *m);

/* What the sampler knows right now, read by a thread that never needs the
 * GIL (the status server): it answers while the loop thread holds the GIL
 * in native code. */
typedef struct lw_loop_live {
    int running;            /* a sampler thread exists */
    int paused;             /* the loop is not running */
    int in_stall;           /* a stall is going on (its START was queued) */
    int64_t stall_id;       /* the current or last stall's id (0: none yet) */
    int64_t stall_started_ns; /* the current stall: heartbeat + resolution */
    int64_t heartbeat_ns;   /* the loop's last heartbeat */
    int64_t resolution_ns;
    int64_t threshold_ns;
    int64_t samples;        /* lag samples recorded so far */
} lw_loop_live;

void lw_loop_read_live(const lw_loop *m, lw_loop_live *out);

/* The stall clock, from any thread and without the mutex (a sequence
 * count): nanoseconds the loop has spent stalled, the stalls that ended
 * plus the one going on up to now_ns (counted from heartbeat + resolution,
 * once the sampler has seen it pass the threshold). A stall's final length
 * ends at the heartbeat that ended it, so a reading taken during it may
 * exceed the next: a reader that needs a clock keeps the largest. The
 * session table reads this through the pointer LoopMonitor's core hands
 * out (loop/native.pyx, _NativeCore.stall_reader). */
int64_t lw_loop_stalled_ns(const lw_loop *m, int64_t now_ns);
typedef int64_t (*lw_loop_stalled_fn)(const lw_loop *m, int64_t now_ns);

/* Ping mode (the default of LoopMonitor): instead of a timer callback that
 * beats every resolution, the sampler pings the loop after each pass
 * (lw_ping.h), once the loop answered the last ping, and the loop's reader
 * callback answers with lw_loop_ping_answer, which is its heartbeat. So the
 * loop pays one callback per resolution when busy, and none when idle: a
 * loop thread asleep in the selector that watches the ping
 * (lw_selectwait.h) counts as having answered and is not pinged.
 *
 * lw_loop_ping_fd: the fd the loop must watch for reading, opened on first
 * call (or by lw_loop_start) and kept until lw_loop_free; -errno if none
 * could be opened.
 * lw_loop_set_ping: ping mode on or off (off: lw_loop_heartbeat beats).
 * lw_loop_ping_answer (loop thread): drain the ping, beat at now_ns; the
 * ping's age (how long the loop took to answer, ns), or -1 if none pending.
 * lw_loop_ping_poke: one ping now, from any thread (wakes the loop so that
 * a stopped monitor's reader can remove itself).
 * lw_loop_ping_counts: pings sent, pings skipped (the loop was idle in its
 * selector) and idle sleeps taken (see below) so far.
 *
 * Idle sleeps: once a pass proved the loop asleep in its selector, the
 * sampler sleeps until the loop can wake, not every resolution: in poll()
 * on the loop's epoll fd (readable when a fd the loop watches is ready,
 * which wakes the loop too) until the epoll wait's own timeout, and at most
 * the stall threshold (a signal handled in the loop thread wakes it without
 * either). An idle loop costs the process a wake-up per threshold. */
int lw_loop_ping_fd(lw_loop *m);
void lw_loop_set_ping(lw_loop *m, int on);
int64_t lw_loop_ping_answer(lw_loop *m, int64_t now_ns);
void lw_loop_ping_poke(lw_loop *m);
void lw_loop_ping_counts(const lw_loop *m, int64_t *sent, int64_t *skipped, int64_t *sleeps);
/* The pings not sent since the last call because the loop was proved
 * idle (one per tick): delay samples of 0, which the loop's side records
 * (it owns the delay histograms). */
int64_t lw_loop_take_idle_answers(lw_loop *m);

/* The sampler's fd table (lw_fdtable.h): each sampler thread, when it
 * starts (lw_loop_start, lw_loop_resume_thread), leaves the process's fd
 * table where the platform allows, keeping only the ping's write end and
 * its wake fd (so lw_loop_start opens the ping before the thread; a ping
 * first asked for while a sampler runs is refused, EBUSY); it takes the
 * loop's epoll fd for idle sleeps from the process's table when it needs
 * it, and closes everything it opened before it ends. lw_loop_sampler_table:
 * 1 the running sampler has a table of its own, 0 it shares the process's,
 * -1 no sampler runs (or it has not decided yet).
 * lw_loop_set_spare_idle(m, 0): never prove the loop idle, ping it every
 * resolution even asleep in its selector (benchmarks: what a ping costs an
 * idle loop). On by default. */
int lw_loop_sampler_table(const lw_loop *m);
void lw_loop_set_spare_idle(lw_loop *m, int on);
/* Idle sleeps wait on the loop's epoll fd through lw_wakewatch (io_uring)
 * where the system allows it, else in poll() for at most 2 x resolution
 * (see lw_loop.c, idle_sleep). lw_loop_set_wakewatch(m, 0): poll even
 * where io_uring works (tests of that path). lw_loop_wakewatch_state: 1
 * the sampler waits through io_uring, -1 it polls, 0 not decided yet. */
void lw_loop_set_wakewatch(lw_loop *m, int on);
int lw_loop_wakewatch_state(const lw_loop *m);

/* In a forked child: the sampler thread does not exist there. Forget it
 * without joining and leave the sampler cleanly stopped (restartable). */
void lw_loop_after_fork_child(lw_loop *m);

#ifdef __cplusplus
}
#endif

#endif
