/* lw_selectwait on Linux: see lw_selectwait.h. */
#if defined(__linux__)

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lw_selectwait.h"

/* How long a check that an epoll fd watches the ping stays good: an fd
 * number can be closed and reused, which the loop's own close would come
 * before (and stop the monitor), so once a second is plenty. */
#define LW_SELECTWAIT_RECHECK_NS 1000000000LL

void lw_selectwait_init(lw_selectwait *w)
{
    w->tid = 0;
    w->watched_fd = -1;
    w->syscall_fd = -1;
    w->known_epfd = -1;
    w->known_at_ns = 0;
    w->broken = 0;
}

void lw_selectwait_close(lw_selectwait *w)
{
    if (w->syscall_fd >= 0)
        close(w->syscall_fd);
    w->syscall_fd = -1;
    w->known_epfd = -1;
}

void lw_selectwait_set(lw_selectwait *w, int64_t tid, int watched_fd)
{
    if (tid == w->tid && watched_fd == w->watched_fd)
        return;
    lw_selectwait_close(w);
    w->tid = tid;
    w->watched_fd = watched_fd;
    w->broken = 0;
}

/* 1: epoll_wait or epoll_pwait, whose 4th argument is the timeout in ms;
 * 2: epoll_pwait2 (a pointer to a timespec there); 0: not an epoll wait. */
static int epoll_wait_kind(long nr)
{
#ifdef SYS_epoll_wait
    if (nr == SYS_epoll_wait)
        return 1;
#endif
#ifdef SYS_epoll_pwait
    if (nr == SYS_epoll_pwait)
        return 1;
#endif
#ifdef SYS_epoll_pwait2
    if (nr == SYS_epoll_pwait2)
        return 2;
#endif
    return 0;
}

/* Whether the thread's epoll fd epfd lists watched_fd as a target: the
 * thread's own fdinfo (/proc/self/fdinfo is the main thread's table, and
 * the reader, the loop sampler, may have a table of its own). */
static int epoll_watches(int64_t tid, int epfd, int watched_fd)
{
    char path[96], buf[4096];
    int fd, found = 0;
    ssize_t n;
    snprintf(path, sizeof path, "/proc/self/task/%lld/fdinfo/%d", (long long)tid, epfd);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    /* One read: an asyncio selector lists one line per watched fd, and the
     * ping is registered early (a short file); a set too big to read whole
     * is checked as far as it goes, and a miss only costs a ping. */
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (char *line = buf; line && *line; ) {
        char *next = strchr(line, '\n');
        if (strncmp(line, "tfd:", 4) == 0) {
            char *end;
            long tfd = strtol(line + 4, &end, 10);
            if (end != line + 4 && tfd == watched_fd) {
                found = 1;
                break;
            }
        }
        line = next ? next + 1 : NULL;
    }
    return found;
}

int lw_selectwait_check(lw_selectwait *w, int64_t now_ns, int *epfd_out, int64_t *timeout_ms)
{
    char buf[256], *end;
    ssize_t n;
    long nr, epfd;
    int kind;
    unsigned long arg;
    if (w->broken || w->tid <= 0 || w->watched_fd < 0)
        return 0;
    if (w->syscall_fd < 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%lld/syscall", (long long)w->tid);
        w->syscall_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (w->syscall_fd < 0) {
            w->broken = 1; /* no such file (kernel option) or not allowed */
            return 0;
        }
    }
    n = pread(w->syscall_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            w->broken = 1; /* the thread is gone */
        return 0;
    }
    buf[n] = '\0';
    /* "running", or "-1 sp pc" (blocked outside a system call), or
     * "nr arg1 arg2 ... sp pc", arguments in hex. */
    nr = strtol(buf, &end, 10);
    if (end == buf || (kind = epoll_wait_kind(nr)) == 0)
        return 0;
    epfd = strtol(end, &end, 16);
    if (epfd < 0 || epfd > 0x7fffffff)
        return 0;
    *timeout_ms = -2;
    if (kind == 1) {
        char *p = end;
        int i;
        for (i = 0; i < 3 && p; i++) { /* events, maxevents, timeout */
            arg = strtoul(p, &end, 16);
            p = end != p ? end : NULL;
        }
        /* The timeout is a C int: 0xffffffff is -1 (no timeout). */
        if (p)
            *timeout_ms = (int64_t)(int)(unsigned int)arg;
    }
    if (epfd != w->known_epfd || now_ns - w->known_at_ns > LW_SELECTWAIT_RECHECK_NS) {
        if (!epoll_watches(w->tid, (int)epfd, w->watched_fd)) {
            w->known_epfd = -1;
            return 0;
        }
        w->known_epfd = (int)epfd;
        w->known_at_ns = now_ns;
    }
    *epfd_out = (int)epfd;
    return 1;
}

#else
typedef int lw_selectwait_linux_unused;
#endif
