/* lw_fdtable where a thread cannot have a table of its own (macOS, and any
 * system without Linux's unshare): the thread shares the process's table.
 * See lw_fdtable.h. */
#if !defined(__linux__)

#include "lw_fdtable.h"

void lw_fdtable_init(lw_fdtable *t)
{
    t->own = 0;
    t->pidfd = -1;
}

int lw_fdtable_leave(lw_fdtable *t, const int *keep, int nkeep)
{
    (void)keep;
    (void)nkeep;
    t->own = 0;
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

#else
typedef int lw_fdtable_macos_unused;
#endif
