/* The sampler's clock and timed waits on Linux and other POSIX systems with
 * pthread_condattr_setclock: CLOCK_MONOTONIC throughout, so a wall-clock
 * change never stretches or cuts a sampling interval. */
#if !defined(__APPLE__)

#if defined(__linux__)
#define _GNU_SOURCE /* pthread_setname_np */
#else
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "lw_loop_clock.h"

int64_t lw_loop_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int lw_loop_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int err = pthread_condattr_init(&attr);
    if (err != 0)
        return err;
    err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (err == 0)
        err = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return err;
}

void lw_loop_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns)
{
    struct timespec ts;
    if (deadline_ns < 0)
        deadline_ns = 0;
    ts.tv_sec = (time_t)(deadline_ns / 1000000000);
    ts.tv_nsec = (long)(deadline_ns % 1000000000);
    (void)pthread_cond_timedwait(cond, mutex, &ts);
}

void lw_loop_name_this_thread(const char *name)
{
#if defined(__linux__)
    (void)pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

#else
typedef int lw_loop_clock_linux_unused;
#endif
