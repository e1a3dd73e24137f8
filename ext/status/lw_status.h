/*
 * lw_status: the status server, a native thread that answers on a listening
 * Unix socket without ever needing the Python GIL, so a process whose event
 * loop is blocked (in Python code, or in native code that holds the GIL)
 * still tells what is going on.
 *
 * Protocol: a client connects, reads one JSON document, and is done; what it
 * sends is never read. The document is
 *
 *   {"served_by": "native", "published_age_s": A, "live": {...},  <rest>
 *
 * where <rest> is the latest document the Python side published with
 * lw_status_publish (minus its opening brace) and "live" holds what the
 * samplers of the registered loops know right now (lw_loop_read_live):
 * heartbeat age, the stall going on and how long so far, and, when no
 * Python code can run, the loop thread's stack read as CPython's
 * faulthandler watchdog reads it.
 *
 * Freshness: on each batch of connections the server asks the Python side
 * for a new publication (lw_status_wait_request wakes, Python builds and
 * publishes) and waits for it at most `fresh_wait_ns`; past that it serves
 * the last one, with its age. So a Python-level stall costs a client a few
 * milliseconds (the publisher gets the GIL at the next switch interval) and
 * a native one at most fresh_wait_ns.
 *
 * Watchdog: the same thread writes one line to `stall_fd` (stderr) for a
 * stall that the Python reporter has not acknowledged (lw_status_ack_stall)
 * `stall_grace_ns` after it passed the threshold: Python could not run, so
 * this is the only report made while the stall goes on.
 *
 * Threads: the server thread never calls into Python; the stack dumper it
 * is given (lw_status_set_stack_dumper) is called only when the Python
 * side has not answered (no Python code runs), with the thread state the
 * loop thread registered. Everything else may be called from any thread.
 */
#ifndef LW_STATUS_H
#define LW_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "lw_loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_status lw_status;

/* Writes a thread's stack as text to fd; thread_state is opaque here. */
typedef void (*lw_status_stack_fn)(int fd, void *thread_state);

/* listen_fd: a bound, listening Unix stream socket, or -1 for a watchdog
 * only (no socket served: the thread writes the stall lines alone);
 * scratch_fd: a regular file (already unlinked) for stack dumps, or -1.
 * Both are owned by the server from here on (closed by lw_status_free).
 * NULL when out of memory. */
lw_status *lw_status_new(int listen_fd, int scratch_fd, int64_t fresh_wait_ns);
/* Stops (joins) the server thread first; closes the descriptors. */
void lw_status_free(lw_status *s);

/* Start / stop (join) the server thread. 0 or an errno value. */
int lw_status_start(lw_status *s);
void lw_status_stop(lw_status *s);

/* In a forked child: the server thread was not copied; the listening socket
 * is the parent's. Close the descriptors (never unlink: the path is the
 * parent's) and leave the server stopped for good. */
void lw_status_after_fork_child(lw_status *s);

void lw_status_set_stack_dumper(lw_status *s, lw_status_stack_fn fn);
/* fd < 0 disables the watchdog lines. */
void lw_status_set_stall_lines(lw_status *s, int fd, int64_t grace_ns, int pid);

/* The Python side: wait until a client asks for a fresh document (1), the
 * timeout passes (0; timeout_ns < 0 waits without limit) or the server
 * stops (-1). Then build it and hand it over (copied): 0, EINVAL (not a
 * JSON object), ENOMEM. */
int lw_status_wait_request(lw_status *s, int64_t timeout_ns);
int lw_status_publish(lw_status *s, const char *json, size_t len);

/* Loops whose live figures are served. `loop` must stay valid until it is
 * removed; `name` and `line_prefix` are copied (255 bytes kept, escaped when
 * written). The watchdog's line starts with line_prefix (loopwatch run's
 * "loopwatch[pid P loop N thread T]") and then reads like the Python
 * reporter's; NULL or "" gives "loopwatch: stall #N on <name> (pid P)".
 * 0, ENOMEM, EEXIST. */
int lw_status_add_loop(lw_status *s, int64_t id, const lw_loop *loop, void *thread_state,
                       const char *name, const char *line_prefix);
void lw_status_remove_loop(lw_status *s, int64_t id);
/* Session registries whose counts and stuck sessions are served from native
 * memory when no Python code can run (the document's "live" part): `table`
 * is read through `write` (the session table's lw_sessions_write_live,
 * handed over as a pointer so that this file needs none of its code), which
 * must stay valid until the registry is removed. 0, ENOMEM, EEXIST. */
typedef size_t (*lw_status_sessions_fn)(void *table, char *buf, size_t cap, size_t max_stuck,
                                        double now);
int lw_status_add_sessions(lw_status *s, int64_t id, void *table, lw_status_sessions_fn write);
void lw_status_remove_sessions(lw_status *s, int64_t id);

/* The Python reporter has reported this stall (no watchdog line needed). */
void lw_status_ack_stall(lw_status *s, int64_t id, int64_t stall_id);

/* Counters: documents written, watchdog lines written. */
int64_t lw_status_served(const lw_status *s);
int64_t lw_status_stall_lines(const lw_status *s);

#ifdef __cplusplus
}
#endif

#endif
