/* lw_selectwait where a thread's system call cannot be read (macOS, and any
 * system without Linux's /proc): never known, so an idle loop is pinged
 * like a busy one. See lw_selectwait.h. */
#if !defined(__linux__)

#include "lw_selectwait.h"

void lw_selectwait_init(lw_selectwait *w)
{
    w->tid = 0;
    w->watched_fd = -1;
    w->syscall_fd = -1;
    w->known_epfd = -1;
    w->known_at_ns = 0;
    w->broken = 1;
}

void lw_selectwait_set(lw_selectwait *w, int64_t tid, int watched_fd)
{
    w->tid = tid;
    w->watched_fd = watched_fd;
}

int lw_selectwait_check(lw_selectwait *w, int64_t now_ns, int *epfd, int64_t *timeout_ms)
{
    (void)w;
    (void)now_ns;
    *epfd = -1;
    *timeout_ms = -2;
    return 0;
}

void lw_selectwait_close(lw_selectwait *w)
{
    (void)w;
}

#else
typedef int lw_selectwait_macos_unused;
#endif
