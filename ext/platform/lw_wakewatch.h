/*
 * lw_wakewatch: sleep until a fd is signalled, even when another waiter
 * takes the event before this one looks.
 *
 * The loop sampler sleeps with an idle loop by waiting on the loop's epoll
 * fd. poll() (and epoll) re-check readiness after being woken and sleep on
 * if there is none: the loop, woken by the same event, takes it first (on
 * a VM, every time: measured 20/20), so poll() never returns and the
 * sampler does not see the loop wake. An io_uring poll request completes
 * with the mask the wake-up carried, without looking again (20/20).
 *   lw_wakewatch_linux.c  io_uring: IORING_OP_POLL_ADD, waited for with a
 *                         timeout (io_uring_enter's extended argument:
 *                         Linux >= 5.11); unavailable where the system
 *                         refuses io_uring (kernel.io_uring_disabled,
 *                         seccomp profiles such as Docker's default)
 *   lw_wakewatch_macos.c  never available
 * Where it is not available the caller sleeps in poll() for a bounded time
 * and looks for itself (see lw_loop.c, idle_sleep).
 *
 * Not thread-safe: one thread (the sampler) opens, waits and closes.
 */
#ifndef LW_WAKEWATCH_H
#define LW_WAKEWATCH_H

#ifdef __cplusplus
extern "C" {
#endif

/* lw_wakewatch_wait's result bits. */
#define LW_WAKEWATCH_FD 1    /* the watched fd was signalled */
#define LW_WAKEWATCH_OTHER 2 /* the other fd (a wake-up fd) is readable */

typedef struct lw_wakewatch {
    int ring;         /* -1: not open */
    void *rings;      /* the submission and completion rings (one mapping) */
    unsigned long rings_size;
    void *sqes;
    unsigned long sqes_size;
    unsigned sq_head, sq_tail, sq_mask, sq_array, cq_head, cq_tail, cq_mask, cqes;
    int armed_fd;     /* the fd a poll request is pending on; -1 */
    int armed_other;
} lw_wakewatch;

/* Nothing open. */
void lw_wakewatch_init(lw_wakewatch *w);
/* 0, or an errno value (ENOSYS, EPERM...: not available here). */
int lw_wakewatch_open(lw_wakewatch *w);
/* Forget the wake-ups that came before now (a request that completed
 * while nobody waited). */
void lw_wakewatch_flush(lw_wakewatch *w);
/* Sleep until `fd` is signalled (readable, as poll() would be woken),
 * `other` is readable, or timeout_ms passes: the result bits, 0 on timeout,
 * -1 if the watch failed (then closed: fall back). A request on fd stays
 * pending across calls with the same fd; a call with another fd starts
 * over. */
int lw_wakewatch_wait(lw_wakewatch *w, int fd, int other, int timeout_ms);
void lw_wakewatch_close(lw_wakewatch *w);
/* In a forked child: forget the watch of a thread that does not exist
 * there; its ring fd is closed only if close_fd (it is in this process's
 * fd table: the thread shared it), its mappings are left alone. */
void lw_wakewatch_forget(lw_wakewatch *w, int close_fd);

#ifdef __cplusplus
}
#endif

#endif
