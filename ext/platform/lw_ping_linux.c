/* lw_ping on Linux: one eventfd, a counter the sampler adds 1 to and the
 * loop reads back to 0. See lw_ping.h. */
#if defined(__linux__)

#define _GNU_SOURCE

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lw_ping.h"

int lw_ping_open(lw_ping *p)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        p->read_fd = p->write_fd = -1;
        return errno;
    }
    p->read_fd = p->write_fd = fd;
    return 0;
}

void lw_ping_close(lw_ping *p)
{
    if (p->read_fd >= 0)
        close(p->read_fd);
    p->read_fd = p->write_fd = -1;
}

int lw_ping_send(const lw_ping *p)
{
    uint64_t one = 1;
    for (;;) {
        if (write(p->write_fd, &one, sizeof one) == (ssize_t)sizeof one)
            return 0;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN ? 0 : errno; /* EAGAIN: the counter is full: pending */
    }
}

int lw_ping_drain(const lw_ping *p)
{
    uint64_t count;
    for (;;) {
        if (read(p->read_fd, &count, sizeof count) == (ssize_t)sizeof count)
            return 1;
        if (errno != EINTR)
            return 0;
    }
}

#else
typedef int lw_ping_linux_unused;
#endif
