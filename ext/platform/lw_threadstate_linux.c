/* A thread's scheduler state on Linux: field 3 of /proc/self/task/<tid>/stat
 * (after the command name in parentheses, which may itself hold spaces and
 * parentheses: the last ')' ends it). See lw_threadcpu.h. */
#if defined(__linux__)

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lw_threadcpu.h"

int lw_threadcpu_run_state(const lw_threadcpu *t, char *out_state)
{
    char path[64], buf[512], *close_paren;
    ssize_t n;
    int fd, err;
    if (!t->valid || t->tid <= 0)
        return EINVAL;
    snprintf(path, sizeof path, "/proc/self/task/%lld/stat", (long long)t->tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    n = read(fd, buf, sizeof buf - 1);
    err = errno;
    close(fd);
    if (n <= 0)
        return n < 0 ? err : EIO;
    buf[n] = '\0';
    close_paren = strrchr(buf, ')');
    if (!close_paren || close_paren[1] != ' ' || close_paren[2] == '\0')
        return EIO;
    *out_state = close_paren[2];
    return 0;
}

#elif !defined(__APPLE__)

#include <errno.h>

#include "lw_threadcpu.h"

int lw_threadcpu_run_state(const lw_threadcpu *t, char *out_state)
{
    (void)t;
    (void)out_state;
    return ENOTSUP;
}

#else
typedef int lw_threadstate_linux_unused;
#endif
