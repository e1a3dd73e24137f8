/* The event-loop sampler thread: see lw_loop.h. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lw_fdtable.h"
#include "lw_loop.h"
#include "lw_loop_clock.h"
#include "lw_ping.h"
#include "lw_selectwait.h"
#include "lw_wakewatch.h"

#define LW_LOOP_QUEUE 64
/* Missed ticks filled in after one late wake-up, at most; beyond that (a
 * suspended machine) the gap is one sample, not millions. */
#define LW_LOOP_MAX_BACKFILL 10000
/* How old a proof that the loop waits in its selector may be and still
 * stand for the pass that follows it (the same instant, but for the pass's
 * own few microseconds). */
#define LW_LOOP_PROOF_REUSE_NS 1000000

struct lw_loop {
    int64_t resolution_ns;
    int64_t threshold_ns;
    int64_t idle_check_ns; /* an idle loop is looked at this often (idle_sleep) */
    lw_hdr *lag[2];

    /* Written by the loop thread, read by the sampler: lock-free. */
    _Atomic int64_t heartbeat_ns;
    _Atomic int paused;

    /* Recorder pattern: the sampler records into lag[active]; the swapper
     * flips `active` and waits out a recording in flight, which the sampler
     * brackets by making record_seq odd. */
    _Atomic int active;
    _Atomic uint64_t record_seq;

    _Atomic int64_t samples;
    _Atomic int64_t dropped;

    /* The stall clock, for readers without the mutex (lw_loop_stalled_ns):
     * the lengths of the stalls that ended and the start of the one going
     * on (0: none), under a sequence count (odd while they change). */
    _Atomic uint32_t stall_seq;
    _Atomic int64_t stalled_ns;
    _Atomic int64_t stall_open_ns;

    /* Sampler-private stall state. */
    int in_stall;
    int64_t stall_id;
    int64_t stall_heartbeat;
    /* Time suspended around forks, not sampled: staleness of the heartbeat
     * credit_heartbeat leaves out credit_ns. Under the mutex. */
    int64_t credit_heartbeat;
    int64_t credit_ns;
    int64_t suspended_ns;
    int64_t suspended_heartbeat;
    lw_threadcpu loop_thread; /* under the mutex */

    /* The ping (lw_loop.h): opened once, kept until lw_loop_free, because
     * a loop may still watch it. ping_sent_ns: the last ping sent, which
     * the loop answered once the heartbeat is not older. */
    lw_ping ping;
    _Atomic int ping_on;
    _Atomic int spare_idle; /* prove idle waits (lw_loop_set_spare_idle) */
    _Atomic int64_t ping_sent_ns;
    _Atomic int64_t pings_sent;
    _Atomic int64_t pings_skipped;
    /* What the loop side wants lw_selectwait to watch (the loop thread's
     * id, the ping's fd), under the mutex; the sampler applies it. */
    int64_t sw_tid;
    int sw_fd;
    /* The sampler thread's own state (under the mutex). Its fds are opened
     * and closed by the sampler thread only: with a table of its own
     * (lw_fdtable.h), their numbers mean nothing to any other thread. */
    lw_fdtable fdt;
    _Atomic int table_own; /* -1: no sampler; 0: it shares the table; 1: its own */
    int s_ping_fd;         /* the ping's write end it kept (-1: none, it cannot ping) */
    int s_wake_fd;         /* the wake fd's read end it kept (-1: no idle sleeps) */
    lw_selectwait selectwait;
    int ep_fd;             /* its import of the loop's epoll fd (-1) ... */
    int ep_src;            /* ... whose number in the process's table is this */
    lw_wakewatch ww;       /* waits on ep_fd for idle sleeps where it can */
    int ww_state;          /* 0: not tried, 1: open, -1: not available here */
    _Atomic int ww_allowed; /* lw_loop_set_wakewatch */
    /* Idle sleeps (sampler_main): the epoll fd the loop was last proved
     * asleep in (the process's number; -1: not proved this pass) and that
     * wait's timeout; a lower bound of when that wait began
     * (not_waiting_at), kept while the loop thread's CPU time stays what
     * it was at the first proof of that wait (wait_cpu: a thread that
     * leaves a wait and enters another runs in between); the time of the
     * last look; whether the next proof may sleep (not while a sleep's
     * fd wake-up has not yet been taken by the loop). */
    int idle_epfd;
    int64_t idle_timeout_ms;
    int64_t not_waiting_at;
    int64_t wait_cpu;
    int64_t last_look_ns;
    int sleep_ok;
    /* A proof made by idle_sleep on waking (the loop still in its wait),
     * taken by the pass that follows at once instead of reading /proc
     * again: proof_at (0: none), its epoll fd and timeout. */
    int64_t proof_at;
    int proof_epfd;
    int64_t proof_timeout_ms;
    lw_ping wake;
    _Atomic int64_t idle_sleeps;
    /* Delay samples of pings not sent to a loop proved idle: each would
     * have been answered at once (0). Taken by the loop's side, which
     * records them into its delay histogram (lw_loop_take_idle_answers). */
    _Atomic int64_t idle_answers;

    pthread_mutex_t mutex; /* guards everything below */
    pthread_cond_t tick_cond;  /* the sampler sleeps on it */
    pthread_cond_t event_cond; /* event waiters sleep on it */
    int running;     /* a sampler thread exists (joinable) */
    int stopping;
    int suspended;   /* stopped by lw_loop_suspend, to be resumed */
    pthread_t thread;
    lw_loop_event queue[LW_LOOP_QUEUE];
    int queue_head;
    int queue_len;
};

