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

/* In a forked child: the sampler thread does not exist there. Forget it
 * without joining and leave the sampler cleanly stopped (restartable). */
void lw_loop_after_fork_child(lw_loop *m);

#ifdef __cplusplus
}
#endif

#endif
