/* The sampler's clock and timed waits on macOS: CLOCK_UPTIME_RAW (the
 * mach_absolute_time clock that Python's time.monotonic reads there) and
 * pthread_cond_timedwait_relative_np, since macOS condvars cannot be set to
 * a monotonic clock. */
#if defined(__APPLE__)

#define _DARWIN_C_SOURCE 1

#include <pthread.h>
#include <time.h>

#include "lw_loop_clock.h"

int64_t lw_loop_now_ns(void)
{
    return (int64_t)clock_gettime_nsec_np(CLOCK_UPTIME_RAW);
}

int lw_loop_cond_init(pthread_cond_t *cond)
{
    return pthread_cond_init(cond, NULL);
}

void lw_loop_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns)
{
    struct timespec ts;
    int64_t left = deadline_ns - lw_loop_now_ns();
    if (left <= 0)
        return;
    ts.tv_sec = (time_t)(left / 1000000000);
    ts.tv_nsec = (long)(left % 1000000000);
    (void)pthread_cond_timedwait_relative_np(cond, mutex, &ts);
}

void lw_loop_name_this_thread(const char *name)
{
    (void)pthread_setname_np(name); /* macOS names only the calling thread */
}

#else
typedef int lw_loop_clock_macos_unused;
#endif
