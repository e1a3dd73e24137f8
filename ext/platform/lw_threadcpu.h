/*
 * lw_threadcpu: CPU time consumed by one thread, readable from another.
 *
 * The loop monitor reports utilization for loops whose selector it cannot
 * observe (uvloop) as the loop thread's CPU time share, read from the
 * sampler thread, so it stays current even while the loop is stalled.
 * Platform code lives in one small file per platform, each compiled
 * everywhere and empty where it does not apply:
 *   lw_threadcpu_linux.c  POSIX per-thread CPU clocks
 *                         (pthread_getcpuclockid + clock_gettime)
 *   lw_threadcpu_macos.c  Mach thread_info(THREAD_BASIC_INFO)
 * and the thread's scheduler state (why a stalled loop thread is not using
 * CPU: waiting for one, or asleep in a system call):
 *   lw_threadstate_linux.c  /proc/self/task/<tid>/stat, field 3
 *   lw_threadstate_macos.c  thread_info(THREAD_BASIC_INFO).run_state
 */
#ifndef LW_THREADCPU_H
#define LW_THREADCPU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A handle on one thread's CPU clock. valid == 0: not captured or not
 * supported here. `id` holds a clockid_t (POSIX) or a mach_port_t (macOS);
 * `tid` the kernel's thread id (Linux; 0 elsewhere). */
typedef struct lw_threadcpu {
    int valid;
    int64_t id;
    int64_t tid;
} lw_threadcpu;

/* Capture the calling thread. Returns 0, or an errno value (ENOTSUP where the
 * platform has no per-thread CPU clock). */
int lw_threadcpu_capture_self(lw_threadcpu *t);

/* CPU time (user + system) of the captured thread in ns, from any thread,
 * while that thread is alive. Returns 0, or an errno value. */
int lw_threadcpu_read_ns(const lw_threadcpu *t, int64_t *out_ns);

/* The captured thread's scheduler state now, as one letter (Linux's):
 * 'R' running or runnable (on a CPU, or waiting for one), 'S' asleep in an
 * interruptible wait, 'D' in an uninterruptible one (disk I/O), 'T'/'t'
 * stopped or traced, other letters as the kernel says. Returns 0, or an
 * errno value (ENOTSUP where the platform cannot tell). Reads a small
 * /proc file on Linux: call it once per stall, not per sample. */
int lw_threadcpu_run_state(const lw_threadcpu *t, char *out_state);

#ifdef __cplusplus
}
#endif

#endif
