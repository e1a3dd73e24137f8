/* lw_ping on macOS (and other POSIX systems without eventfd): a pipe; the
 * sampler writes one byte, the loop reads whatever is there. See lw_ping.h. */
#if !defined(__linux__)

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "lw_ping.h"

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return errno;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return errno;
    return 0;
}

int lw_ping_open(lw_ping *p)
{
    int fds[2], err;
    p->read_fd = p->write_fd = -1;
    if (pipe(fds) != 0)
        return errno;
    if ((err = set_flags(fds[0])) != 0 || (err = set_flags(fds[1])) != 0) {
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    p->read_fd = fds[0];
    p->write_fd = fds[1];
    return 0;
}

void lw_ping_close(lw_ping *p)
{
    if (p->read_fd >= 0)
        close(p->read_fd);
    if (p->write_fd >= 0)
        close(p->write_fd);
    p->read_fd = p->write_fd = -1;
}

int lw_ping_send(const lw_ping *p)
{
    char byte = 1;
    for (;;) {
        if (write(p->write_fd, &byte, 1) == 1)
            return 0;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN ? 0 : errno; /* a full pipe: pings are pending */
    }
}

int lw_ping_drain(const lw_ping *p)
{
    char buf[64];
    int got = 0;
    for (;;) {
        ssize_t n = read(p->read_fd, buf, sizeof buf);
        if (n > 0) {
            got = 1;
            if ((size_t)n < sizeof buf)
                return got;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return got;
    }
}

#else
typedef int lw_ping_macos_unused;
#endif
