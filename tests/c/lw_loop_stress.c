/*
 * Stress test of ext/loop/lw_loop.c without Python: a "loop" thread writing
 * heartbeats (stalling now and then), a reader swapping the interval lag
 * histograms as fast as it can, and an event reader, all against the
 * sampler thread. Checks that no lag sample is lost or counted twice across
 * swaps, that every stall start has its end, and that stop joins promptly.
 * Built and run by tests/test_loop_native_stress.py, also under
 * ThreadSanitizer and AddressSanitizer.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lw_hdr.h"
#include "lw_loop.h"
#include "lw_loop_clock.h"

#define RES_NS 200000      /* 200 us */
#define THRESHOLD_NS 2000000 /* 2 ms */

static lw_loop *m;
static atomic_int done;
static atomic_long starts, ends;

static void sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    nanosleep(&ts, NULL);
}

static void *loop_thread(void *arg)
{
    int i;
    (void)arg;
    for (i = 0; !atomic_load(&done); i++) {
        lw_loop_heartbeat(m, lw_loop_now_ns());
        if (i % 500 == 499)
            sleep_ns(5000000); /* a 5 ms stall */
        else
            sleep_ns(RES_NS / 2);
        if (i % 2000 == 1999) { /* the loop stops running for a while */
            lw_loop_pause(m);
            sleep_ns(3000000);
            lw_loop_resume(m, lw_loop_now_ns());
        }
    }
    return NULL;
}

static void *event_thread(void *arg)
{
    lw_loop_event ev;
    int got;
    (void)arg;
    while ((got = lw_loop_wait_event(m, -1, &ev)) >= 0) {
        if (got == 1 && ev.kind == LW_LOOP_STALL_START)
            atomic_fetch_add(&starts, 1);
        else if (got == 1 && ev.kind == LW_LOOP_STALL_END)
            atomic_fetch_add(&ends, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    lw_hdr *a, *b, *drained_total;
    pthread_t loop, events;
    long swaps = 0;
    int64_t deadline, stop_started, stop_took;
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;

    if (lw_hdr_new(1, 3600000000LL, 3, &a) || lw_hdr_new(1, 3600000000LL, 3, &b)
        || lw_hdr_new(1, 3600000000LL, 3, &drained_total)) {
        fprintf(stderr, "alloc failed\n");
        return 2;
    }
    m = lw_loop_new(RES_NS, THRESHOLD_NS, a, b);
    if (!m || lw_loop_new(0, 1, a, b) != NULL || lw_loop_new(10, 5, a, b) != NULL
        || lw_loop_new(10, 20, a, a) != NULL) {
        fprintf(stderr, "lw_loop_new validation failed\n");
        return 2;
    }
    if (lw_loop_start(m, 0) != 0 || lw_loop_start(m, 0) == 0) {
        fprintf(stderr, "start failed / second start accepted\n");
        return 2;
    }
    pthread_create(&loop, NULL, loop_thread, NULL);
    pthread_create(&events, NULL, event_thread, NULL);

    deadline = lw_loop_now_ns() + (int64_t)(seconds * 1e9);
    while (lw_loop_now_ns() < deadline) {
        lw_hdr *old = lw_loop_swap_lag(m);
        lw_hdr_add(drained_total, old);
        lw_hdr_reset(old);
        swaps++;
        sleep_ns(50000);
    }
    atomic_store(&done, 1);
    pthread_join(loop, NULL);
    stop_started = lw_loop_now_ns();
    lw_loop_stop(m);
    stop_took = lw_loop_now_ns() - stop_started;
    lw_loop_stop(m); /* idempotent */
    pthread_join(events, NULL);
    {
        lw_hdr *old = lw_loop_swap_lag(m);
        lw_hdr_add(drained_total, old);
        lw_hdr_reset(old);
        old = lw_loop_swap_lag(m);
        lw_hdr_add(drained_total, old);
    }
    printf("samples=%lld recorded=%lld swaps=%ld starts=%ld ends=%ld stop_ms=%.3f dropped=%lld\n",
           (long long)lw_loop_sample_count(m), (long long)lw_hdr_total_count(drained_total),
           swaps, atomic_load(&starts), atomic_load(&ends), stop_took / 1e6,
           (long long)lw_loop_dropped_events(m));
    if (lw_loop_sample_count(m) != lw_hdr_total_count(drained_total)) {
        fprintf(stderr, "lost or doubled samples across swaps\n");
        return 1;
    }
    if (atomic_load(&starts) < 1 || atomic_load(&starts) != atomic_load(&ends)) {
        fprintf(stderr, "stall starts and ends do not pair\n");
        return 1;
    }
    if (stop_took > 1000000000) {
        fprintf(stderr, "stop took too long\n");
        return 1;
    }
    /* restart after stop works */
    if (lw_loop_start(m, 1) != 0) {
        fprintf(stderr, "restart failed\n");
        return 1;
    }
    lw_loop_free(m);
    lw_hdr_free(a);
    lw_hdr_free(b);
    lw_hdr_free(drained_total);
    return 0;
}