static int init_sync(lw_loop *m)
{
    if (pthread_mutex_init(&m->mutex, NULL) != 0)
        return -1;
    if (lw_loop_cond_init(&m->tick_cond) != 0) {
        pthread_mutex_destroy(&m->mutex);
        return -1;
    }
    if (lw_loop_cond_init(&m->event_cond) != 0) {
        pthread_cond_destroy(&m->tick_cond);
        pthread_mutex_destroy(&m->mutex);
        return -1;
    }
    return 0;
}

lw_loop *lw_loop_new(int64_t resolution_ns, int64_t stall_threshold_ns, lw_hdr *lag_a,
                     lw_hdr *lag_b)
{
    lw_loop *m;
    if (resolution_ns <= 0 || stall_threshold_ns < resolution_ns || !lag_a || !lag_b
        || lag_a == lag_b)
        return NULL;
    m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->resolution_ns = resolution_ns;
    m->threshold_ns = stall_threshold_ns;
    m->idle_check_ns = 2 * resolution_ns < stall_threshold_ns ? 2 * resolution_ns
                                                               : stall_threshold_ns;
    m->lag[0] = lag_a;
    m->lag[1] = lag_b;
    m->credit_heartbeat = -1;
    m->loop_thread.valid = 0;
    m->ping.read_fd = m->ping.write_fd = -1;
    m->wake.read_fd = m->wake.write_fd = -1;
    m->idle_epfd = -1;
    m->sw_tid = 0;
    m->sw_fd = -1;
    lw_fdtable_init(&m->fdt);
    atomic_init(&m->table_own, -1);
    m->s_ping_fd = m->s_wake_fd = -1;
    m->ep_fd = m->ep_src = -1;
    lw_wakewatch_init(&m->ww);
    m->ww_state = 0;
    atomic_init(&m->ww_allowed, 1);
    m->wait_cpu = -1;
    m->sleep_ok = 1;
    m->proof_at = 0;
    atomic_init(&m->spare_idle, 1);
    atomic_init(&m->idle_sleeps, 0);
    atomic_init(&m->idle_answers, 0);
    lw_selectwait_init(&m->selectwait);
    atomic_init(&m->ping_on, 0);
    atomic_init(&m->ping_sent_ns, 0);
    atomic_init(&m->pings_sent, 0);
    atomic_init(&m->pings_skipped, 0);
    atomic_init(&m->heartbeat_ns, lw_loop_now_ns());
    atomic_init(&m->stall_seq, 0);
    atomic_init(&m->stalled_ns, 0);
    atomic_init(&m->stall_open_ns, 0);
    atomic_init(&m->paused, 0);
    atomic_init(&m->active, 0);
    atomic_init(&m->record_seq, 0);
    atomic_init(&m->samples, 0);
    atomic_init(&m->dropped, 0);
    if (init_sync(m) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void lw_loop_free(lw_loop *m)
{
    if (!m)
        return;
    lw_loop_stop(m); /* the sampler closed its own fds */
    lw_ping_close(&m->ping);
    lw_ping_close(&m->wake);
    pthread_cond_destroy(&m->event_cond);
    pthread_cond_destroy(&m->tick_cond);
    pthread_mutex_destroy(&m->mutex);
    free(m);
}

static void record_lag(lw_loop *m, int64_t staleness_ns, int64_t count)
{
    int64_t us = staleness_ns > 0 ? staleness_ns / 1000 : 0;
    atomic_fetch_add(&m->record_seq, 1); /* odd: recording */
    lw_hdr_record(m->lag[atomic_load(&m->active)], us, count);
    atomic_fetch_add(&m->record_seq, 1); /* even: done */
    atomic_fetch_add_explicit(&m->samples, count, memory_order_relaxed);
}

/* mutex held */
static void push_event(lw_loop *m, const lw_loop_event *ev)
{
    if (m->queue_len == LW_LOOP_QUEUE) {
        atomic_fetch_add(&m->dropped, 1);
        return;
    }
    m->queue[(m->queue_head + m->queue_len) % LW_LOOP_QUEUE] = *ev;
    m->queue_len++;
    pthread_cond_broadcast(&m->event_cond);
}

/* mutex held */
static void end_stall(lw_loop *m, int64_t end_ns, int64_t now)
{
    lw_loop_event ev;
    int64_t duration = end_ns - m->stall_heartbeat - m->resolution_ns;
    if (duration < 0)
        duration = 0;
    ev.kind = LW_LOOP_STALL_END;
    ev.stall_id = m->stall_id;
    ev.heartbeat_ns = m->stall_heartbeat;
    ev.started_ns = m->stall_heartbeat + m->resolution_ns;
    ev.detected_ns = now;
    ev.duration_ns = duration;
    ev.cpu_ns = -1;
    ev.sampler_late_ns = -1;
    ev.run_state = 0;
    m->in_stall = 0;
    atomic_fetch_add_explicit(&m->stall_seq, 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&m->stalled_ns, duration, memory_order_relaxed);
    atomic_store_explicit(&m->stall_open_ns, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->stall_seq, 1, memory_order_release);
    push_event(m, &ev);
}

/* mutex held; late: how late this sampling pass is after its due tick */
static void begin_stall(lw_loop *m, int64_t heartbeat, int64_t now, int64_t late)
{
    lw_loop_event ev;
    char state = 0;
    int64_t cpu = -1;
    m->in_stall = 1;
    m->stall_id++;
    m->stall_heartbeat = heartbeat;
    atomic_fetch_add_explicit(&m->stall_seq, 1, memory_order_acq_rel);
    atomic_store_explicit(&m->stall_open_ns, heartbeat + m->resolution_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->stall_seq, 1, memory_order_release);
    ev.kind = LW_LOOP_STALL_START;
    ev.stall_id = m->stall_id;
    ev.heartbeat_ns = heartbeat;
    ev.started_ns = heartbeat + m->resolution_ns;
    ev.detected_ns = now;
    ev.duration_ns = now - heartbeat - m->resolution_ns;
    /* What the loop thread is doing (a clock read and one small /proc
     * file, once per stall): the reporter compares the CPU time with its
     * own reading to tell native code from a thread that does not run. */
    if (lw_threadcpu_read_ns(&m->loop_thread, &cpu) != 0)
        cpu = -1;
    if (lw_threadcpu_run_state(&m->loop_thread, &state) != 0)
        state = 0;
    ev.cpu_ns = cpu;
    ev.sampler_late_ns = late > 0 ? late : 0;
    ev.run_state = (unsigned char)state;
    push_event(m, &ev);
}

/* The staleness at `at` of a heartbeat, minus the time suspended while it
 * was the last one. mutex held. */
static int64_t staleness(const lw_loop *m, int64_t at, int64_t heartbeat)
{
    int64_t stale = at - heartbeat - m->resolution_ns;
    if (heartbeat == m->credit_heartbeat)
        stale -= m->credit_ns;
    return stale;
}

/* The heartbeat, set by the sampler for a loop proved waiting in its
 * selector: never moved back (the loop may have beaten since). */
static void raise_heartbeat(lw_loop *m, int64_t now)
{
    int64_t heartbeat = atomic_load(&m->heartbeat_ns);
    while (heartbeat < now && !atomic_compare_exchange_weak(&m->heartbeat_ns, &heartbeat, now)) {
    }
}

/* Where the loop thread was at a look at `now`: in a wait (`cpu` its CPU
 * time then, -1 if unknown) or not. Keeps not_waiting_at a lower bound of
 * when the current wait began: the wait seen at the last look goes on
 * while the thread's CPU time has not moved; otherwise it began after the
 * last look. mutex held. */
static void note_wait(lw_loop *m, int64_t now, int waiting, int64_t cpu)
{
    if (!waiting) {
        m->not_waiting_at = now;
        m->wait_cpu = -1;
        m->sleep_ok = 1;
    } else if (cpu < 0 || cpu != m->wait_cpu) {
        m->not_waiting_at = m->last_look_ns;
        m->wait_cpu = cpu;
        m->sleep_ok = 1;
    }
    m->last_look_ns = now;
}

static int64_t loop_cpu(lw_loop *m)
{
    int64_t cpu;
    return lw_threadcpu_read_ns(&m->loop_thread, &cpu) == 0 ? cpu : -1;
}

/* The wake watch is armed on the old epoll file: start it over. */
static void watch_reset(lw_loop *m)
{
    if (m->ww_state == 1) {
        lw_wakewatch_close(&m->ww);
        m->ww_state = 0;
    }
}

static void epoll_drop(lw_loop *m)
{
    watch_reset(m);
    lw_fdtable_drop(&m->fdt, m->ep_fd);
    m->ep_fd = m->ep_src = -1;
}

/* The sampler's fd for the loop's epoll fd `epfd` (lw_fdtable_import),
 * kept while the loop runs: a loop keeps its epoll set for its life, and
 * its close (or a stop) stops or pauses the monitor, which drops it. -1:
 * none. mutex held. */
static int epoll_import(lw_loop *m, int epfd)
{
    if (m->ep_fd >= 0 && m->ep_src == epfd)
        return m->ep_fd;
    epoll_drop(m);
    m->ep_fd = lw_fdtable_import(&m->fdt, epfd);
    m->ep_src = m->ep_fd >= 0 ? epfd : -1;
    return m->ep_fd;
}

/* After a pass, in ping mode: ping the loop if it answered the last ping,
 * unless it is asleep in its selector, which watches the ping: then it
 * would answer at once, so that counts as its answer, and an idle loop is
 * never woken. A loop that has not answered gets no second ping: its
 * staleness grows from its last answer. mutex held. */
static void ping_or_skip(lw_loop *m, int64_t now)
{
    int64_t heartbeat = atomic_load(&m->heartbeat_ns);
    int epfd = -1;
    int64_t timeout_ms = -2;
    lw_ping ping;
    int64_t proof_at = m->proof_at;
    m->proof_at = 0;
    if (heartbeat < atomic_load(&m->ping_sent_ns)) {
        note_wait(m, now, 0, -1);
        return;
    }
    if (proof_at > 0 && now - proof_at <= LW_LOOP_PROOF_REUSE_NS) {
        /* idle_sleep just saw it in this wait (and noted it) */
        epfd = m->proof_epfd;
        timeout_ms = m->proof_timeout_ms;
        raise_heartbeat(m, now);
        atomic_fetch_add_explicit(&m->pings_skipped, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->idle_answers, 1, memory_order_relaxed);
        m->idle_epfd = epfd;
        m->idle_timeout_ms = timeout_ms;
        return;
    }
    lw_selectwait_set(&m->selectwait, m->sw_tid, m->sw_fd);
    if (atomic_load_explicit(&m->spare_idle, memory_order_relaxed)
        && lw_selectwait_check(&m->selectwait, now, &epfd, &timeout_ms)) {
        raise_heartbeat(m, now);
        atomic_fetch_add_explicit(&m->pings_skipped, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->idle_answers, 1, memory_order_relaxed);
        note_wait(m, now, 1, loop_cpu(m));
        m->idle_epfd = epfd;
        m->idle_timeout_ms = timeout_ms;
        return;
    }
    note_wait(m, now, 0, -1);
    atomic_store(&m->ping_sent_ns, now);
    ping.read_fd = -1;
    ping.write_fd = m->s_ping_fd;
    if (lw_ping_send(&ping) == 0)
        atomic_fetch_add_explicit(&m->pings_sent, 1, memory_order_relaxed);
}

/* One sampling pass at `now` covering the ticks due at tick, tick + res, ...
 * Returns the next tick. mutex held. */
static int64_t sample(lw_loop *m, int64_t tick, int64_t now, int64_t *prev_heartbeat)
{
    const int64_t res = m->resolution_ns;
    int64_t due = (now - tick) / res + 1;
    int64_t late = now - tick;
    int64_t heartbeat = atomic_load(&m->heartbeat_ns);

    m->idle_epfd = -1;
    if (atomic_load(&m->paused)) {
        if (m->in_stall)
            end_stall(m, now, now);
        *prev_heartbeat = heartbeat;
        epoll_drop(m); /* the loop's epoll set may go with the loop */
        return now + res;
    }
    /* Missed ticks: if the current heartbeat was already there at the tick,
     * the staleness then is exact; otherwise the one seen last time was the
     * latest there could have been, so it is an upper bound. */
    if (due > 1) {
        int64_t missed = due - 1, i;
        int64_t fill = missed < LW_LOOP_MAX_BACKFILL ? missed : LW_LOOP_MAX_BACKFILL;
        for (i = missed - fill; i < missed; i++) {
            int64_t at = tick + i * res;
            int64_t known = heartbeat <= at ? heartbeat : *prev_heartbeat;
            int64_t stale = staleness(m, at, known);
            record_lag(m, stale, 1);
            /* A stall that this late wake-up would have missed entirely is
             * still reported, late, rather than lost. */
            if (!m->in_stall && stale > m->threshold_ns)
                begin_stall(m, known, now, late);
        }
    }
    record_lag(m, staleness(m, now, heartbeat), 1);

    if (m->in_stall && heartbeat != m->stall_heartbeat)
        end_stall(m, heartbeat, now);
    if (!m->in_stall && staleness(m, now, heartbeat) > m->threshold_ns)
        begin_stall(m, heartbeat, now, late);
    *prev_heartbeat = heartbeat;
    if (atomic_load(&m->ping_on) && m->s_ping_fd >= 0)
        ping_or_skip(m, now);
    return tick + due * res;
}

/* The loop was proved asleep in its selector (epoll fd idle_epfd) by the
 * pass at `now`: instead of a pass every resolution, sleep until it can
 * wake: on the loop's epoll fd (signalled when a fd the loop watches is
 * ready, which wakes the loop too), the wake fd (stop, suspend), and until
 * one resolution before the loop's own wait can time out (it began no
 * earlier than not_waiting_at): from there the passes every resolution
 * see it leave. Two ways to wait on the epoll fd:
 *  - watched (lw_wakewatch.h, io_uring): every signal of the epoll fd wakes
 *    the sampler, even when the loop takes the event first; the sleep is
 *    capped by the stall threshold + a resolution, for the one wake-up of the loop it does
 *    not show: a signal (EINTR).
 *  - polled (no io_uring here): poll() re-checks readiness after being
 *    woken and sleeps on if the loop took the event first (on a VM the
 *    loop wins that race every time: measured), so the sleep is capped by
 *    2 x resolution (idle_check_ns).
 * On waking:
 *  - the loop thread's CPU time has not moved: it never left that wait, it
 *    was idle all along (one clock read: the cheap, usual case);
 *  - the epoll fd was signalled: the loop is waking now, idle until now;
 *  - it is in its wait again (it woke and went back): idle until now;
 *  - otherwise it left the wait unseen (a signal; polled: a fd wake-up).
 *    When it left is unknown: its last heartbeat, the last look that found
 *    it waiting, stands, as a timer's heartbeat would have. So a stall is
 *    never missed and is reported within threshold + 2 x resolution
 *    (polled; watched, after a signal: at the cap, when the stall is due); its
 *    length is over by at most the cap minus one resolution (the timer
 *    design's heartbeat, up to one resolution old, made it short by one).
 * In every case but the last the heartbeat is now and the ticks slept
 * through are zero lag (sample() fills them in). Returns 1 if it slept.
 * mutex held (released while asleep). */
static int idle_sleep(lw_loop *m, int64_t now, int64_t next_tick, int64_t *prev_heartbeat)
{
    struct pollfd fds[2];
    int64_t until, left_ns;
    int epfd = m->idle_epfd, ready, woke_by_fds, woke_other, still, epfd_now = -1, same_wait;
    int pollfd, watched, allowed;
    int64_t timeout_ms = m->idle_timeout_ms, t2 = -2, cpu0, cpu1;
    lw_ping wake;

    if (epfd < 0 || m->s_wake_fd < 0 || timeout_ms == -2 || !m->sleep_ok)
        return 0;
    cpu0 = m->wait_cpu;
    if (cpu0 < 0)
        return 0; /* no CPU clock to tell a wait that went on */
    pollfd = epoll_import(m, epfd); /* first: a new import resets the watch */
    if (pollfd < 0)
        return 0;
    allowed = atomic_load_explicit(&m->ww_allowed, memory_order_relaxed);
    if (!allowed)
        watch_reset(m);
    else if (m->ww_state == 0) /* -1: not available here, not tried again */
        m->ww_state = lw_wakewatch_open(&m->ww) == 0 ? 1 : -1;
    /* Watched (io_uring): every wake-up of the loop wakes the sampler, so
     * it sleeps until a stall could be due (threshold + resolution after
     * the heartbeat, which is now), for a signal. Polled: 2 x resolution. */
    watched = allowed && m->ww_state == 1;
    until = now + (watched ? m->threshold_ns + m->resolution_ns : m->idle_check_ns);
    /* A resolution before the wait can time out at the earliest: the passes
     * every resolution see the loop leave it, as they would a busy loop. */
    if (timeout_ms >= 0 && m->not_waiting_at + timeout_ms * 1000000 - m->resolution_ns < until)
        until = m->not_waiting_at + timeout_ms * 1000000 - m->resolution_ns;
    if (until <= next_tick)
        return 0; /* not worth it: the next pass is as soon */
    left_ns = until - now;
    if (watched) {
        int got;
        lw_wakewatch_flush(&m->ww); /* wake-ups from before the proof */
        pthread_mutex_unlock(&m->mutex);
        got = lw_wakewatch_wait(&m->ww, pollfd, m->s_wake_fd, (int)((left_ns + 999999) / 1000000));
        pthread_mutex_lock(&m->mutex);
        if (got < 0) {
            m->ww_state = -1; /* it failed: poll from now on */
            got = 0;
        }
        woke_by_fds = (got & LW_WAKEWATCH_FD) != 0;
        woke_other = (got & LW_WAKEWATCH_OTHER) != 0;
    } else {
        fds[0].fd = pollfd;
        fds[0].events = POLLIN;
        fds[1].fd = m->s_wake_fd;
        fds[1].events = POLLIN;
        fds[0].revents = fds[1].revents = 0;
        pthread_mutex_unlock(&m->mutex);
        ready = poll(fds, 2, (int)((left_ns + 999999) / 1000000));
        pthread_mutex_lock(&m->mutex);
        woke_by_fds = ready > 0 && (fds[0].revents & POLLIN);
        woke_other = ready > 0 && fds[1].revents;
    }
    atomic_fetch_add_explicit(&m->idle_sleeps, 1, memory_order_relaxed);
    if (woke_other) {
        wake.read_fd = wake.write_fd = m->s_wake_fd;
        (void)lw_ping_drain(&wake);
    }
    if (m->stopping)
        return 1;
    now = lw_loop_now_ns();
    cpu1 = loop_cpu(m);
    same_wait = cpu1 >= 0 && cpu1 == cpu0;
    if (same_wait && !woke_by_fds) {
        still = 1; /* never left the wait: no /proc read needed */
        epfd_now = epfd;
        t2 = timeout_ms;
        m->last_look_ns = now;
    } else {
        lw_selectwait_set(&m->selectwait, m->sw_tid, m->sw_fd);
        still = lw_selectwait_check(&m->selectwait, now, &epfd_now, &t2) && epfd_now == epfd;
        note_wait(m, now, still, cpu1);
    }
    if (still && !woke_by_fds) {
        m->proof_at = now; /* stands for the pass that follows */
        m->proof_epfd = epfd_now;
        m->proof_timeout_ms = t2;
    }
    if (woke_by_fds && still && same_wait)
        m->sleep_ok = 0; /* until the loop takes that event: else poll() returns at once */
    if (woke_by_fds || still) {
        raise_heartbeat(m, now);
        *prev_heartbeat = now;
        if (now >= next_tick) /* the ticks slept through, each an idle answer */
            atomic_fetch_add_explicit(&m->idle_answers,
                                      (now - next_tick) / m->resolution_ns + 1,
                                      memory_order_relaxed);
    }
    return 1;
}

/* Between passes: begin a stall the moment the heartbeat goes stale, not
 * at the next pass. A pass every resolution alone saw it up to one
 * resolution late: reported up to threshold + 2 x resolution after the
 * loop went late, the bound itself, exceeded by any wake-up latency
 * (measured: 120.0003 ms against 120). Returns when to wake: `tick`, or
 * the moment a stall would be due if that comes first. A busy loop keeps
 * that moment past the next tick, so it costs no wake-up; an idle one is
 * raised by the passes. mutex held. */
static int64_t stall_due_or(lw_loop *m, int64_t now, int64_t tick)
{
    int64_t heartbeat, due;
    if (m->in_stall || atomic_load(&m->paused))
        return tick;
    heartbeat = atomic_load(&m->heartbeat_ns);
    if (staleness(m, now, heartbeat) > m->threshold_ns) {
        begin_stall(m, heartbeat, now, 0);
        return tick;
    }
    due = heartbeat + m->resolution_ns + m->threshold_ns + 1;
    if (heartbeat == m->credit_heartbeat)
        due += m->credit_ns;
    return due > now && due < tick ? due : tick;
}

static void *sampler_main(void *arg)
{
    lw_loop *m = arg;
    int64_t prev_heartbeat;
    int keep[3], nkeep = 0, own;

    lw_loop_name_this_thread("lw-loop-sampler");
    /* Its own fd table first (lw_fdtable.h), keeping the ping's write end
     * and the wake fd, both opened before the thread was (lw_loop_start).
     * Under AddressSanitizer, stderr too, where its reports go. */
    pthread_mutex_lock(&m->mutex);
    m->s_ping_fd = m->ping.write_fd;
    m->s_wake_fd = m->wake.read_fd;
    pthread_mutex_unlock(&m->mutex);
    if (m->s_ping_fd >= 0)
        keep[nkeep++] = m->s_ping_fd;
    if (m->s_wake_fd >= 0 && m->s_wake_fd != m->s_ping_fd)
        keep[nkeep++] = m->s_wake_fd;
#if defined(__SANITIZE_ADDRESS__)
    keep[nkeep++] = 2;
#endif
    own = lw_fdtable_leave(&m->fdt, keep, nkeep);
    atomic_store(&m->table_own, own);

    prev_heartbeat = atomic_load(&m->heartbeat_ns);
    int64_t tick = lw_loop_now_ns() + m->resolution_ns;

    pthread_mutex_lock(&m->mutex);
    m->not_waiting_at = m->last_look_ns = lw_loop_now_ns();
    m->wait_cpu = -1;
    m->sleep_ok = 1;
    m->proof_at = 0;
    while (!m->stopping) {
        int64_t now = lw_loop_now_ns();
        if (now < tick) {
            lw_loop_cond_wait_until(&m->tick_cond, &m->mutex, stall_due_or(m, now, tick));
            continue; /* re-check stopping and the clock */
        }
        tick = sample(m, tick, now, &prev_heartbeat);
        /* A sleep leaves `tick` due: the next pass comes at once, and
         * fills in the ticks slept through. */
        if (m->idle_epfd >= 0 && !m->stopping)
            (void)idle_sleep(m, now, tick, &prev_heartbeat);
    }
    /* Its fds are its own to close (in its own table, the only place they
     * are open; sharing, they would stay open in the process). Its own
     * table is emptied, the kept copies too: open files left for the
     * thread's exit to close made it linger in the kernel, after
     * pthread_join returned, for up to milliseconds (measured). */
    epoll_drop(m);
    lw_wakewatch_close(&m->ww);
    m->ww_state = 0;
    lw_selectwait_close(&m->selectwait);
    lw_fdtable_drop(&m->fdt, m->s_ping_fd);
    if (m->s_wake_fd != m->s_ping_fd)
        lw_fdtable_drop(&m->fdt, m->s_wake_fd);
    lw_fdtable_close(&m->fdt);
    m->s_ping_fd = m->s_wake_fd = -1;
    atomic_store(&m->table_own, -1);
    pthread_mutex_unlock(&m->mutex);
    return NULL;
}

/* Wake a sampler out of an idle sleep (stop, suspend). mutex held. */
static void wake_sampler(lw_loop *m)
{
    pthread_cond_broadcast(&m->tick_cond);
    if (m->wake.write_fd >= 0)
        (void)lw_ping_send(&m->wake);
}

int lw_loop_start(lw_loop *m, int paused)
{
    int err;
    pthread_mutex_lock(&m->mutex);
    if (m->running || m->suspended) {
        pthread_mutex_unlock(&m->mutex);
        return EALREADY;
    }
    m->stopping = 0;
    m->in_stall = 0;
    atomic_store(&m->stall_open_ns, 0); /* a stopped sampler ended its stall */
    m->credit_heartbeat = -1;
    m->credit_ns = 0;
    m->queue_head = m->queue_len = 0;
    atomic_store(&m->heartbeat_ns, lw_loop_now_ns());
    atomic_store(&m->paused, paused ? 1 : 0);
    if (m->wake.read_fd < 0)
        (void)lw_ping_open(&m->wake); /* none: the sampler never sleeps idle */
    else
        (void)lw_ping_drain(&m->wake);
    /* The ping too, before the thread: it keeps only the fds open now (a
     * ping opened later could not reach a sampler with a table of its own;
     * none: a loop watched through it falls back to the tick). */
    if (m->ping.read_fd < 0)
        (void)lw_ping_open(&m->ping);
    err = pthread_create(&m->thread, NULL, sampler_main, m);
    if (err == 0)
        m->running = 1;
    pthread_mutex_unlock(&m->mutex);
    return err;
}

void lw_loop_stop(lw_loop *m)
{
    pthread_t thread;
    int joinable;
    pthread_mutex_lock(&m->mutex);
    /* A stall going on ends here: every START gets its END. */
    if (((m->running && !m->stopping) || m->suspended) && m->in_stall) {
        int64_t now = lw_loop_now_ns();
        end_stall(m, now, now);
    }
    m->stopping = 1;
    m->suspended = 0;
    joinable = m->running;
    thread = m->thread;
    m->running = 0;
    wake_sampler(m);
    pthread_cond_broadcast(&m->event_cond);
    pthread_mutex_unlock(&m->mutex);
    if (joinable)
        pthread_join(thread, NULL);
}

int lw_loop_suspend(lw_loop *m)
{
    pthread_t thread;
    pthread_mutex_lock(&m->mutex);
    if (!m->running || m->stopping) {
        pthread_mutex_unlock(&m->mutex);
        return 0;
    }
    m->stopping = 1;
    m->suspended = 1;
    m->running = 0;
    thread = m->thread;
    wake_sampler(m);
    pthread_cond_broadcast(&m->event_cond);
    pthread_mutex_unlock(&m->mutex);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&m->mutex);
    /* After the sampler's last pass: the pause starts here. */
    m->suspended_ns = lw_loop_now_ns();
    m->suspended_heartbeat = atomic_load(&m->heartbeat_ns);
    pthread_mutex_unlock(&m->mutex);
    return 1;
}

int lw_loop_resume_thread(lw_loop *m)
{
    int err;
    pthread_mutex_lock(&m->mutex);
    if (!m->suspended) {
        pthread_mutex_unlock(&m->mutex);
        return 0;
    }
    if (atomic_load(&m->heartbeat_ns) == m->suspended_heartbeat) {
        /* No heartbeat during the pause: leave it out of this heartbeat's
         * staleness (added to what earlier pauses left out of it). */
        if (m->credit_heartbeat != m->suspended_heartbeat) {
            m->credit_heartbeat = m->suspended_heartbeat;
            m->credit_ns = 0;
        }
        m->credit_ns += lw_loop_now_ns() - m->suspended_ns;
    }
    m->suspended = 0;
    m->stopping = 0;
    if (m->wake.read_fd >= 0)
        (void)lw_ping_drain(&m->wake);
    err = pthread_create(&m->thread, NULL, sampler_main, m);
    if (err == 0) {
        m->running = 1;
    } else {
        /* As lw_loop_stop: the stall going on ends, waiters drain and go. */
        m->stopping = 1;
        if (m->in_stall) {
            int64_t now = lw_loop_now_ns();
            end_stall(m, now, now);
        }
        pthread_cond_broadcast(&m->event_cond);
    }
    pthread_mutex_unlock(&m->mutex);
    return err;
}

int lw_loop_running(const lw_loop *m)
{
    lw_loop *mm = (lw_loop *)m;
    int running;
    pthread_mutex_lock(&mm->mutex);
    running = mm->running || mm->suspended;
    pthread_mutex_unlock(&mm->mutex);
    return running;
}

void lw_loop_heartbeat(lw_loop *m, int64_t now_ns)
{
    atomic_store_explicit(&m->heartbeat_ns, now_ns, memory_order_release);
}

void lw_loop_pause(lw_loop *m)
{
    atomic_store(&m->paused, 1);
}

void lw_loop_resume(lw_loop *m, int64_t now_ns)
{
    atomic_store(&m->heartbeat_ns, now_ns);
    atomic_store(&m->paused, 0);
}

int64_t lw_loop_last_heartbeat(const lw_loop *m)
{
    return atomic_load(&((lw_loop *)m)->heartbeat_ns);
}

void lw_loop_set_loop_thread(lw_loop *m, const lw_threadcpu *t)
{
    pthread_mutex_lock(&m->mutex);
    m->loop_thread = *t;
    m->sw_tid = t->valid ? t->tid : 0; /* the sampler applies it */
    m->sw_fd = m->ping.read_fd;
    pthread_mutex_unlock(&m->mutex);
}

int lw_loop_ping_fd(lw_loop *m)
{
    int fd, err = 0;
    pthread_mutex_lock(&m->mutex);
    if (m->ping.read_fd < 0) {
        /* A running sampler keeps the fds open when it started (see
         * lw_loop_start): a ping opened now would not reach it. */
        err = m->running || m->suspended ? EBUSY : lw_ping_open(&m->ping);
    }
    fd = m->ping.read_fd;
    if (err == 0) {
        m->sw_tid = m->loop_thread.valid ? m->loop_thread.tid : 0;
        m->sw_fd = fd;
    }
    pthread_mutex_unlock(&m->mutex);
    return err ? -err : fd;
}

void lw_loop_set_spare_idle(lw_loop *m, int on)
{
    atomic_store(&m->spare_idle, on ? 1 : 0);
}

void lw_loop_set_wakewatch(lw_loop *m, int on)
{
    atomic_store(&m->ww_allowed, on ? 1 : 0);
}

int lw_loop_wakewatch_state(const lw_loop *m)
{
    lw_loop *mm = (lw_loop *)m;
    int state;
    pthread_mutex_lock(&mm->mutex);
    state = atomic_load(&mm->ww_allowed) ? mm->ww_state : -1;
    pthread_mutex_unlock(&mm->mutex);
    return state;
}

int lw_loop_sampler_table(const lw_loop *m)
{
    return atomic_load(&((lw_loop *)m)->table_own);
}

void lw_loop_set_ping(lw_loop *m, int on)
{
    atomic_store(&m->ping_on, on ? 1 : 0);
}

int64_t lw_loop_ping_answer(lw_loop *m, int64_t now_ns)
{
    int64_t sent;
    int got = m->ping.read_fd >= 0 ? lw_ping_drain(&m->ping) : 0;
    atomic_store_explicit(&m->heartbeat_ns, now_ns, memory_order_release);
    sent = atomic_load(&m->ping_sent_ns);
    if (!got || sent <= 0)
        return -1;
    return now_ns > sent ? now_ns - sent : 0;
}

void lw_loop_ping_poke(lw_loop *m)
{
    if (m->ping.write_fd >= 0)
        (void)lw_ping_send(&m->ping);
}

int64_t lw_loop_take_idle_answers(lw_loop *m)
{
    return atomic_exchange(&m->idle_answers, 0);
}

void lw_loop_ping_counts(const lw_loop *m, int64_t *sent, int64_t *skipped, int64_t *sleeps)
{
    *sent = atomic_load(&((lw_loop *)m)->pings_sent);
    *skipped = atomic_load(&((lw_loop *)m)->pings_skipped);
    *sleeps = atomic_load(&((lw_loop *)m)->idle_sleeps);
}

int lw_loop_wait_event(lw_loop *m, int64_t timeout_ns, lw_loop_event *out)
{
    int result;
    int64_t deadline = timeout_ns >= 0 ? lw_loop_now_ns() + timeout_ns : 0;
    pthread_mutex_lock(&m->mutex);
    for (;;) {
        if (m->suspended) {
            result = -2;
            break;
        }
        if (m->queue_len > 0) {
            *out = m->queue[m->queue_head];
            m->queue_head = (m->queue_head + 1) % LW_LOOP_QUEUE;
            m->queue_len--;
            result = 1;
            break;
        }
        if (m->stopping) {
            result = -1;
            break;
        }
        if (timeout_ns < 0) {
            pthread_cond_wait(&m->event_cond, &m->mutex);
        } else {
            if (lw_loop_now_ns() >= deadline) {
                result = 0;
                break;
            }
            lw_loop_cond_wait_until(&m->event_cond, &m->mutex, deadline);
        }
    }
    pthread_mutex_unlock(&m->mutex);
    return result;
}

lw_hdr *lw_loop_swap_lag(lw_loop *m)
{
    int was = atomic_load(&m->active);
    uint64_t seq;
    atomic_store(&m->active, !was);
    /* A recording that began before the flip may still target lag[was]:
     * wait for that one recording (nanoseconds) to finish. One that begins
     * after the flip reads the new index (sequentially consistent order). */
    seq = atomic_load(&m->record_seq);
    if (seq & 1u) {
        while (atomic_load(&m->record_seq) == seq)
            sched_yield();
    }
    return m->lag[was];
}

int64_t lw_loop_sample_count(const lw_loop *m)
{
    return atomic_load(&((lw_loop *)m)->samples);
}

int64_t lw_loop_dropped_events(const lw_loop *m)
{
    return atomic_load(&((lw_loop *)m)->dropped);
}

int64_t lw_loop_stalled_ns(const lw_loop *m, int64_t now_ns)
{
    lw_loop *mm = (lw_loop *)m;
    for (int tries = 0;; tries++) {
        uint32_t seq = atomic_load_explicit(&mm->stall_seq, memory_order_acquire);
        int64_t total, open;
        if (seq & 1u) { /* the sampler is between two stores: a few instructions */
            if (tries > 100)
                sched_yield();
            continue;
        }
        total = atomic_load_explicit(&mm->stalled_ns, memory_order_relaxed);
        open = atomic_load_explicit(&mm->stall_open_ns, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&mm->stall_seq, memory_order_relaxed) == seq)
            return total + (open > 0 && now_ns > open ? now_ns - open : 0);
    }
}

