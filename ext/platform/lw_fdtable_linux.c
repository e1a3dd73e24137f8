/* lw_fdtable on Linux: see lw_fdtable.h. */
#if defined(__linux__)

#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lw_fdtable.h"

/* Build hosts with old headers (manylinux images) lack these numbers; the
 * system calls added since Linux 5.1 have the same number on these
 * architectures. Elsewhere without them the thread keeps sharing. */
#if !defined(SYS_pidfd_open) && (defined(__x86_64__) || defined(__i386__) \
    || defined(__aarch64__) || defined(__arm__) || defined(__riscv) \
    || defined(__powerpc__) || defined(__s390__))
#define SYS_pidfd_open 434
#define SYS_close_range 436
#define SYS_pidfd_getfd 438
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

void lw_fdtable_init(lw_fdtable *t)
{
    t->own = 0;
    t->pidfd = -1;
}

#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)

static int pidfd_self(void)
{
    return (int)syscall(SYS_pidfd_open, (long)getpid(), 0L);
}

static int getfd(int pidfd, int fd)
{
    return (int)syscall(SYS_pidfd_getfd, (long)pidfd, (long)fd, 0L);
}

static int is_kept(int fd, const int *keep, int nkeep)
{
    int i;
    for (i = 0; i < nkeep; i++)
        if (keep[i] == fd)
            return 1;
    return 0;
}

/* Close fds lo..hi (inclusive) of this thread's table. */
static void close_span(int lo, int hi)
{
    int fd;
    if (lo > hi)
        return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0U) == 0)
        return;
#endif
    for (fd = lo; fd <= hi; fd++)
        (void)close(fd);
}

/* Close every fd above `above` in this thread's (new) table: the table's
 * own listing, else every number up to the fd limit. */
static void close_above(int above)
{
    DIR *dir;
    struct rlimit lim;
    long top = 65536, fd;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)above + 1, ~0U, 0U) == 0)
        return;
#endif
    dir = opendir("/proc/thread-self/fd");
    if (dir) {
        int own = dirfd(dir);
        struct dirent *e;
        int *fds = NULL, n = 0, cap = 0, i;
        while ((e = readdir(dir)) != NULL) {
            char *end;
            long v = strtol(e->d_name, &end, 10);
            if (end == e->d_name || *end || v <= above || v == own)
                continue;
            if (n == cap) {
                int *more = realloc(fds, (size_t)(cap ? cap * 2 : 64) * sizeof *fds);
                if (!more)
                    break;
                fds = more;
                cap = cap ? cap * 2 : 64;
            }
            fds[n++] = (int)v;
        }
        closedir(dir);
        for (i = 0; i < n; i++)
            (void)close(fds[i]);
        free(fds);
        if (e == NULL)
            return;
    }
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY
        && lim.rlim_cur < (rlim_t)top)
        top = (long)lim.rlim_cur;
    for (fd = above + 1; fd < top; fd++)
        (void)close((int)fd);
}

int lw_fdtable_leave(lw_fdtable *t, const int *keep, int nkeep)
{
    int pidfd, probe = -1, top = -1, i, lo, left = 0;
    lw_fdtable_init(t);
    for (i = 0; i < nkeep; i++)
        if (keep[i] > top)
            top = keep[i];
    /* Imports must work before leaving: a table of its own without them
     * could not follow the loop's epoll set (idle sleeps). Checked on a
     * kept fd, while the table is still shared, and undone. */
    pidfd = pidfd_self();
    if (pidfd < 0)
        return 0;
    if (top >= 0)
        probe = getfd(pidfd, top);
    (void)close(pidfd);
    if (probe < 0)
        return 0;
    (void)close(probe);

#ifdef SYS_close_range
    /* One step: a new table holding copies of fds 0..top only. */
    if (syscall(SYS_close_range, (unsigned)top + 1, ~0U, CLOSE_RANGE_UNSHARE) == 0)
        left = 1;
#endif
    if (!left) {
        if (unshare(CLONE_FILES) != 0)
            return 0;
        left = 1;
        close_above(top);
    }
    /* The copies below the top kept fd, but the kept ones. */
    lo = 0;
    for (i = 0; i <= top; i++) {
        if (is_kept(i, keep, nkeep)) {
            close_span(lo, i - 1);
            lo = i + 1;
        }
    }
    t->own = 1;
    t->pidfd = pidfd_self(); /* -1: no imports (no idle sleeps) */
    return 1;
}

int lw_fdtable_import(lw_fdtable *t, int shared_fd)
{
    if (!t->own)
        return shared_fd;
    if (t->pidfd < 0 || shared_fd < 0)
        return -1;
    return getfd(t->pidfd, shared_fd);
}

void lw_fdtable_drop(lw_fdtable *t, int fd)
{
    if (t->own && fd >= 0)
        (void)close(fd);
}

void lw_fdtable_close(lw_fdtable *t)
{
    if (t->own && t->pidfd >= 0)
        (void)close(t->pidfd);
    t->pidfd = -1;
}

#else /* no pidfd system calls known here: always shared */

int lw_fdtable_leave(lw_fdtable *t, const int *keep, int nkeep)
{
    (void)keep;
    (void)nkeep;
    lw_fdtable_init(t);
    return 0;
}

int lw_fdtable_import(lw_fdtable *t, int shared_fd)
{
    (void)t;
    return shared_fd;
}

void lw_fdtable_drop(lw_fdtable *t, int fd)
{
    (void)t;
    (void)fd;
}

void lw_fdtable_close(lw_fdtable *t)
{
    (void)t;
}

#endif

#else
typedef int lw_fdtable_linux_unused;
#endif
