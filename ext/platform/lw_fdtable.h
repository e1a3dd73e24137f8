/*
 * lw_fdtable: a file-descriptor table of the calling thread's own.
 *
 * While a second thread shares the process's fd table, the kernel takes
 * every fd system call of every thread on its reference-counted path (a
 * shared table's fdget takes a reference): measured, epoll_wait(0) 183 ->
 * 258 ns, and a call_soon chain +2.4 % on asyncio, +8 % on uvloop. The loop
 * sampler needs a few fds and none of the application's, so it leaves:
 *
 *   lw_fdtable_linux.c  close_range(keep + 1, ~0, CLOSE_RANGE_UNSHARE) (or
 *                       unshare(CLONE_FILES)), then every copy but the fds
 *                       kept is closed at once: a copy of an application
 *                       socket in the sampler's table would keep it open
 *                       after the application closes it (its peer would
 *                       never see EOF). A fd of the process opened later
 *                       (the loop's epoll set) is taken with pidfd_getfd: a
 *                       new fd to the same open file. The thread leaves only
 *                       if pidfd_getfd works here (Linux >= 5.6, and not
 *                       refused by a seccomp profile: Docker's default
 *                       refuses it without CAP_SYS_PTRACE), checked before
 *                       leaving; otherwise it keeps sharing the table.
 *   lw_fdtable_macos.c  no way to unshare there: the thread shares the
 *                       table, and an "imported" fd is the fd itself.
 *
 * Closing a copy has no effect on the application's fd (POSIX record locks
 * are owned by a table, and the copies' table owns none; epoll and flock
 * registrations go with the open file, which the application still holds).
 */
#ifndef LW_FDTABLE_H
#define LW_FDTABLE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_fdtable {
    int own;   /* 1: the thread has a table of its own */
    int pidfd; /* own: the process's pidfd (for imports); -1 */
} lw_fdtable;

/* Shared, nothing open (no thread has left yet). */
void lw_fdtable_init(lw_fdtable *t);
/* In the thread: leave the process's table, keeping the nkeep fds of
 * `keep` (same numbers in the thread's table; -1 entries are ignored).
 * 1 if the thread now has a table of its own, 0 if it still shares. */
int lw_fdtable_leave(lw_fdtable *t, const int *keep, int nkeep);
/* A fd usable by this thread for the process's fd `shared_fd` (its number
 * in the table the other threads share): own table: a new fd to the same
 * open file, or -1; shared: shared_fd itself. */
int lw_fdtable_import(lw_fdtable *t, int shared_fd);
/* Release what lw_fdtable_import returned (closes it only if imported). */
void lw_fdtable_drop(lw_fdtable *t, int fd);
/* The thread is done: close what the table holds for imports. */
void lw_fdtable_close(lw_fdtable *t);

#ifdef __cplusplus
}
#endif

#endif