void lw_loop_read_live(const lw_loop *m, lw_loop_live *out)
{
    lw_loop *mm = (lw_loop *)m;
    /* The sampler holds the mutex only for one sampling pass (a few
     * histogram records), never while waiting on anything else. */
    pthread_mutex_lock(&mm->mutex);
    out->running = mm->running || mm->suspended;
    out->in_stall = mm->in_stall;
    out->stall_id = mm->stall_id;
    out->stall_started_ns = mm->in_stall ? mm->stall_heartbeat + mm->resolution_ns : 0;
    pthread_mutex_unlock(&mm->mutex);
    out->paused = atomic_load(&mm->paused);
    out->heartbeat_ns = atomic_load(&mm->heartbeat_ns);
    out->resolution_ns = mm->resolution_ns;
    out->threshold_ns = mm->threshold_ns;
    out->samples = atomic_load(&mm->samples);
}

void lw_loop_after_fork_child(lw_loop *m)
{
    /* The parent's sampler thread was not copied: its mutex may have been
     * held at the fork and a recording may have been in flight. Start over
     * with fresh synchronization objects and no thread. */
    int was_running = m->running;
    (void)init_sync(m);
    m->running = 0;
    m->stopping = 1;
    m->suspended = 0;
    m->in_stall = 0;
    /* The parent's sampler may have been between two stores of the stall
     * clock: even its count; the stall it had open is not the child's. */
    if (atomic_load(&m->stall_seq) & 1u)
        atomic_fetch_add(&m->stall_seq, 1);
    atomic_store(&m->stall_open_ns, 0);
    m->queue_head = m->queue_len = 0;
    /* The ping's fd is shared with the parent, whose loop watches it: a
     * ping sent or drained here would be the parent's. Leave it open (the
     * child's copy of the loop may still list it) and open a new one if a
     * monitor runs in the child. */
    m->ping.read_fd = m->ping.write_fd = -1;
    m->wake.read_fd = m->wake.write_fd = -1; /* the parent's sampler's */
    atomic_store(&m->ping_on, 0);
    atomic_store(&m->ping_sent_ns, 0);
    /* The sampler's own fds: a sampler joined before the fork (the at-fork
     * hooks) closed them; one still running at the fork (a fork that ran
     * no hooks) had them in a table of its own, not copied here (the child
     * holds unrelated fds under those numbers: never close them), or in
     * the shared table, copied here: close those copies. */
    if (was_running && atomic_load(&m->table_own) == 0)
        lw_selectwait_close(&m->selectwait);
    lw_selectwait_init(&m->selectwait);
    lw_wakewatch_forget(&m->ww, was_running && atomic_load(&m->table_own) == 0);
    m->ww_state = 0;
    lw_fdtable_init(&m->fdt);
    atomic_store(&m->table_own, -1);
    m->ep_fd = m->ep_src = -1;
    m->s_ping_fd = m->s_wake_fd = -1;
    if (atomic_load(&m->record_seq) & 1u)
        atomic_fetch_add(&m->record_seq, 1);
}
