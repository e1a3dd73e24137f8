/* Thread CPU time on Linux (and other POSIX systems with per-thread CPU
 * clocks, i.e. everything but macOS, which lacks pthread_getcpuclockid):
 * the thread's clock id, read with clock_gettime from any thread. */
#if !defined(__APPLE__)

#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE 1 /* syscall() */

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include "lw_threadcpu.h"

int lw_threadcpu_capture_self(lw_threadcpu *t)
{
    t->valid = 0;
#if defined(_POSIX_THREAD_CPUTIME) && _POSIX_THREAD_CPUTIME >= 0
    clockid_t clock;
    int err = pthread_getcpuclockid(pthread_self(), &clock);
    if (err != 0)
        return err;
    t->id = (int64_t)clock;
#if defined(__linux__) && defined(SYS_gettid)
    t->tid = (int64_t)syscall(SYS_gettid);
#else
    t->tid = 0;
#endif
    t->valid = 1;
    return 0;
#else
    return ENOTSUP;
#endif
}

int lw_threadcpu_read_ns(const lw_threadcpu *t, int64_t *out_ns)
{
    struct timespec ts;
    if (!t->valid)
        return EINVAL;
    if (clock_gettime((clockid_t)t->id, &ts) != 0)
        return errno;
    *out_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    return 0;
}

#else
/* ISO C wants at least one declaration per translation unit. */
typedef int lw_threadcpu_linux_unused;
#endif
