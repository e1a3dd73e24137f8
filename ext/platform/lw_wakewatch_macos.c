/* lw_wakewatch where there is no io_uring (macOS, and any system without
 * Linux's): never available; the caller polls. See lw_wakewatch.h. */
#if !defined(__linux__)

#include <errno.h>

#include "lw_wakewatch.h"

void lw_wakewatch_init(lw_wakewatch *w)
{
    w->ring = -1;
    w->armed_fd = w->armed_other = -1;
}

int lw_wakewatch_open(lw_wakewatch *w)
{
    w->ring = -1;
    return ENOSYS;
}

void lw_wakewatch_flush(lw_wakewatch *w)
{
    (void)w;
}

int lw_wakewatch_wait(lw_wakewatch *w, int fd, int other, int timeout_ms)
{
    (void)w;
    (void)fd;
    (void)other;
    (void)timeout_ms;
    return -1;
}

void lw_wakewatch_close(lw_wakewatch *w)
{
    w->ring = -1;
}

void lw_wakewatch_forget(lw_wakewatch *w, int close_fd)
{
    (void)close_fd;
    w->ring = -1;
}

#else
typedef int lw_wakewatch_macos_unused;
#endif
