/*
 * lw_selectwait: is a thread asleep in its event loop's selector right now?
 *
 * An idle loop needs no ping: a loop thread asleep in epoll on the epoll
 * set that watches the ping's fd would answer it at once, so the sampler
 * counts it as answered and the loop is not woken. Proof, not a guess: the
 * thread's current system call (/proc/self/task/<tid>/syscall: number and
 * arguments of a sleeping thread, "running" for one on a CPU) must be an
 * epoll wait, and its epoll fd must list the ping's fd
 * (/proc/self/task/<tid>/fdinfo/<epfd>, "tfd:" lines: that thread's fd
 * table; re-read once a second and whenever the epoll fd changes). A loop blocked in time.sleep(), a lock,
 * a blocking socket, or in another epoll set is not in its selector.
 *   lw_selectwait_linux.c  the /proc reads above (a kept-open fd, one pread)
 *   lw_selectwait_macos.c  cannot tell: always "not known" (the loop is pinged)
 */
#ifndef LW_SELECTWAIT_H
#define LW_SELECTWAIT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The fd it keeps open is the calling thread's (the loop sampler's, which
 * may have a table of its own): set, check and close from that thread. */
typedef struct lw_selectwait {
    int64_t tid;          /* the thread watched; 0: none */
    int watched_fd;       /* the fd its selector must watch */
    int syscall_fd;       /* /proc/self/task/<tid>/syscall, kept open; -1 */
    int known_epfd;       /* an epoll fd seen to watch watched_fd; -1 */
    int64_t known_at_ns;  /* when that was read */
    int broken;           /* the /proc file cannot be read here: give up */
} lw_selectwait;

void lw_selectwait_init(lw_selectwait *w);
/* Watch thread `tid` (the kernel's id), whose selector should hold
 * `watched_fd`. Cheap when unchanged; the file is opened on first check. */
void lw_selectwait_set(lw_selectwait *w, int64_t tid, int watched_fd);
/* 1: the thread is asleep in epoll on a set watching watched_fd, *epfd
 * set to that epoll fd and *timeout_ms to the wait's timeout (-1: none;
 * -2: not readable, as for epoll_pwait2); 0: it is not, or it cannot be
 * told. now_ns: the monotonic clock. */
int lw_selectwait_check(lw_selectwait *w, int64_t now_ns, int *epfd, int64_t *timeout_ms);
void lw_selectwait_close(lw_selectwait *w);

#ifdef __cplusplus
}
#endif

#endif
