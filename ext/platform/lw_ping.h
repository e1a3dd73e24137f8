/*
 * lw_ping: how the loop sampler pings the event loop. A file descriptor the
 * loop watches for reading (asyncio's and uvloop's add_reader alike) and
 * the sampler makes readable; the loop's reader callback drains it. The
 * time from the ping to the callback is how long a socket that became
 * readable then would have waited, and the loop pays nothing between pings.
 *   lw_ping_linux.c  one eventfd (read_fd == write_fd)
 *   lw_ping_macos.c  a pipe (no eventfd there)
 * Both ends are non-blocking and close-on-exec.
 */
#ifndef LW_PING_H
#define LW_PING_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_ping {
    int read_fd;  /* -1: not open */
    int write_fd;
} lw_ping;

/* 0, or an errno value (EMFILE...). */
int lw_ping_open(lw_ping *p);
void lw_ping_close(lw_ping *p);
/* Make the read end readable. 0, or an errno value; a ping already
 * pending (a full pipe, a saturated counter) counts as sent. */
int lw_ping_send(const lw_ping *p);
/* Take what is pending: 1 if a ping was, 0 if none. Never blocks. */
int lw_ping_drain(const lw_ping *p);

#ifdef __cplusplus
}
#endif

#endif
