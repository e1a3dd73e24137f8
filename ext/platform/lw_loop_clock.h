/*
 * lw_loop_clock: the monotonic clock, a condition variable whose timed
 * waits run on it, and thread naming, for the loop sampler. One small file per platform:
 *   lw_loop_clock_linux.c  CLOCK_MONOTONIC, condvars set to it (POSIX)
 *   lw_loop_clock_macos.c  CLOCK_UPTIME_RAW (what Python's time.monotonic
 *                          reads there), relative timed waits
 * Both compile everywhere and are empty where they do not apply.
 * The clock is the one behind Python's time.monotonic_ns() and asyncio's
 * loop.time(), so heartbeats written by either side compare directly.
 */
#ifndef LW_LOOP_CLOCK_H
#define LW_LOOP_CLOCK_H

#include <pthread.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int64_t lw_loop_now_ns(void);
/* Initialize a condition variable for lw_loop_cond_wait_until. 0 or errno. */
int lw_loop_cond_init(pthread_cond_t *cond);
/* Wait on cond (mutex held) until signalled or until the monotonic clock
 * passes deadline_ns. Spurious wake-ups happen: callers re-check. */
void lw_loop_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, int64_t deadline_ns);
/* Name the calling thread (at most 15 characters) where the platform can:
 * it shows in top -H, gdb, /proc/<pid>/task/<tid>/comm. */
void lw_loop_name_this_thread(const char *name);

#ifdef __cplusplus
}
#endif

#endif
